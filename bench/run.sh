#!/usr/bin/env bash
# make bench: ViT-B/32-sized random CLIP on the same photos, three ways, one run:
#   (1) ONNX Runtime session alone on ready tensors (pg_clip's Rust session), batch 1 and 32
#   (2) clip.embed_images from JPEG bytes, end to end through SQL
#   (3) the Python reference pipeline (PIL + numpy + onnxruntime)
#   (4) CALL clip.refresh on the same photos as a collection; no-change refresh; trigger cost
#   (5) vocabulary scoring over 45,000 stored embeddings (bench/vocab.sh)
#   (6) identification against 1,000 / 10,000 / 100,000 references (bench/identify.sh)
#   (7) classifier, predictions and k-means over 45,000 embeddings, beside scikit-learn (bench/learn.sh)
#   (2b) clip.embed_images with a fixed batch of 1 (immich's exports) vs a symbolic batch (bench/batch1.sh)
#   (8) what the shared-server safety costs: source-table triggers, identify and views under row
#       security (bench/security.sh)
#   (9) learning curve with the demo model: held-out accuracy against labels, active learning
#       against random picks, five seeds (bench/learning_curve.py; table and PNG in .run/bench)
#   (10) the shared inference service against a model per session: memory per connection, first
#       call, concurrent clip.identify callers, refresh (bench/service.sh)
#   (11) pg_clip web: a label action, the labelling queue, an identify request and a thumbnail
#       through HTTP against the same SQL call alone (bench/web.sh)
#   (12) projection heads: training on 150 look-alike references under three models, identify
#       with and without a head at 10,000 references (bench/projection.sh)
# Environment: BENCH_IMAGES (default 200), BENCH_THREADS (default: all cores), BENCH_BATCH (32),
# BENCH_PARTS (default "images batch1 vocab identify learn security curve service web projection":
# (1)-(4) are "images", (2b) "batch1", (5) "vocab", (6) "identify", (7) "learn", (8) "security",
# (9) "curve", (10) "service", (11) "web", (12) "projection").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
N="${BENCH_IMAGES:-200}"
THREADS="${BENCH_THREADS:-$(nproc)}"
BATCH="${BENCH_BATCH:-32}"
PARTS="${BENCH_PARTS:-images batch1 vocab identify learn security curve service web projection}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
ORT_LIB="$ROOT/.deps/onnxruntime/libonnxruntime.so.1.32.0"
OUT="$ROOT/.run/bench"; mkdir -p "$OUT"; : > "$OUT/results.txt"
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# (the Python tools are in .venv, made by scripts/setup.sh); the CLIP BPE merges from the open_clip wheel
BPE="$ROOT/.deps/bpe_simple_vocab_16e6.txt.gz"
if [ ! -f "$BPE" ]; then
    .venv/bin/pip download -q --no-deps open_clip_torch==3.3.0 -d "$ROOT/.deps/wheels"
    unzip -q -o -j "$ROOT"/.deps/wheels/open_clip_torch-3.3.0-*.whl open_clip/bpe_simple_vocab_16e6.txt.gz -d "$ROOT/.deps"
fi
if [ ! -f models/vit-b-32/visual/model.onnx ]; then
    say "generating the ViT-B/32-sized random model (models/vit-b-32, not committed)"
    .venv/bin/python models/gen_clip.py vit-b-32 models/vit-b-32 --seed 0 --bpe "$BPE"
fi
./scripts/cluster.sh start
eval "$(./scripts/cluster.sh env)"
trap './scripts/cluster.sh stop' EXIT

if has images; then
.venv/bin/python bench/make_photos.py bench/data/photos "$N"
MP=$(.venv/bin/python -c "
import os,sys; from PIL import Image
d='bench/data/photos'; fs=sorted(os.listdir(d))[:$N]
print('%.1f' % (sum(Image.open(os.path.join(d,f)).size[0]*Image.open(os.path.join(d,f)).size[1] for f in fs)/len(fs)/1e6))")

say "(1) session alone, batch 1 and $BATCH, $THREADS threads"
cargo build -q --release -p pg_clip_core --example bench_session
B=target/release/examples/bench_session
$B models/vit-b-32 "$ORT_LIB" "$THREADS" 1 32 | tee -a "$OUT/results.txt"
$B models/vit-b-32 "$ORT_LIB" "$THREADS" "$BATCH" "$N" | tee -a "$OUT/results.txt"

say "(2) clip.embed_images through SQL"
export PGDATABASE=pg_clip_bench
./scripts/cluster.sh recreate-db "$PGDATABASE"
psql -X -q -v ON_ERROR_STOP=1 -v dir="$ROOT/bench/data/photos" -v n="$N" 2>&1 <<SQL | sed -n 's/.*NOTICE:  //p' | tee -a "$OUT/results.txt"
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
SELECT clip.register_model('vit-b-32', 'vit-b-32') \gset
DROP TABLE IF EXISTS bench_photos;
CREATE TABLE bench_photos AS
SELECT row_number() OVER (ORDER BY f) AS id, pg_read_binary_file(:'dir' || '/' || f) AS img
FROM pg_ls_dir(:'dir') AS f ORDER BY f LIMIT :n;
SET pg_clip.intra_op_threads = $THREADS;
SET pg_clip.batch_size = $BATCH;
SET pg_clip.device = 'cpu';
SELECT vector_dims(clip.embed_image(img, 'vit-b-32')) FROM bench_photos LIMIT 1 \gset
RESET client_min_messages;
DO \$\$
DECLARE t0 timestamptz; n int; r vector[]; lo int := 0;
BEGIN
    SELECT count(*) INTO n FROM bench_photos;
    t0 := clock_timestamp();
    -- arrays of 8 batches at a time: one array of thousands of photos would need gigabytes
    WHILE lo < n LOOP
        r := clip.embed_images((SELECT array_agg(img ORDER BY id) FROM bench_photos
                                WHERE id > lo AND id <= lo + 8 * $BATCH), 'vit-b-32');
        lo := lo + 8 * $BATCH;
    END LOOP;
    RAISE NOTICE 'sql batch=$BATCH images=% seconds=% images_per_s=%', n,
        round(extract(epoch FROM clock_timestamp() - t0)::numeric, 3),
        round((n / extract(epoch FROM clock_timestamp() - t0))::numeric, 2);
END \$\$;
DROP TABLE bench_photos;
SQL

say "(4) CALL clip.refresh on a collection of the same photos; no-change refresh of 45,000 rows; trigger cost"
psql -X -q -v ON_ERROR_STOP=1 -v dir="$ROOT/bench/data/photos" -v n="$N" -v small="$ROOT/tests/images/edge/cat.webp" 2>&1 <<SQL | sed -n 's/.*NOTICE:  //p' | grep -E '^(refresh|noop|trigger) ' | tee -a "$OUT/results.txt"
SET client_min_messages = warning;
SET pg_clip.intra_op_threads = $THREADS;
SET pg_clip.batch_size = $BATCH;
SET pg_clip.device = 'cpu';
SELECT clip.drop_collection(name) FROM clip.collection WHERE name IN ('bench', 'big');
DROP TABLE IF EXISTS bench_coll, big, trig_with, trig_without;
CREATE TABLE bench_coll (id bigint PRIMARY KEY, img bytea);
INSERT INTO bench_coll SELECT row_number() OVER (ORDER BY f), pg_read_binary_file(:'dir' || '/' || f)
FROM (SELECT f FROM pg_ls_dir(:'dir') AS f ORDER BY f LIMIT :n) s;
SELECT clip.add_collection('bench', 'bench_coll', 'id', 'img', 'vit-b-32');
-- load the sessions and run the visual one first, as (2) did with its warm-up call
SELECT vector_dims(clip.embed_image(img, 'vit-b-32')) FROM bench_coll LIMIT 1 \gset
CALL clip.refresh('bench');
SELECT clip.register_model('tiny', 'tiny-clip') \gset
-- 45,000 rows sharing one small image (bytes are not what a no-change refresh reads)
CREATE TABLE big (id bigint PRIMARY KEY, img bytea);
INSERT INTO big SELECT g, pg_read_binary_file(:'small') FROM generate_series(1, 45000) g;
SELECT clip.add_collection('big', 'big', 'id', 'img', 'tiny');
-- seed the embeddings in one statement (one real embedding, copied): a no-change refresh reads
-- only the bookkeeping, and embedding 45,000 rows first would take minutes
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT 'big', 'tiny', b.id, m.stamp, sha256(b.img), e.v
FROM big b, clip.model m, (SELECT clip.embed_image(pg_read_binary_file(:'small'), 'tiny') AS v) e
WHERE m.name = 'tiny';
CREATE TABLE trig_with (id bigint PRIMARY KEY, img bytea);
CREATE TABLE trig_without (id bigint PRIMARY KEY, img bytea);
SELECT clip.add_collection('trig', 'trig_with', 'id', 'img', 'tiny');
RESET client_min_messages;
DO \$\$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM clip.refresh_progress WHERE collection = 'bench';
    RAISE NOTICE 'refresh batch=$BATCH images=% seconds=% images_per_s=%', r.done,
        round(extract(epoch FROM r.finished_at - r.started_at)::numeric, 3), r.images_per_s;
END \$\$;
SQL
# the no-change refresh and the trigger cost are timed by psql, outside any procedure
psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "\\timing on" -c "CALL clip.refresh('big')" 2>&1 \
    | sed -n 's/^Time: \([0-9.]*\) ms.*/noop rows=45000 seconds=\1/p' | awk '{split($3,a,"="); printf "noop rows=45000 seconds=%.3f\n", a[2]/1000}' | tee -a "$OUT/results.txt"
SMALL="$ROOT/tests/images/edge/cat.webp"
t_with=$(psql -X -q -c "\\timing on" -c "INSERT INTO trig_with SELECT g, pg_read_binary_file('$SMALL') FROM generate_series(1, 20000) g" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
t_without=$(psql -X -q -c "\\timing on" -c "INSERT INTO trig_without SELECT g, pg_read_binary_file('$SMALL') FROM generate_series(1, 20000) g" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
echo "trigger rows=20000 ms_with=$t_with ms_without=$t_without" | tee -a "$OUT/results.txt"
psql -X -q -c "SET client_min_messages = warning" -c "SELECT clip.drop_collection(name) FROM clip.collection WHERE name IN ('bench', 'big', 'trig')" \
    -c "DROP TABLE IF EXISTS bench_coll, big, trig_with, trig_without" >/dev/null

say "(3) Python reference pipeline"
.venv/bin/python bench/reference.py models/vit-b-32 bench/data/photos "$THREADS" "$BATCH" | tee -a "$OUT/results.txt"

fi

if has batch1; then
    say "(2b) clip.embed_images: a fixed batch of 1 against a symbolic batch, same weights"
    export PGDATABASE=pg_clip_bench
    has images || { ./scripts/cluster.sh recreate-db "$PGDATABASE"; .venv/bin/python bench/make_photos.py bench/data/photos "$N"; }
    ./bench/batch1.sh "$N" "$THREADS" "$BATCH" "$BPE" | tee -a "$OUT/results.txt"
fi

if has vocab; then
    say "(5) vocabulary scoring: 45,000 stored 512-dim embeddings, the space vocabulary"
    ./bench/vocab.sh "$OUT/results.txt"
fi

if has identify; then
    say "(6) identification: generated 512-dim reference sets, clip.identify"
    ./bench/identify.sh "$OUT/results.txt"
fi

if has learn; then
    say "(7) learning: 45,000 stored 512-dim embeddings, beside scikit-learn"
    ./bench/learn.sh "$OUT/results.txt"
fi

if has security; then
    say "(8) safety on a shared server: triggers, identify and views under row security"
    ./bench/security.sh "$OUT/results.txt"
fi

if has curve; then
    say "(9) learning curve: packaged vs loose, active learning against random labels, demo model"
    ./scripts/cluster.sh recreate-db pg_clip_curve
    PGDATABASE=pg_clip_curve .venv/bin/python bench/learning_curve.py bench/data/curve "$OUT" >/dev/null
fi

if has service; then
    say "(10) the inference service against a model per session"
    [ -d bench/data/photos ] || .venv/bin/python bench/make_photos.py bench/data/photos "$N"
    ./bench/service.sh "$OUT/results.txt"
fi

if has web; then
    say "(11) pg_clip web: requests against their SQL calls"
    ./bench/web.sh "$OUT/results.txt" > "$OUT/web.md"
fi

if has projection; then
    say "(12) projection heads: training on 150 look-alikes, identify at 10,000 references"
    ./bench/projection.sh "$OUT/results.txt"
fi

python3 - "$OUT/results.txt" "$N" "${MP:-0}" "$THREADS" "$BATCH" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) batch=(\d+) images=(\d+) seconds=([\d.]+) images_per_s=([\d.]+)", line.strip())
    if m:
        rows[(m[1], int(m[2]))] = float(m[5])
n, mp, threads, batch = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
if ("sql", batch) in rows:
    s1, sb, sql, ref = rows[("session", 1)], rows[("session", batch)], rows[("sql", batch)], rows[("reference", batch)]
    print(f"\nViT-B/32 (random weights), {n} JPEG photos of {mp} MP on average, {threads} threads, CPU")
    print("| pipeline | batch | images/s | ratio |")
    print("|---|---|---|---|")
    print(f"| (1) ONNX Runtime session alone, ready tensors | 1 | {s1:.2f} | |")
    print(f"| (1) ONNX Runtime session alone, ready tensors | {batch} | {sb:.2f} | |")
    print(f"| (2) clip.embed_images, JPEG bytes through SQL | {batch} | {sql:.2f} | (2)/(1) = {sql / sb:.2f} |")
    print(f"| (3) Python: PIL + numpy + onnxruntime | {batch} | {ref:.2f} | (2)/(3) = {sql / ref:.2f} |")
    refresh = rows.get(("refresh", batch))
    if refresh:
        print(f"| (4) CALL clip.refresh, same photos as a collection | {batch} | {refresh:.2f} | (4)/(2) = {refresh / sql:.2f} |")
for line in open(sys.argv[1]):
    if line.startswith("batch1 "):
        v = dict(p.split("=", 1) for p in line.split()[1:5] + line.split()[5:8])
        print(f"\n(2b) clip.embed_images, ViT-B/32 with a fixed batch of 1 (immich's exports) and with a symbolic batch,"
              f" same weights, {v['images']} photos, {v['threads']} threads, pg_clip.batch_size {v['batch_size']}, CPU, median of 3")
        print("| graph | images/s | ratio |")
        print("|---|---|---|")
        print(f"| symbolic batch (one call per {v['batch_size']} images) | {v['dynamic_images_per_s']} | |")
        print(f"| fixed batch of 1 (one call per image) | {v['fixed1_images_per_s']} | {v['ratio']} |")
vocab = {}
for line in open(sys.argv[1]):
    if line.startswith("vocab "):
        parts = line.split()
        vocab[parts[1]] = dict(p.split("=", 1) for p in parts[2:])
if vocab:
    print("\n(5) vocabulary scoring, 45,000 stored embeddings (512-dim), CPU")
    print("| step | seconds | rows | rows/s |")
    print("|---|---|---|---|")
    for key, what in [("model_load", "loading the model in a new session (first text embedding)"), ("full", "first scoring: every image x every attribute"), ("add_one", "one attribute added, then refresh"),
                      ("recalibrate_one", "one attribute recalibrated, then refresh"), ("nothing_changed", "refresh, nothing changed"),
                      ("query_view", "query on the attribute view"), ("query_rows_index", "same query on the rows, with the index"),
                      ("query_rows_noindex", "same query on the rows, index scans off")]:
        v = vocab.get(key)
        if v:
            s = float(v["ms"]) / 1000
            rows_ = v.get("rows", "")
            rate = f"{int(rows_) / s:,.0f}" if rows_ else ""
            extra = f" ({v['attributes']} attributes)" if "attributes" in v else ""
            print(f"| {what}{extra} | {s:.3f} | {rows_} | {rate} |")
ident = [dict(p.split("=", 1) for p in line.split()[2:]) | {"kind": line.split()[1]}
         for line in open(sys.argv[1]) if line.startswith("identify ")]
if ident:
    names = {"exact": "clip.identify, exact search", "ef40": "clip.identify, HNSW, ef_search 40",
             "ef100": "clip.identify, HNSW, ef_search 100 (default)",
             "ef400": "clip.identify, HNSW, ef_search 400", "pgvector40": "pgvector ORDER BY <=> LIMIT 1, ef_search 40"}
    print("\n(6) identification by vector: 200 queries per set (a reference plus noise, cosine ~0.8), latency inside the server")
    print("| references | search | p50 ms | p99 ms | recall@1 vs exact | p50 / pgvector's |")
    print("|---|---|---|---|---|---|")
    base = {r["size"]: float(r["p50_ms"]) for r in ident if r["kind"] == "vector" and r["what"] == "pgvector40"}
    for r in ident:
        if r["kind"] == "build":
            print(f"| {int(r['size']):,} | HNSW index build: {float(r['index_ms']) / 1000:.1f} s | | | | |")
        elif r["kind"] == "vector":
            ratio = float(r["p50_ms"]) / base[r["size"]] if base.get(r["size"]) else 0
            print(f"| {int(r['size']):,} | {names[r['what']]} | {r['p50_ms']} | {r['p99_ms']} | {r['recall1']} | {ratio:.2f} |")
    by = {r["what"]: float(r["p50_ms"]) for r in ident if r["kind"] == "bytes"}
    if by:
        print("\n(6) identification from image bytes, ViT-B/32 on CPU, 10,000 references")
        print("| what | ms (p50 per call, or total) |")
        print("|---|---|")
        print(f"| clip.embed_image alone | {by['embed_image']:.1f} |")
        print(f"| clip.identify(bytea): model call + search | {by['identify_bytes']:.1f} (x{by['identify_bytes'] / by['embed_image']:.2f} of embed_image) |")
        print(f"| 100 frames: LATERAL join | {by['frames_lateral']:.0f} |")
        print(f"| 100 frames: loop of single calls | {by['frames_loop']:.0f} (LATERAL / loop = {by['frames_lateral'] / by['frames_loop']:.2f}) |")
        print(f"| 100 frames: clip.identify_many (batched model calls) | {by['frames_many']:.0f} (many / loop = {by['frames_many'] / by['frames_loop']:.2f}) |")
learn = {}
for line in open(sys.argv[1]):
    if line.startswith("learn "):
        parts = line.split()
        learn[(parts[1], parts[2].split("=", 1)[1])] = dict(p.split("=", 1) for p in parts[3:])
if learn:
    print("\n(7) learning over 45,000 stored embeddings (512-dim), 2 cores, CPU, beside scikit-learn in the same run")
    print("| step | pg_clip ms | scikit-learn ms | scikit-learn / pg_clip |")
    print("|---|---|---|---|")
    names = {"fit": "fit: 1,000 labels, 5-fold CV + final fit", "predict": "probabilities for 45,000 images",
             "kmeans2": "k-means k=2, n_init 4", "kmeans8": "k-means k=8, n_init 4", "kmeans64": "k-means k=64, n_init 4"}
    for what, title in names.items():
        a, b = learn.get(("pg_clip", what)), learn.get(("sklearn", what))
        if a and b:
            extra = ""
            if "inertia" in a:
                extra = f" (inertia {a['inertia']} vs {b['inertia']})"
            if "accuracy" in a:
                extra = f" (CV accuracy {a['accuracy']} vs {b['accuracy']})"
            print(f"| {title}{extra} | {float(a['ms']):.0f} | {float(b['ms']):.0f} | {float(b['ms']) / float(a['ms']):.2f} |")
    tp = learn.get(("sklearn", "threadpool"))
    if tp:
        print(f"scikit-learn's kernels (threadpoolctl, library:threads): {tp['kernels']}")
    ld = learn.get(("sklearn", "load"))
    if ld:
        print(f"| reading the 45,000 embeddings out of PostgreSQL into numpy (scikit-learn's side only) | | {float(ld['ms']):.0f} | |")
sec = [dict(p.split("=", 1) for p in line.split()[1:]) for line in open(sys.argv[1]) if line.startswith("security ")]
if sec:
    print("\n(8) safety on a shared server, tiny model, latency inside the server (p50 / p99 ms)")
    print("| call | superuser (exempt from row security) | reader (row security) | reader / superuser (p50) |")
    print("|---|---|---|---|")
    by = {(r["what"], r["who"]): r for r in sec}
    for what, title in [("identify_1000", "clip.identify by vector, 1,000 references (HNSW)"),
                        ("identify_100", "clip.identify by vector, 100 references (exact)"),
                        ("view_k10", "k = 10 on the collection's view")]:
        a, b = by.get((what, "superuser")), by.get((what, "reader"))
        if a and b:
            print(f"| {title} | {a['p50_ms']} / {a['p99_ms']} | {b['p50_ms']} / {b['p99_ms']} | {float(b['p50_ms']) / float(a['p50_ms']):.2f} |")
    w, wo = by.get(("insert_with_trigger", "superuser")), by.get(("insert_without_trigger", "superuser"))
    if w and wo:
        print(f"| single-row INSERT into the source, with / without the queueing trigger | {w['p50_ms']} / {wo['p50_ms']} | | |")
for line in open(sys.argv[1]):
    m = re.match(r"noop rows=(\d+) seconds=([\d.]+)", line)
    if m:
        print(f"\nrefresh with nothing changed, {m[1]} rows: {float(m[2]):.2f} s")
    m = re.match(r"trigger rows=(\d+) ms_with=([\d.]+) ms_without=([\d.]+)", line)
    if m:
        n, w, wo = int(m[1]), float(m[2]), float(m[3])
        print(f"INSERT of {n} rows: {w / n * 1000:.1f} us/row with the collection's triggers, "
              f"{wo / n * 1000:.1f} us/row without ({(w - wo) / n * 1000:.1f} us/row overhead)")
PY
if has curve; then
    printf '\n(9) learning curve (%s, plot %s)\n' "$OUT/learning-curve.md" "$OUT/learning-curve.png"
    cat "$OUT/learning-curve.md"
fi
if has service; then
    printf '\n(10) the inference service against a model per session (ViT-B/32 size)\n'
    .venv/bin/python - "$OUT/results.txt" <<'PY'
import re, sys
rows = [dict(kv.split("=") for kv in l.split()[2:]) | {"what": l.split()[1]} for l in open(sys.argv[1]) if l.startswith("service ")]
get = lambda what, path, **k: next((r for r in rows if r["what"] == what and r["path"] == path
                                    and all(r.get(a) == str(b) for a, b in k.items())), None)
print("| measure | service | local | service / local |\n|---|---:|---:|---:|")
s, l = get("memory", "service"), get("memory", "local")
if s and l:
    for key, name in (("pss_added_mb", "memory a connection adds with its first call, PSS (MB)"),
                      ("rss_added_mb", "the same, RSS (MB)"),
                      ("first_ms", "first call in a new connection (ms)"), ("warm_ms", "warm call (ms)"),
                      ("first_minus_warm_ms", "first call minus warm (ms)")):
        print(f"| {name} | {float(s[key]):.1f} | {float(l[key]):.1f} | |")
for c in sorted({int(r["clients"]) for r in rows if r["what"] == "identify"}):
    s, l = get("identify", "service", clients=c), get("identify", "local", clients=c)
    if s and l:
        print(f"| clip.identify(bytea), {c} concurrent callers (per s; service mean batch {s['mean_batch']}) | "
              f"{float(s['tps']):.1f} | {float(l['tps']):.1f} | {float(s['tps']) / float(l['tps']):.2f} |")
s, l = get("refresh", "service"), get("refresh", "local")
if s and l:
    print(f"| CALL clip.refresh, {s['images']} photos (images/s) | {float(s['images_per_s']):.1f} | "
          f"{float(l['images_per_s']):.1f} | {float(s['images_per_s']) / float(l['images_per_s']):.2f} |")
PY
fi
if has web; then
    printf '\n(11) pg_clip web: one keep-alive client, the demo model (raw lines in %s)\n' "$OUT/results.txt"
    sed -n '/^| request/,$p' "$OUT/web.md"
fi
if has projection; then
    printf '\n(12) projection heads (raw lines in %s)\n' "$OUT/results.txt"
    .venv/bin/python - "$OUT/results.txt" <<'PY'
import sys
rows = [(l.split()[1], dict(kv.split("=", 1) for kv in l.split()[2:])) for l in open(sys.argv[1]) if l.startswith("projection ")]
print("| model | references | copies | run | embedding the copies (s) | training (s) |\n|---|---:|---:|---:|---:|---:|")
for r in (r for k, r in rows if k == "train"):
    print(f"| {r['model']} | {r['refs']} | {r['copies']} | {r['run']} | {r['embed_s']} | {r['train_s']} |")
print("\n| model | held-out queries | method | copies | top-1 | median margin | lowest margin |\n|---|---|---|---:|---:|---:|---:|")
for r in (r for k, r in rows if k == "evaluation"):
    print(f"| {r['model']} | {r['queries']} | {r['method']} | {r['copies']} | {r['top1']} | {r['median_margin']} | {r['lowest_margin']} |")
print("\n| clip.identify by vector, 10,000 references | p50 ms | p99 ms | recall@1 against exact |\n|---|---:|---:|---:|")
for r in (r for k, r in rows if k == "identify"):
    print(f"| {r['what']} | {r['p50_ms']} | {r['p99_ms']} | {r['recall1_vs_exact']} |")
PY
fi
