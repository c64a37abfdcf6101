#!/usr/bin/env bash
# make bench, part "batch1": clip.embed_images with a graph whose batch is fixed at 1 (immich's
# exports since 2025), against the same weights with a symbolic batch: same photos, threads and
# pg_clip.batch_size, in one session, three alternating rounds each; the median round counts.
# Called by bench/run.sh with the cluster running and PGDATABASE set.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="$1"; THREADS="$2"; BATCH="$3"; BPE="$4"
cd "$ROOT"
if [ ! -f models/vit-b-32-b1/visual/model.onnx ]; then
    echo "generating models/vit-b-32-b1 (the ViT-B/32-sized model with a fixed batch of 1, not committed)"
    .venv/bin/python models/gen_clip.py vit-b-32 models/vit-b-32-b1 --seed 0 --bpe "$BPE" --batch 1 >/dev/null
fi
psql -X -q -v ON_ERROR_STOP=1 -v dir="$ROOT/bench/data/photos" -v n="$N" 2>&1 <<SQL | sed -n 's/.*NOTICE:  //p'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
SELECT clip.register_model('vit-b-32', 'vit-b-32') \gset
SELECT clip.register_model('vit-b-32-b1', 'vit-b-32-b1') \gset
DROP TABLE IF EXISTS bench_b1;
CREATE TABLE bench_b1 AS
SELECT row_number() OVER (ORDER BY f) AS id, pg_read_binary_file(:'dir' || '/' || f) AS img
FROM pg_ls_dir(:'dir') AS f ORDER BY f LIMIT :n;
SET pg_clip.intra_op_threads = $THREADS;
SET pg_clip.batch_size = $BATCH;
SET pg_clip.device = 'cpu';
SELECT vector_dims(clip.embed_image(img, 'vit-b-32')), vector_dims(clip.embed_image(img, 'vit-b-32-b1')) FROM bench_b1 LIMIT 1 \gset
RESET client_min_messages;
DO \$\$
DECLARE
    t0 timestamptz; n int; r vector[]; lo int; m text; round int;
    rates jsonb := '{"vit-b-32": [], "vit-b-32-b1": []}';
    dyn float8; b1 float8;
BEGIN
    SELECT count(*) INTO n FROM bench_b1;
    FOR round IN 1..3 LOOP
        FOREACH m IN ARRAY ARRAY['vit-b-32', 'vit-b-32-b1'] LOOP
            t0 := clock_timestamp();
            lo := 0;
            WHILE lo < n LOOP
                r := clip.embed_images((SELECT array_agg(img ORDER BY id) FROM bench_b1
                                        WHERE id > lo AND id <= lo + 8 * $BATCH), m);
                lo := lo + 8 * $BATCH;
            END LOOP;
            rates := jsonb_set(rates, ARRAY[m], (rates -> m) || to_jsonb(n / extract(epoch FROM clock_timestamp() - t0)));
        END LOOP;
    END LOOP;
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x::float8) INTO dyn FROM jsonb_array_elements_text(rates -> 'vit-b-32') x;
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY x::float8) INTO b1 FROM jsonb_array_elements_text(rates -> 'vit-b-32-b1') x;
    RAISE NOTICE 'batch1 images=% batch_size=$BATCH threads=$THREADS dynamic_images_per_s=% fixed1_images_per_s=% ratio=% rounds=%',
        n, round(dyn::numeric, 2), round(b1::numeric, 2), round((b1 / dyn)::numeric, 3), rates;
END \$\$;
DROP TABLE bench_b1;
SQL
