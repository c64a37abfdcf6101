#!/usr/bin/env bash
# Install what pg_clip needs on a fresh Debian 12 machine, as root; skip what is already there.
# Every step is idempotent, so `make run` and `make test` call this first and it costs
# seconds once everything is present.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEPS="$ROOT/.deps"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.0
PGVECTOR_VERSION=0.8.0
ORT_VERSION=1.32.0
DB_USER="${PG_CLIP_DB_USER:-pgclip}"
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (it installs Debian packages and creates the database user)" >&2; exit 1; }
mkdir -p "$DEPS"

# 1. Debian packages: PostgreSQL 15 server + headers, clang for pgrx's bindgen, sudo for --runas
#    and Chromium with Node for the web app's browser tests
PKGS="postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config sudo curl unzip python3-venv chromium"
command -v node >/dev/null || PKGS="$PKGS nodejs"
command -v npm >/dev/null || PKGS="$PKGS npm"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    say "apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# 2. pgvector, built from Debian trixie's source package (bookworm has no package for PG15)
SHAREDIR="$($PG_CONFIG --sharedir)"
if ! grep -q "default_version = '$PGVECTOR_VERSION'" "$SHAREDIR/extension/vector.control" 2>/dev/null; then
    say "building pgvector $PGVECTOR_VERSION from Debian's source package"
    D="$DEPS/apt-src"; mkdir -p "$D/lists/partial"
    echo 'deb-src http://deb.debian.org/debian trixie main' > "$D/sources.list"
    A=(-o "Dir::Etc::sourcelist=$D/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$D/lists")
    # the _apt sandbox warning is harmless: root downloads into a root-owned folder
    (cd "$D" && apt-get "${A[@]}" update -qq && apt-get "${A[@]}" source --download-only pgvector 2>&1 | grep -v "^W: " || true)
    [ -f "$D/pgvector_$PGVECTOR_VERSION.orig.tar.gz" ] || {
        echo "setup.sh: Debian trixie no longer carries pgvector $PGVECTOR_VERSION ($(ls "$D"/pgvector_*.orig.tar.gz 2>/dev/null))" >&2; exit 1; }
    tar -C "$D" -xzf "$D/pgvector_$PGVECTOR_VERSION.orig.tar.gz"
    make -s -C "$D/pgvector-$PGVECTOR_VERSION" USE_PGXS=1 PG_CONFIG=$PG_CONFIG OPTFLAGS="" >/dev/null
    make -s -C "$D/pgvector-$PGVECTOR_VERSION" USE_PGXS=1 PG_CONFIG=$PG_CONFIG install >/dev/null
fi

# 3. cargo-pgrx, exactly the version the crate pins
if [ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $PGRX_VERSION" ]; then
    say "cargo install cargo-pgrx $PGRX_VERSION (several minutes on 2 cores)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi
if ! grep -q "^pg15 *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    say "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

# 4. ONNX Runtime, the CPU library from the PyPI wheel (hash-pinned), into .deps/onnxruntime
ORT_LIB="$DEPS/onnxruntime/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$ORT_LIB" ]; then
    say "fetching ONNX Runtime $ORT_VERSION from PyPI"
    rm -rf "$DEPS/wheels" && mkdir -p "$DEPS/wheels" "$DEPS/onnxruntime"
    python3 -m pip download --quiet --no-deps --only-binary :all: --python-version 3.11 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
        --require-hashes -r "$ROOT/scripts/onnxruntime.txt" -d "$DEPS/wheels"
    unzip -q -o -j "$DEPS"/wheels/onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$DEPS/onnxruntime"
fi

# 5. The OS user that runs the database servers (PostgreSQL refuses root)
if ! id "$DB_USER" >/dev/null 2>&1; then
    say "creating OS user $DB_USER"
    useradd -m -s /bin/bash "$DB_USER"
fi
# it must reach the checkout's models, images and ONNX Runtime: grant traverse (x) on parents
d="$ROOT"
while [ "$d" != "/" ]; do
    sudo -u "$DB_USER" test -x "$d" || { say "chmod o+x $d (so $DB_USER can reach the checkout)"; chmod o+x "$d"; }
    d="$(dirname "$d")"
done
if ! sudo -u "$DB_USER" test -r "$ROOT/models/tiny-clip/config.json" -a -r "$ORT_LIB"; then
    echo "setup.sh: $DB_USER cannot read $ROOT (check file modes)" >&2; exit 1
fi

# 6. pgspot, the linter for extension scripts (search_path and SECURITY DEFINER hazards), in a
#    venv of its own: make test runs it over the installed script
LINT="$DEPS/lint"
if [ "$("$LINT/bin/pgspot" --version 2>/dev/null)" != "pgspot 0.9.4" ]; then
    say "python venv with pgspot 0.9.4"
    rm -rf "$LINT" && python3 -m venv "$LINT" && "$LINT/bin/pip" install -q pgspot==0.9.4
fi

# 7. the project's Python tools in .venv (pinned in bench/requirements.txt): the model and
#    fixture generators and the reference pipelines that make test compares against
if ! cmp -s "$ROOT/bench/requirements.txt" "$ROOT/.venv/requirements.installed" 2>/dev/null; then
    say "python venv .venv (bench/requirements.txt)"
    python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install -q -r "$ROOT/bench/requirements.txt"
    cp "$ROOT/bench/requirements.txt" "$ROOT/.venv/requirements.installed"
fi

# 8. playwright-core (pinned in web/tests/browser/package-lock.json) drives Debian's Chromium
#    in the web app's browser tests; it downloads no browser
B="$ROOT/web/tests/browser"
if ! cmp -s "$B/package-lock.json" "$B/node_modules/.package-lock.installed" 2>/dev/null; then
    say "npm ci in web/tests/browser (playwright-core)"
    (cd "$B" && npm ci --silent --no-audit --no-fund)
    cp "$B/package-lock.json" "$B/node_modules/.package-lock.installed"
fi

# 9. Schemathesis (pinned) fuzzes the web app's API from its OpenAPI description
if ! "$DEPS/schemathesis-venv/bin/schemathesis" --version 2>/dev/null | grep -q "4.32.5"; then
    say "python venv .deps/schemathesis-venv with schemathesis 4.32.5"
    rm -rf "$DEPS/schemathesis-venv" && python3 -m venv "$DEPS/schemathesis-venv"
    "$DEPS/schemathesis-venv/bin/pip" install -q schemathesis==4.32.5
fi

# 10. rustfmt and clippy come with the machine's toolchain (no other can be fetched): say so
#    plainly if they are missing rather than fail inside make test-lint
for tool in fmt clippy; do
    cargo "$tool" --version >/dev/null 2>&1 || { echo "setup: cargo $tool is missing: install the toolchain's $tool component" >&2; exit 1; }
done
