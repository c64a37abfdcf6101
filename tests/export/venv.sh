#!/usr/bin/env bash
# The torch venv (.deps/export-venv, about 6 GB) for make test-export and make demo-model
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.deps/export-venv
if ! cmp -s tests/export/requirements.txt "$VENV/requirements.installed" 2>/dev/null; then
    echo "==> python venv $VENV (torch, open_clip_torch; a few minutes)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r tests/export/requirements.txt
    cp tests/export/requirements.txt "$VENV/requirements.installed"
fi
