#!/usr/bin/env bash
# Fetch a real CLIP export in the open_clip / immich layout from Hugging Face:
#   models/fetch_model.sh [ViT-B-32__openai] [dest-dir]
# then, as a superuser:  SELECT clip.register_model('vit-b-32', '<dest-dir>');
#
# Checksums: models/<name>.sha256 pins the files' SHA-256. None is committed yet (the machines
# this project is built on cannot reach the hub); on the first fetch the script writes the
# file (trust on first use) for you to review and commit, and every later fetch verifies it.
set -euo pipefail
NAME="${1:-ViT-B-32__openai}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="${2:-$HERE/$NAME}"
BASE="${HF_ENDPOINT:-https://huggingface.co}/immich-app/$NAME/resolve/main"
FILES="config.json visual/model.onnx visual/preprocess_cfg.json textual/model.onnx textual/tokenizer.json textual/tokenizer_config.json"
SUMS="$HERE/$NAME.sha256"

if ! curl -fsS -m 15 -o /dev/null -I "$BASE/config.json"; then
    echo "fetch_model.sh: cannot reach $BASE (no internet access here?)." >&2
    echo "  Copy an exported model folder (the six files: $FILES) to this machine instead." >&2
    exit 1
fi
for f in $FILES; do
    mkdir -p "$DEST/$(dirname "$f")"
    echo "fetching $f"
    curl -fL --retry 3 -o "$DEST/$f.part" "$BASE/$f" && mv "$DEST/$f.part" "$DEST/$f"
done
if [ -f "$SUMS" ]; then
    (cd "$DEST" && sha256sum -c --quiet "$SUMS") || { echo "fetch_model.sh: checksum mismatch, see $SUMS" >&2; exit 1; }
    echo "checksums verified against $SUMS"
else
    (cd "$DEST" && sha256sum $FILES) > "$SUMS"
    echo "first fetch: wrote $SUMS (review and commit it; later fetches verify against it)"
fi
echo "done: SELECT clip.register_model('$(echo "$NAME" | tr 'A-Z_' 'a-z-' | sed 's/--*/-/g')', '$DEST');"
