#!/usr/bin/env bash
# Part (7) of make bench: learning over 45,000 stored 512-dim embeddings (a seeded Gaussian
# mixture of 8 classes, written by bench/learn_reference.py), beside scikit-learn on the same
# rows in the same run: a classifier fitted with 5-fold cross-validation on 1,000 labels,
# probabilities for all 45,000 images, k-means with k = 2, 8 and 64; each the median of three
# runs, on both sides. Expects the project
# cluster's environment; writes "learn ..." lines to $1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
D="$ROOT/.run/bench/learn"
mkdir -p "$D"
export PGDATABASE=pg_clip_bench_learn
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
[ -f "$D/rows.txt" ] || "$ROOT/.venv/bin/python" "$ROOT/bench/learn_reference.py" gen "$D"
chmod o+r "$D/rows.txt"

q -v rows="$D/rows.txt" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_clip CASCADE;
SELECT clip.register_model('vit-b-32', 'vit-b-32') \gset
CREATE TABLE staging (id bigint, class int, v vector);
COPY staging FROM :'rows';
CREATE TABLE lrn (id bigint PRIMARY KEY, img bytea);
INSERT INTO lrn SELECT id, NULL FROM staging;
SELECT clip.add_collection('lrn', 'lrn', 'id', 'img', 'vit-b-32');
-- learning reads the vectors, not the index; building it for 45,000 rows takes minutes
SELECT format('DROP INDEX clip.%I', clip._derived_name('lrn', 'index', 'vit-b-32')) \gexec
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT 'lrn', m.name, s.id, m.stamp, '\x00', s.v FROM staging s CROSS JOIN clip.model m WHERE m.name = 'vit-b-32';
-- the labels: the first 1,000 rows of classes 0 and 1
INSERT INTO clip.label (collection, classifier, image_id, label)
SELECT 'lrn', 'clf', s.id, CASE s.class WHEN 0 THEN 'zero' ELSE 'one' END
FROM (SELECT * FROM staging WHERE class < 2 ORDER BY id LIMIT 1000) s;
DROP TABLE staging;
ANALYZE;
SQL
timed() { q -c "SET client_min_messages = warning" -c "\\timing on" -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1; }
# the median of three runs (this machine's timings move by 10-30% from run to run)
median3() { printf '%s\n' "$(timed "$1")" "$(timed "$1")" "$(timed "$1")" | sort -g | sed -n 2p; }
t=$(median3 "SELECT * FROM clip.fit_classifier('lrn', 'clf')")
acc=$(q -At -c "SELECT round((metrics -> 'mean' ->> 'accuracy')::numeric, 4) FROM clip.classifier WHERE name = 'clf' ORDER BY version DESC LIMIT 1")
echo "learn pg_clip what=fit rows=1000 ms=$t accuracy=$acc" | tee -a "$OUT"
t=$(median3 "SELECT count(*) FROM clip._probabilities(clip._current_classifier('clf'))")
echo "learn pg_clip what=predict rows=45000 ms=$t" | tee -a "$OUT"
for k in 2 8 64; do
    t=$(median3 "SELECT count(*) FROM clip.kmeans('lrn', 'km$k', $k)")
    r=$(q -At -F ' ' -c "SELECT round(inertia::numeric, 2), iterations FROM clip.clustering WHERE name = 'km$k'")
    echo "learn pg_clip what=kmeans$k rows=45000 ms=$t inertia=${r% *} iterations=${r#* }" | tee -a "$OUT"
done
"$ROOT/.venv/bin/python" "$ROOT/bench/learn_reference.py" run "$D" | tee -a "$OUT"
