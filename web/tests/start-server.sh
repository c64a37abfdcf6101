# Sourced by web/tests/run.sh and bench/web.sh: start_web DIR [FLAGS...] starts the built
# pg_clip-web on a free localhost port (stdout and stderr into DIR/server.out and server.err),
# stops it when the caller exits, and sets $url to its base URL from the line it prints.
start_web() {
    local dir="$1"; shift
    "$ROOT/target/release/pg_clip-web" --listen 127.0.0.1:0 "$@" >"$dir/server.out" 2>"$dir/server.err" &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 100); do grep -q "^pg_clip web: http" "$dir/server.out" && break; sleep 0.1; done
    url=$(sed -n 's|^pg_clip web: \(http://[^/]*\)/.*|\1|p' "$dir/server.out")
    [ -n "$url" ] || { cat "$dir/server.err" >&2; return 1; }
}
