#!/usr/bin/env bash
# make test-web: pg_clip web against the project cluster (started by the caller): a test
# database made with examples/web.sql plus 14 seeded labels, the handler tests (cargo test
# -p pg_clip_web), then the server started, the browser tests in Debian's Chromium, and
# Schemathesis over /openapi.json (no 500, answers as documented).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
eval "$(./scripts/cluster.sh env)"
export PGDATABASE=pg_clip_web_test PG_CLIP_ROOT="$ROOT"
OUT="$ROOT/.run/web-test"
rm -rf "$OUT" && mkdir -p "$OUT/screens"
./scripts/cluster.sh recreate-db "$PGDATABASE"
psql -X -q -v ON_ERROR_STOP=1 -f examples/web.sql
# 7 + 7 labels given before the browser's: with refits every 19 labels, its fifth label refits
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET pg_clip.refit_every = 0;
SELECT clip.label_many('demo', 'packaging', ARRAY(SELECT id FROM demo_images WHERE packaged = k ORDER BY id LIMIT 7), k, 'seed')
FROM unnest(ARRAY['packaged', 'loose']) k;
SELECT format('ALTER DATABASE %I SET pg_clip.refit_every = 19', current_database()) \gexec
SQL
# a camera frame the demo model identifies with a clear margin, as the fake camera's video
read -r frame card < <(psql -X -qAt -F ' ' -c "
    SELECT f.file, f.card FROM demo_frames f CROSS JOIN LATERAL clip.identify(f.image, 'demo_cards') r
    WHERE r.label = f.card AND r.margin > 0.3 ORDER BY f.id LIMIT 1")
[ -n "$card" ] || { echo "test-web: no frame the demo model identifies clearly" >&2; exit 1; }
.venv/bin/python web/tests/browser/make_video.py ".run/demo/frames/$frame" "$OUT/camera.y4m"

echo "--- handler tests"
cargo test --release -q -p pg_clip_web

echo "--- browser tests (Chromium $(chromium --version 2>/dev/null | awk '{print $2}'))"
. web/tests/start-server.sh
start_web "$OUT" --pool 3
PG_CLIP_WEB_URL="$url" PG_CLIP_WEB_VIDEO="$OUT/camera.y4m" PG_CLIP_WEB_CARD="$card" PG_CLIP_WEB_SCREENS="$OUT/screens" \
    node --test --test-concurrency=1 web/tests/browser/

# (one worker: with two, Schemathesis 4.32.5's coverage phase sometimes fails inside Hypothesis
# while reading a lambda's source, "AST constructor recursion depth mismatch")
echo "--- Schemathesis over $url/openapi.json (identify bodies: real, cut-short and generated images)"
(cd web/tests && PG_CLIP_WEB_IMAGES="$ROOT/.run/demo/frames" SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=. \
    "$ROOT/.deps/schemathesis-venv/bin/schemathesis" --config-file schemathesis.toml run "$url/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples 30 --workers 1 --seed 1 --no-color) | sed -n '/SUMMARY/,$p'
