#!/usr/bin/env python3
"""Fetch every file of a CLIP model repository from Hugging Face, in the open_clip / immich layout:

    models/fetch_model.py [ViT-B-32__openai] [dest-dir] [--repo-owner immich-app]

then, as a superuser:  SELECT clip.register_model('vit-b-32', '<dest-dir>');

The file list comes from the hub's own listing (/api/models/<repo>/tree/main?recursive=true), so
towers whose weights live in external data files (over 2 GiB: ViT-H-14, ViT-g-14, SigLIP
so400m, ...) arrive whole. Each file is checked against the listing: large (LFS) files by their
SHA-256, small ones by their git blob hash. An interrupted download resumes where it stopped
(the part already fetched is kept as <file>.part); files already present and correct are not
fetched again. HF_ENDPOINT replaces https://huggingface.co (a mirror); HF_TOKEN is sent when set.
Only the Python standard library is needed.
"""
import argparse
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

CHUNK = 1 << 20


def request(url, headers=None):
    h = dict(headers or {})
    if os.environ.get("HF_TOKEN"):
        h["Authorization"] = "Bearer " + os.environ["HF_TOKEN"]
    return urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=60)


def listing(endpoint, repo):
    """Every file of the repository: path, size, and the digest to check it by."""
    url = f"{endpoint}/api/models/{repo}/tree/main?recursive=true"
    files = []
    while url:
        with request(url) as r:
            files += [e for e in json.load(r) if e.get("type") == "file"]
            # the hub pages long listings with a Link: <...>; rel="next" header
            nxt = [p.split(";")[0].strip(" <>") for p in r.headers.get("Link", "").split(",") if 'rel="next"' in p]
            url = nxt[0] if nxt else None
    for f in files:
        if not safe(f["path"]):
            sys.exit(f"fetch_model.py: the listing names a path outside the folder: {f['path']!r}")
    return files


def safe(path):
    parts = path.split("/")
    return not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def digest(path, entry):
    """True when the file at `path` is the one the listing describes."""
    if not os.path.isfile(path) or os.path.getsize(path) != entry["size"]:
        return False
    if entry.get("lfs"):
        h = hashlib.sha256()
        want = entry["lfs"]["oid"]
    else:
        h = hashlib.sha1(b"blob %d\0" % entry["size"])  # git's blob id
        want = entry["oid"]
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest() == want


def fetch(endpoint, repo, entry, dest):
    target = os.path.join(dest, entry["path"])
    if digest(target, entry):
        print(f"ok        {entry['path']}")
        return
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    part = target + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have > entry["size"]:
        os.remove(part)
        have = 0
    url = f"{endpoint}/{repo}/resolve/main/{urllib.parse.quote(entry['path'])}"
    if have < entry["size"]:
        print(f"{'resuming' if have else 'fetching'}  {entry['path']} ({entry['size']} bytes{f', from {have}' if have else ''})")
        try:
            r = request(url, {"Range": f"bytes={have}-"} if have else None)
        except urllib.error.HTTPError as e:
            sys.exit(f"fetch_model.py: {url}: {e}")
        with r, open(part, "ab" if have and r.status == 206 else "wb") as out:
            for block in iter(lambda: r.read(CHUNK), b""):
                out.write(block)
    if not digest(part, entry):
        os.remove(part)
        sys.exit(f"fetch_model.py: {entry['path']} does not match the repository's checksum "
                 f"(removed; run again to fetch it anew)")
    os.replace(part, target)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", default="ViT-B-32__openai")
    ap.add_argument("dest", nargs="?")
    ap.add_argument("--repo-owner", default="immich-app")
    a = ap.parse_args()
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    repo = f"{a.repo_owner}/{a.name}"
    dest = a.dest or os.path.join(os.path.dirname(os.path.abspath(__file__)), a.name)
    try:
        files = listing(endpoint, repo)
    except (urllib.error.URLError, OSError) as e:
        sys.exit(f"fetch_model.py: cannot list {endpoint}/{repo} ({e}); no internet access here?\n"
                 "  Copy an exported model folder (every file of it) to this machine instead.")
    for entry in files:
        fetch(endpoint, repo, entry, dest)
    name = a.name.lower().replace("_", "-")
    while "--" in name:
        name = name.replace("--", "-")
    print(f"done: {len(files)} files verified in {dest}\n"
          f"  SELECT clip.register_model('{name}', '{os.path.abspath(dest)}');")


if __name__ == "__main__":
    main()
