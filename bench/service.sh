#!/usr/bin/env bash
# Part (10) of make bench: the shared inference service against each backend loading its own
# model (pg_clip.inference = local), ViT-B/32-sized random model, same cluster, same run:
#   memory a connection adds with its first embedding call (the backend's PSS and RSS);
#   the first call in a new connection against a warm one;
#   throughput of 1, 4 and 16 concurrent clip.identify(bytea) callers (pgbench, custom script),
#   with the mean batch the service formed;
#   CALL clip.refresh of the photos.
# Expects the project cluster's environment and bench/data/photos; writes "service ..." lines to $1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
N="${BENCH_IMAGES:-200}"
SECONDS_PER_RUN="${BENCH_SERVICE_SECONDS:-15}"
CLIENTS="${BENCH_SERVICE_CLIENTS:-1 4 16}"
export PGDATABASE=pg_clip_bench_service
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
PGBENCH="$(dirname "$(command -v psql)")/pgbench"
[ -x "$PGBENCH" ] || PGBENCH="$(pg_config --bindir)/pgbench"

q -v dir="$ROOT/bench/data/photos" -v n="$N" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_clip CASCADE;
SELECT clip.register_model('vit-b-32', 'vit-b-32') \gset
CREATE TABLE bench_photos AS
SELECT row_number() OVER (ORDER BY f) AS id, pg_read_binary_file(:'dir' || '/' || f) AS img
FROM pg_ls_dir(:'dir') AS f ORDER BY f LIMIT :n;
ALTER TABLE bench_photos ADD PRIMARY KEY (id);
-- a reference set of the first 100 photos; the queries are the photos themselves
CREATE TABLE bench_refs AS SELECT id, 'ref ' || id AS label, img FROM bench_photos WHERE id <= 100;
ALTER TABLE bench_refs ADD PRIMARY KEY (id);
SELECT clip.add_reference_set('refs', 'bench_refs', 'id', 'img', 'label', 'vit-b-32');
CALL clip.refresh('refs');
SQL

# memory and first call: new sessions per path, their backends measured from /proc (the server
# runs on this machine); each session's first call (after a plain read of the table, so that the
# table's own first read is not counted) against the median of its next 3 calls (paired in the
# session, so that drift between sessions cancels), the median over 9 sessions
for path in service local; do
    python3 - "$path" "$OUT" <<'PY'
import statistics, subprocess, sys
path, out = sys.argv[1], sys.argv[2]
SESSIONS, WARM = 9, 3

def session():
    """One psql session driven through a pipe."""
    p = subprocess.Popen(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    def ask(sql):
        p.stdin.write(sql + "\n\\echo __done\n"); p.stdin.flush()
        lines = []
        while (line := p.stdout.readline().rstrip("\n")) != "__done":
            lines.append(line)
        return lines
    return p, ask

def mem(pid):
    pss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/smaps_rollup") if l.startswith("Pss:"))
    rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
    return pss, rss

def timed(ask):
    return float(ask("SELECT extract(epoch FROM clock_timestamp()) * 1000 AS t0 \\gset\n"
                     "SELECT vector_dims(clip.embed_image(img, 'vit-b-32')) FROM bench_photos WHERE id = 1 \\gset\n"
                     "SELECT extract(epoch FROM clock_timestamp()) * 1000 - :t0;")[0])

firsts, warms, extra, added = [], [], [], []
for _ in range(SESSIONS):
    p, ask = session()
    ask(f"SET pg_clip.inference = '{path}'; SET client_min_messages = warning;")
    pid = int(ask("SELECT pg_backend_pid();")[0])
    ask("SELECT length(img) FROM bench_photos WHERE id = 1;")  # the table's first read is not ours
    before = mem(pid)
    first = timed(ask)
    after = mem(pid)
    warm = statistics.median(timed(ask) for _ in range(WARM))
    p.stdin.close(); p.wait()
    firsts.append(first); warms.append(warm); extra.append(first - warm)
    added.append(((after[0] - before[0]) / 1024, (after[1] - before[1]) / 1024))
med = statistics.median
pss, rss = med(a[0] for a in added), med(a[1] for a in added)
with open(out, "a") as f:
    line = (f"service memory path={path} pss_added_mb={pss:.1f} rss_added_mb={rss:.1f} first_ms={med(firsts):.1f} "
            f"warm_ms={med(warms):.1f} first_minus_warm_ms={med(extra):.1f}")
    print(line); f.write(line + "\n")
PY
done

# throughput of concurrent identify callers: each transaction identifies one photo's bytes
cat > "$ROOT/.run/bench/identify.pgbench" <<'PGB'
\set id random(1, 200)
SELECT label FROM clip.identify((SELECT img FROM bench_photos WHERE id = :id), 'refs');
PGB
for path in service local; do
    for c in $CLIENTS; do
        before=$(q -c "SELECT coalesce(sum(batches), 0) || ' ' || coalesce(sum(items), 0) FROM clip.inference_status() WHERE model = 'vit-b-32' AND tower = 'visual'")
        tps=$(PGOPTIONS="-c pg_clip.inference=$path" "$PGBENCH" -n -c "$c" -j "$c" -T "$SECONDS_PER_RUN" \
                -f "$ROOT/.run/bench/identify.pgbench" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
        after=$(q -c "SELECT coalesce(sum(batches), 0) || ' ' || coalesce(sum(items), 0) FROM clip.inference_status() WHERE model = 'vit-b-32' AND tower = 'visual'")
        mean=$(python3 -c "b0,i0='$before'.split(); b1,i1='$after'.split(); db=int(b1)-int(b0); print('%.2f' % ((int(i1)-int(i0))/db) if db else '-')")
        echo "service identify path=$path clients=$c tps=$tps mean_batch=$mean" | tee -a "$OUT"
    done
done

# refresh of the photos as a collection, each path
for path in service local; do
    q -c "SET client_min_messages = warning" -c "SELECT clip.drop_collection('bphotos') FROM clip.collection WHERE name = 'bphotos'" \
      -c "SELECT clip.add_collection('bphotos', 'bench_photos', 'id', 'img', 'vit-b-32')" >/dev/null
    s=$(PGOPTIONS="-c pg_clip.inference=$path" q <<'SQL' | tail -1
SET client_min_messages = warning;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
CALL clip.refresh('bphotos');
SELECT round((count(*) / (extract(epoch FROM clock_timestamp()) - :t0))::numeric, 1) FROM clip.embedding WHERE collection = 'bphotos';
SQL
)
    echo "service refresh path=$path images=$N images_per_s=$s" | tee -a "$OUT"
done
