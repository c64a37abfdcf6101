#!/usr/bin/env python3
"""models/fetch_model.py against a local server that answers as the Hugging Face hub does
(the tree listing, paged with Link headers, and /resolve/ with Range requests), serving a
model folder with external data (.run/fixtures/external):

    test_fetch.py <fixtures-dir>

Checks: every file arrives and is identical; files present and correct are not fetched again;
an interrupted download resumes from where it stopped; a file that does not match the listing's
checksum is an error naming it; a listing path outside the folder is refused.
"""
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FETCH = os.path.join(ROOT, "models", "fetch_model.py")
LFS_OVER = 10_000  # files above this size are listed as LFS files (sha256), the rest by git blob id


def entry(base, rel):
    data = open(os.path.join(base, rel), "rb").read()
    e = {"type": "file", "path": rel, "size": len(data),
         "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
    if len(data) > LFS_OVER:
        e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return e


class Hub(http.server.BaseHTTPRequestHandler):
    base = None
    extra = []          # extra listing entries
    corrupt = None      # path served with one byte changed
    served = {}         # path -> bytes sent

    def log_message(self, *a):
        pass

    def do_GET(self):
        prefix = "/api/models/test/model/tree/main"
        if self.path.startswith(prefix):
            files = sorted(os.path.relpath(os.path.join(d, f), self.base)
                           for d, _, fs in os.walk(self.base) for f in fs)
            listing = [{"type": "directory", "path": "visual"}] + [entry(self.base, f) for f in files] + self.extra
            page = 1 if "page=2" not in self.path else 2
            half = len(listing) // 2
            body = json.dumps(listing[:half] if page == 1 else listing[half:]).encode()
            self.send_response(200)
            if page == 1:
                self.send_header("Link", f'<http://127.0.0.1:{self.server.server_port}{prefix}?recursive=true&page=2>; rel="next"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        rel = self.path.split("/resolve/main/", 1)[1]
        data = bytearray(open(os.path.join(self.base, rel), "rb").read())
        if rel == self.corrupt:
            data[len(data) // 2] ^= 0xFF
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])
        Hub.served[rel] = Hub.served.get(rel, 0) + len(data) - start


def fetch(dest, port):
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}")
    return subprocess.run([sys.executable, FETCH, "model", dest, "--repo-owner", "test"], env=env,
                          capture_output=True, text=True)


def same_tree(a, b):
    for d, _, fs in os.walk(a):
        for f in fs:
            p = os.path.join(d, f)
            q = os.path.join(b, os.path.relpath(p, a))
            assert open(p, "rb").read() == open(q, "rb").read(), f"{q} differs"


def main():
    Hub.base = os.path.join(sys.argv[1], "external")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    tmp = tempfile.mkdtemp()
    try:
        dest = os.path.join(tmp, "model")
        r = fetch(dest, port)
        assert r.returncode == 0, r.stdout + r.stderr
        same_tree(Hub.base, dest)
        n = sum(len(fs) for _, _, fs in os.walk(Hub.base))
        assert f"done: {n} files verified" in r.stdout, r.stdout

        # present and correct: nothing fetched again
        Hub.served.clear()
        r = fetch(dest, port)
        assert r.returncode == 0 and not Hub.served, Hub.served

        # interrupted: the part fetched stays, the rest is asked for with a Range
        big = "visual/model.onnx.data"
        target = os.path.join(dest, big)
        size = os.path.getsize(target)
        with open(target, "rb") as f:
            head = f.read(size // 3)
        os.remove(target)
        open(target + ".part", "wb").write(head)
        Hub.served.clear()
        r = fetch(dest, port)
        assert r.returncode == 0, r.stdout + r.stderr
        assert Hub.served == {big: size - len(head)}, Hub.served
        assert "resuming  visual/model.onnx.data" in r.stdout, r.stdout
        same_tree(Hub.base, dest)

        # a download that does not match its checksum is refused and named
        os.remove(target)
        Hub.corrupt = big
        r = fetch(dest, port)
        assert r.returncode != 0 and "visual/model.onnx.data does not match" in r.stderr, r.stderr
        assert not os.path.exists(target) and not os.path.exists(target + ".part")
        Hub.corrupt = None

        # a listing that names a path outside the folder
        Hub.extra = [{"type": "file", "path": "../escape", "size": 1, "oid": "0"}]
        r = fetch(dest, port)
        assert r.returncode != 0 and "outside the folder" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(tmp, "escape"))
    finally:
        server.shutdown()
        shutil.rmtree(tmp)
    print("fetch_model.py: every file, no refetch, resume, checksum, paths: ok")


if __name__ == "__main__":
    main()
