#!/usr/bin/env bash
# Part (5) of make bench: vocabulary scoring over 45,000 stored embeddings of the ViT-B/32-sized
# model (512 dimensions, random unit vectors: scoring reads only the stored vectors), with the
# 37-attribute space vocabulary. Expects the project cluster's environment (cluster.sh env) and
# writes "vocab ..." lines to $1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
ROWS=45000
export PGDATABASE=pg_clip_bench_vocab
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
# time one statement, outside any transaction block (CALL clip.refresh commits per batch), in a
# session whose model is already loaded (as in parts (2) and (4); the load is timed apart)
timed() { q -c "SET client_min_messages = warning" -c "SELECT vector_dims(clip.embed_text('warm-up', 'vit-b-32'))" \
            -c "\\timing on" -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1; }

q -v small="$ROOT/tests/images/edge/cat.webp" -v rows="$ROWS" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_clip CASCADE;
SELECT clip.register_model('vit-b-32', 'vit-b-32') \gset
CREATE TABLE shots (id bigint PRIMARY KEY, img bytea);
INSERT INTO shots SELECT g, pg_read_binary_file(:'small') FROM generate_series(1, :rows) g;
SELECT clip.add_collection('shots', 'shots', 'id', 'img', 'vit-b-32');
-- scoring does not use the HNSW index, and inserting 45,000 vectors into it takes minutes
SELECT format('DROP INDEX clip.%I', clip._derived_name('shots', 'index', 'vit-b-32')) \gexec
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT 'shots', m.name, s.id, m.stamp, sha256(s.img), l2_normalize(r.v)
FROM shots s CROSS JOIN clip.model m
CROSS JOIN LATERAL (SELECT array_agg(random() - 0.5)::vector AS v FROM generate_series(1, 512) WHERE s.id > 0) r
WHERE m.name = 'vit-b-32';
-- statistics, as autovacuum would have them after a refresh that wrote the rows over minutes
ANALYZE shots;
ANALYZE clip.embedding;
SELECT count(*) FROM clip.load_vocabulary_file('space', 'space.yaml') \gset
SELECT clip.attach_vocabulary('shots', 'space');
SET pg_clip.device = 'cpu';
SELECT vector_dims(clip.embed_text('warm-up', 'vit-b-32')) \gset
SQL
load=$(q -c "SET client_min_messages = warning" -c "\\timing on" -c "SELECT vector_dims(clip.embed_text('warm-up', 'vit-b-32'))" \
       | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
echo "vocab model_load ms=$load" | tee -a "$OUT"
ATTRS=$(q -At -c "SELECT count(*) FROM clip.vocabulary_attribute WHERE vocabulary = 'space'")

t=$(timed "CALL clip.refresh('shots')")
n=$(q -At -c "SELECT count(*) FROM clip.feature_image_attribute WHERE collection = 'shots'")
echo "vocab full attributes=$ATTRS rows=$n ms=$t" | tee -a "$OUT"

q -c "SELECT count(*) FROM clip.load_vocabulary('space', replace((SELECT source FROM clip.vocabulary WHERE name = 'space'),
      E'base_attributes:\n', E'base_attributes:\n  - {code: comet, description: \"a comet with a bright tail\"}\n'))" >/dev/null
t=$(timed "CALL clip.refresh('shots')")
n=$(q -At -c "SELECT count(*) FROM clip.feature_image_attribute WHERE collection = 'shots' AND attribute_code = 'comet'")
echo "vocab add_one rows=$n ms=$t" | tee -a "$OUT"

changed=$(q -At -c "SELECT string_agg(attribute || ':' || array_to_string(fields, ','), ' ') FROM clip.load_vocabulary('space',
      replace((SELECT source FROM clip.vocabulary WHERE name = 'space'), 'description: \"the Moon\", type: celestial_body}',
              'description: \"the Moon\", type: celestial_body, calibration: {center: 24.0, scale: 1.2}}'))")
t=$(timed "CALL clip.refresh('shots')")
echo "vocab recalibrate_one changed=$changed ms=$t" | tee -a "$OUT"

t=$(timed "CALL clip.refresh('shots')")
echo "vocab nothing_changed ms=$t" | tee -a "$OUT"

# a typical question: images with Earth and without the Moon, on the view and on the rows
view_q="SELECT count(*) FROM clip.shots_attributes WHERE earth > 0.001 AND NOT moon > 0.001"
rows_q="SELECT count(*) FROM clip.feature_image_attribute e WHERE e.collection = 'shots' AND e.attribute_code = 'earth' AND e.confidence > 0.001 AND NOT EXISTS (SELECT 1 FROM clip.feature_image_attribute m WHERE m.collection = 'shots' AND m.image_id = e.image_id AND m.attribute_code = 'moon' AND m.confidence > 0.001)"
timed "$view_q" >/dev/null
echo "vocab query_view ms=$(timed "$view_q") answer=$(q -At -c "$view_q")" | tee -a "$OUT"
echo "vocab query_rows_index ms=$(timed "$rows_q") answer=$(q -At -c "$rows_q")" | tee -a "$OUT"
noidx="SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off"
t=$(q -c "SET client_min_messages = warning" -c "$noidx" -c "\\timing on" -c "$rows_q" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
echo "vocab query_rows_noindex ms=$t" | tee -a "$OUT"
