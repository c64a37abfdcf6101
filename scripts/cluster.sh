#!/usr/bin/env bash
# The project's own PostgreSQL 15 cluster for `make run`, the golden SQL tests and the client
# tests: data under .run/ (ignored), run by the non-root user from setup.sh, on a free port.
#   cluster.sh start   initdb if needed, start, create database pg_clip; prints nothing else
#   cluster.sh stop    stop it if running
#   cluster.sh env     print PGHOST/PGPORT/PGUSER/PGDATABASE exports for the running cluster
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUN="$ROOT/.run"
PGDATA="$RUN/pgdata"
BIN=/usr/lib/postgresql/15/bin
DB_USER="${PG_CLIP_DB_USER:-pgclip}"
as_db() { sudo -u "$DB_USER" "$@"; }

port() { cat "$RUN/port"; }

case "${1:-}" in
start)
    mkdir -p "$RUN" && chown "$DB_USER" "$RUN"
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        as_db "$BIN/initdb" -D "$PGDATA" -U "$DB_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if as_db "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then exit 0; fi
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$RUN/port"
    mkdir -p "$RUN/sock" && chown "$DB_USER" "$RUN/sock"
    cat > "$RUN/pg_clip.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $(port)
unix_socket_directories = '$RUN/sock'
pg_clip.onnxruntime_library = '$ROOT/.deps/onnxruntime/libonnxruntime.so.1.32.0'
pg_clip.model_dir = '$ROOT/models'
CONF
    grep -q "include_if_exists = '$RUN/pg_clip.conf'" "$PGDATA/postgresql.conf" ||
        echo "include_if_exists = '$RUN/pg_clip.conf'" | as_db tee -a "$PGDATA/postgresql.conf" >/dev/null
    as_db "$BIN/pg_ctl" -D "$PGDATA" -l "$RUN/postgres.log" -w -t 60 start >/dev/null
    as_db psql -h 127.0.0.1 -p "$(port)" -d postgres -tAqc "SELECT 1 FROM pg_database WHERE datname = 'pg_clip'" | grep -q 1 ||
        as_db createdb -h 127.0.0.1 -p "$(port)" pg_clip
    ;;
stop)
    if [ -f "$PGDATA/PG_VERSION" ] && as_db "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        as_db "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    ;;
env)
    echo "export PGHOST=127.0.0.1 PGPORT=$(port) PGUSER=$DB_USER PGDATABASE=pg_clip"
    ;;
*)
    echo "usage: $0 start|stop|env" >&2; exit 2
    ;;
esac
