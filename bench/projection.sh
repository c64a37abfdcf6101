#!/usr/bin/env bash
# Part (12) of make bench: projection heads. (a) clip.train_projection on 150 look-alike
# references (models/synth lookalikes: variants of one card that differ in two small shapes and
# the title) under the test model, the demo model and the ViT-B/32-sized random model: the time
# to embed the pool of augmented copies and the time to train, from the stored row, then a second
# training (the copies come from the cache), and the evaluation on held-out copies. (b) clip.identify
# by vector at 10,000 generated 512-dim references (as part 6) with and without a head (default
# sizes, weights from a short training on generated vectors: the latency does not depend on how
# they were trained), p50/p99 over 200 queries inside the server, and recall@1 of the head's HNSW
# search against its exact search. Writes "projection ..." lines to $1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
export PGDATABASE=pg_clip_bench_projection
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
LOOK="$ROOT/.run/bench/lookalikes"
"$ROOT/.venv/bin/python" "$ROOT/models/synth/generate.py" --seed 5 --count 150 --kind lookalikes --out "$LOOK" >/dev/null

q -v dir="$LOOK" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_clip CASCADE;
SELECT clip.register_model('tiny', 'tiny-clip'), clip.register_model('demo', 'demo-clip'), clip.register_model('vit-b-32', 'vit-b-32');
CREATE TABLE look (id int PRIMARY KEY, variant text NOT NULL, img bytea);
INSERT INTO look SELECT row_number() OVER (ORDER BY f), f, pg_read_binary_file(:'dir' || '/' || f)
FROM pg_ls_dir(:'dir') f WHERE f LIKE '%.png';
SQL
for M in tiny demo vit-b-32; do
    S="look_${M//-/_}"
    q -At -v m="$M" -v s="$S" <<'SQL' | tee -a "$OUT"
SET client_min_messages = warning;
SET pg_clip.device = 'cpu';
SELECT clip.add_reference_set(:'s', 'look', 'id', 'img', 'variant', :'m') \gset
CALL clip.refresh(:'s');
CREATE TEMP TABLE ev AS SELECT * FROM clip.train_projection(:'s');
SELECT count(*) AS second FROM clip.train_projection(:'s') \gset
SELECT format('projection train model=%s refs=%s copies=%s run=%s embed_s=%s train_s=%s', :'m', p.refs, p.copies,
              p.version, round(p.embed_seconds::numeric, 2), round(p.train_seconds::numeric, 2))
FROM clip.projection p WHERE p.reference_set = :'s' ORDER BY p.version;
SELECT format('projection evaluation model=%s queries=%s method=%s copies=%s top1=%s median_margin=%s lowest_margin=%s',
              :'m', queries, method, copies, round(top1_rate::numeric, 3), round(median_margin::numeric, 3), round(lowest_margin::numeric, 3))
FROM ev;
SQL
done

q -At <<'SQL' | tee -a "$OUT"
SET client_min_messages = warning;
CREATE TABLE refs (id bigint PRIMARY KEY, label text NOT NULL, img bytea);
INSERT INTO refs SELECT g, 'card ' || g, NULL FROM generate_series(1, 10000) g;
SELECT clip.add_reference_set('refs', 'refs', 'id', 'img', 'label', 'vit-b-32') \gset
SELECT format('DROP INDEX clip.%I', clip._derived_name('refs', 'index', 'vit-b-32')) \gexec
SELECT setseed(0.42);
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT 'refs', m.name, g, m.stamp, '\x00', l2_normalize(r.v)
FROM generate_series(1, 10000) g CROSS JOIN clip.model m
CROSS JOIN LATERAL (SELECT array_agg(random() - 0.5)::vector AS v FROM generate_series(1, 512) WHERE g > 0) r
WHERE m.name = 'vit-b-32';
CREATE TABLE qv AS
SELECT row_number() OVER ()::int AS qid,
       l2_normalize(e.embedding + (SELECT array_agg((random() - 0.5) * 0.115)::vector FROM generate_series(1, 512) WHERE e.image_id > 0)) AS v
FROM clip.embedding e WHERE e.collection = 'refs' AND e.image_id % 50 = 0;
SET maintenance_work_mem = '2GB';
SELECT clip._index_collection('refs');
-- a head of the default sizes (512 -> 512 -> 256) from one epoch on 64 generated references
WITH r AS (SELECT e.image_id, e.embedding FROM clip.embedding e WHERE e.collection = 'refs' AND e.image_id <= 64),
f AS (SELECT * FROM clip._fit_projection(
    (SELECT array_agg(embedding::real[] ORDER BY image_id) FROM r), (SELECT array_agg((image_id - 1)::int ORDER BY image_id) FROM r),
    (SELECT array_agg(embedding::real[] ORDER BY image_id) FROM r), (SELECT array_agg((image_id - 1)::int ORDER BY image_id) FROM r),
    (SELECT array_agg(false) FROM r), 512, '{"epochs": 1, "held_out_labels": 0}'))
INSERT INTO clip.projection (reference_set, version, model, stamp, input_dim, hidden_dim, output_dim, weights, options, losses,
                             evaluation, refs, labels, copies, embed_seconds, train_seconds)
SELECT 'refs', 1, m.name, m.stamp, f.input_dim, f.hidden_dim, f.output_dim, f.weights, '{}', f.losses, f.evaluation, 64, 64, 64, 0, 0
FROM f, clip.model m WHERE m.name = 'vit-b-32';
SELECT clip._index_projection('refs');
SELECT clip._project_references('refs');
ANALYZE clip.embedding;
ANALYZE clip.projection_embedding;
CREATE TABLE lat (what text, qid int, ms float8, top1 bigint);
CREATE FUNCTION timed(what text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; t0 timestamptz; top bigint;
BEGIN
    FOR r IN SELECT qid, v FROM qv ORDER BY qid LOOP
        t0 := clock_timestamp();
        SELECT i.reference_id INTO top FROM clip.identify(r.v, 'refs') i;
        INSERT INTO lat VALUES (what, r.qid, extract(epoch FROM clock_timestamp() - t0) * 1000, top);
    END LOOP;
END $$;
-- (a warm-up round of each, not kept)
SELECT timed('warm'); SET pg_clip.identify_projection = off; SELECT timed('warm'); RESET pg_clip.identify_projection;
TRUNCATE lat;
SELECT timed('head_hnsw');
SET pg_clip.identify_projection = off;
SELECT timed('clip_hnsw');
RESET pg_clip.identify_projection;
SET pg_clip.identify_exact_limit = 1000000;
SELECT timed('head_exact');
SET pg_clip.identify_projection = off;
SELECT timed('clip_exact');
SELECT format('projection identify refs=10000 what=%s p50_ms=%s p99_ms=%s recall1_vs_exact=%s', l.what,
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l.ms)::numeric, 3),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l.ms)::numeric, 3),
              round(avg((l.top1 = x.top1)::int)::numeric, 3))
FROM lat l JOIN lat x ON x.qid = l.qid AND x.what = split_part(l.what, '_', 1) || '_exact'
GROUP BY l.what ORDER BY l.what;
SQL
