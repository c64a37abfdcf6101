#!/usr/bin/env bash
# Part (6) of make bench: identification. Reference sets of 200, 1,000, 10,000 and 100,000 generated
# 512-dim unit vectors under the ViT-B/32-sized model; each query is a reference plus noise
# (cosine about 0.8 to its source: a camera frame of a known reference). For each set:
# clip.identify by vector, p50/p99 latency and recall@1 against exact search, at ef_search 40,
# 100 (the default) and 400, beside pgvector's own ORDER BY ... LIMIT 1 on the set's view (the reference
# pipeline), and exact search. Then, on the 10,000 set: identify from image bytes end to end,
# and 100 frames as a LATERAL join, as a loop of single calls and as clip.identify_many.
# Latencies are taken inside the server (clock_timestamp around each call), so they carry no
# client round trip. Expects the project cluster's environment; writes "identify ..." lines to $1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
SIZES="${BENCH_IDENTIFY_SIZES:-200 1000 10000 100000}"
QUERIES=200
export PGDATABASE=pg_clip_bench_identify
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

q >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_clip CASCADE;
SELECT clip.register_model('vit-b-32', 'vit-b-32') \gset
-- server-side timing of one statement per query vector, into bench_lat
CREATE TABLE bench_lat (what text, qid int, ms float8, top1 bigint);
CREATE FUNCTION bench_time(what text, q text, vecs regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; t0 timestamptz; top bigint;
BEGIN
    FOR r IN EXECUTE format('SELECT qid, v FROM %s ORDER BY qid', vecs) LOOP
        t0 := clock_timestamp();
        EXECUTE q INTO top USING r.v;
        INSERT INTO bench_lat VALUES (what, r.qid, extract(epoch FROM clock_timestamp() - t0) * 1000, top);
    END LOOP;
END $$;
SQL

for N in $SIZES; do
    S="refs_$N"
    t_build=$(q -v n="$N" -v s="$S" -v qt="q_$N" <<'SQL' | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
SET client_min_messages = warning;
CREATE TABLE :s (id bigint PRIMARY KEY, label text NOT NULL, img bytea);
INSERT INTO :s SELECT g, 'card ' || g, NULL FROM generate_series(1, :n) g;
SELECT clip.add_reference_set(:'s', :'s', 'id', 'img', 'label', 'vit-b-32');
-- load the vectors first and build the index once, as pgvector advises for bulk loads
SELECT format('DROP INDEX clip.%I', clip._derived_name(:'s', 'index', 'vit-b-32')) \gexec
SELECT setseed(0.42);
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT :'s', m.name, g, m.stamp, '\x00', l2_normalize(r.v)
FROM generate_series(1, :n) g CROSS JOIN clip.model m
CROSS JOIN LATERAL (SELECT array_agg(random() - 0.5)::vector AS v FROM generate_series(1, 512) WHERE g > 0) r
WHERE m.name = 'vit-b-32';
-- queries: 200 references, each plus noise of 0.75 times its length (cosine ~0.8)
CREATE TABLE :qt AS
SELECT row_number() OVER ()::int AS qid, e.image_id AS source,
       l2_normalize(e.embedding + (SELECT array_agg((random() - 0.5) * 0.115)::vector FROM generate_series(1, 512) WHERE e.image_id > 0)) AS v
FROM clip.embedding e WHERE e.collection = :'s' AND e.image_id % (:n / 200) = 0;
SET maintenance_work_mem = '2GB';
\timing on
SELECT clip._index_collection(:'s');
\timing off
ANALYZE clip.embedding;
SQL
)
    echo "identify build size=$N index_ms=$t_build" | tee -a "$OUT"
    q -v n="$N" -v s="$S" -v qt="q_$N" >/dev/null <<'SQL'
SET client_min_messages = warning;
-- exact answers first (the truth for recall), then the index at two ef_search settings
SET pg_clip.identify_exact_limit = 2000000;
SELECT bench_time('exact', format('SELECT reference_id FROM clip.identify($1, %L)', :'s'), :'qt');
RESET pg_clip.identify_exact_limit;
SET pg_clip.identify_exact_limit = 0;
SET pg_clip.identify_ef_search = 40;
SELECT bench_time('ef40', format('SELECT reference_id FROM clip.identify($1, %L)', :'s'), :'qt');
SET pg_clip.identify_ef_search = 100;
SELECT bench_time('ef100', format('SELECT reference_id FROM clip.identify($1, %L)', :'s'), :'qt');
SET pg_clip.identify_ef_search = 400;
SELECT bench_time('ef400', format('SELECT reference_id FROM clip.identify($1, %L)', :'s'), :'qt');
-- the reference pipeline: pgvector's query on the set's view, ef_search 40, no labels or margin
SET hnsw.ef_search = 40;
SELECT bench_time('pgvector40', format('SELECT image_id FROM clip.%I ORDER BY embedding <=> $1 LIMIT 1', :'s' || '_embeddings'), :'qt');
SQL
    q -At -F ' ' -v n="$N" <<'SQL' | while read -r what p50 p99 recall; do echo "identify vector size=$N what=$what p50_ms=$p50 p99_ms=$p99 recall1=$recall" | tee -a "$OUT"; done
SELECT l.what, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l.ms)::numeric, 3),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l.ms)::numeric, 3),
       round(avg((l.top1 = x.top1)::int)::numeric, 3)
FROM bench_lat l JOIN bench_lat x ON x.what = 'exact' AND x.qid = l.qid
GROUP BY l.what ORDER BY array_position(ARRAY['exact', 'ef40', 'ef100', 'ef400', 'pgvector40'], l.what);
TRUNCATE bench_lat;
SQL
done

# end to end from image bytes, and 100 frames three ways, on the 10,000 set (first in SIZES >= 10000)
S=refs_10000
q -At -v small="$ROOT/tests/images/edge/cat.webp" -v dir="$ROOT/tests/images/photos" -v s="$S" <<'SQL' | tee -a "$OUT"
SET client_min_messages = warning;
SET pg_clip.device = 'cpu';
CREATE TABLE frames AS
SELECT g AS id, pg_read_binary_file(:'dir' || '/' || (ARRAY['astronaut.png', 'camera.png', 'chelsea.png', 'coffee.png',
       'hubble_deep_field.jpg', 'rocket.jpg'])[1 + g % 6]) AS img
FROM generate_series(1, 100) g;
SELECT set_config('bench.set', :'s', false) \gset
-- load the model and run the visual session once at each batch shape used below (a first run
-- at a new batch size costs ONNX Runtime a second or two), so that an application's warm
-- session is what is timed
SELECT count(*) FROM clip.identify(pg_read_binary_file(:'small'), :'s') \gset
SELECT count(*) FROM clip.identify_many((SELECT array_agg(img ORDER BY id) FROM frames), :'s') \gset
CREATE TEMP TABLE t (what text, ms float8);
DO $$
DECLARE t0 timestamptz; img bytea; f record; s text := current_setting('bench.set');
BEGIN
    FOR i IN 1..30 LOOP
        SELECT fr.img INTO img FROM frames fr WHERE fr.id = i;
        t0 := clock_timestamp();
        PERFORM clip.embed_image(img, 'vit-b-32');
        INSERT INTO t VALUES ('embed_image', extract(epoch FROM clock_timestamp() - t0) * 1000);
        t0 := clock_timestamp();
        PERFORM * FROM clip.identify(img, s);
        INSERT INTO t VALUES ('identify_bytes', extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
    t0 := clock_timestamp();
    PERFORM count(*) FROM frames fr CROSS JOIN LATERAL clip.identify(fr.img, s) i;
    INSERT INTO t VALUES ('frames_lateral', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    FOR f IN SELECT fr.img FROM frames fr ORDER BY fr.id LOOP
        PERFORM * FROM clip.identify(f.img, s);
    END LOOP;
    INSERT INTO t VALUES ('frames_loop', extract(epoch FROM clock_timestamp() - t0) * 1000);
    t0 := clock_timestamp();
    PERFORM count(*) FROM clip.identify_many((SELECT array_agg(fr.img ORDER BY fr.id) FROM frames fr), s);
    INSERT INTO t VALUES ('frames_many', extract(epoch FROM clock_timestamp() - t0) * 1000);
END $$;
SELECT 'identify bytes what=' || what || ' p50_ms=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1)
       || ' n=' || count(*)
FROM t GROUP BY what ORDER BY what;
SQL
