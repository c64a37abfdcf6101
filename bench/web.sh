#!/usr/bin/env bash
# Part (11) of make bench: pg_clip web, the time of a label action and of an identify request
# through HTTP (pg_clip-web on this machine, one keep-alive client) against the same SQL call
# timed inside the server: what the web layer adds. The demo model, examples/web.sql's data.
# Expects the project cluster's environment; writes "web ..." lines to $1 and prints a table.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
N="${BENCH_WEB_REQUESTS:-200}"
export PGDATABASE=pg_clip_bench_web PG_CLIP_ROOT="$ROOT"
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
psql -X -q -v ON_ERROR_STOP=1 -f "$ROOT/examples/web.sql"
psql -X -q -c "ALTER DATABASE pg_clip_bench_web SET pg_clip.refit_every = 0"
cargo build --release -q -p pg_clip_web
mkdir -p "$ROOT/.run/bench-web"
. "$ROOT/web/tests/start-server.sh"
start_web "$ROOT/.run/bench-web"
python3 - "$url" "$N" "$OUT" <<'PY'
import base64, http.client, json, statistics, subprocess, sys, time, urllib.parse
url, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection(urllib.parse.urlparse(url).netloc)

def call(method, path, body=None, ctype="application/json"):
    t0 = time.perf_counter()
    conn.request(method, path, body=body, headers={"content-type": ctype} if body is not None else {})
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200, (path, r.status, data[:300])
    return (time.perf_counter() - t0) * 1000, data

def sql_ms(query, repeat):
    """The median of `repeat` runs of `query`, timed inside the server (clock_timestamp)."""
    script = "\n".join(["SELECT extract(epoch FROM clock_timestamp()) * 1000 AS t0 \\gset",
                        f"SELECT count(*) FROM ({query}) x \\gset",
                        "SELECT extract(epoch FROM clock_timestamp()) * 1000 - :t0;"] * repeat)
    r = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"], input=script, text=True,
                       capture_output=True, check=True)
    return statistics.median(float(x) for x in r.stdout.split())

def stats(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[int(0.95 * (len(xs) - 1))]

lines = []
base = "/api/v1/collections/demo/classifiers/bench"
_, queue = call("GET", f"{base}/next?n={n}&mode=random")
ids = [q["image_id"] for q in json.loads(queue)][:n]
label = [call("POST", f"{base}/labels", json.dumps({"image_ids": [i], "label": "keep" if i % 2 else "trash",
                                                     "labelled_by": "bench"}))[0] for i in ids]
nxt = [call("GET", f"{base}/next?n=20")[0] for _ in range(50)]
frame = subprocess.run(["psql", "-X", "-qAt", "-c", "SELECT encode(image, 'base64') FROM demo_frames ORDER BY id LIMIT 1"],
                       capture_output=True, text=True, check=True).stdout
frame = base64.b64decode(frame)
ident = [call("POST", "/api/v1/identify?set=demo_cards", frame, "image/jpeg")[0] for _ in range(n)]
thumbs = [call("GET", f"/images/demo/{i}/thumbnail")[0] for i in ids[:50]]
sql_label = sql_ms("SELECT * FROM clip.label_many('demo', 'bench_sql', ARRAY[(random() * 239 + 1)::bigint], 'keep', 'bench')", 50)
sql_next = sql_ms("SELECT * FROM clip.next_to_label('demo', 'bench', 20)", 20)
sql_ident = sql_ms("SELECT * FROM clip.identify((SELECT image FROM demo_frames ORDER BY id LIMIT 1), 'demo_cards')", 50)
# (what the server runs for a thumbnail: the image read for its hash, the one refresh stored)
sql_thumb = sql_ms("""WITH i AS (SELECT clip.image('demo', (random() * 239 + 1)::bigint) AS b)
    SELECT encode(sha256(i.b), 'hex'), coalesce((SELECT t.jpeg FROM clip.thumbnail t WHERE t.collection = 'demo'
           AND t.content_sha256 = sha256(i.b) AND t.size = 256), clip.make_thumbnail(i.b, 256)) FROM i""", 50)
for what, http_ms, sql in (("label", label, sql_label), ("next20", nxt, sql_next), ("identify", ident, sql_ident),
                           ("thumbnail", thumbs, sql_thumb)):
    med, p95 = stats(http_ms)
    lines.append(f"web {what} requests={len(http_ms)} http_median_ms={med:.2f} http_p95_ms={p95:.2f} sql_median_ms={sql:.2f}")
with open(out, "a") as f:
    for l in lines:
        print(l); f.write(l + "\n")
print("\n| request | HTTP median (ms) | HTTP p95 (ms) | the SQL call alone, median (ms) |\n|---|---:|---:|---:|")
names = {"label": "label one image (clip.label_many)", "next20": "the next 20 to label (clip.next_to_label)",
         "identify": "identify a camera frame (clip.identify)", "thumbnail": "a 256 px thumbnail (stored by refresh)"}
for l in lines:
    kv = dict(x.split("=") for x in l.split()[2:])
    print(f"| {names[l.split()[1]]} | {kv['http_median_ms']} | {kv['http_p95_ms']} | {kv['sql_median_ms']} |")
PY
