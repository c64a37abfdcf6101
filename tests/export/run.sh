#!/usr/bin/env bash
# make test-export: models/export_open_clip.py on randomly initialised open_clip models, then
# pg_clip's loader and pipeline on the exported folders against open_clip's own vectors
# (core/tests/families.rs). Not part of make test: torch's venv is about 6 GB.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
./tests/export/venv.sh
VENV=.deps/export-venv
rm -rf .run/export && mkdir -p .run/export
"$VENV/bin/python" tests/export/check_export.py .run/export 2>&1 | grep -v -i "warn\|opset9"
PG_CLIP_FIXTURES="$ROOT/.run/export" cargo test --release -p pg_clip_core --test families every_family -- --nocapture 2>&1 \
    | grep -E "lowest cosine|test result|panicked" -A2
