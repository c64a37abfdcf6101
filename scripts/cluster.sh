#!/usr/bin/env bash
# The project's own PostgreSQL 15 cluster for `make run`, the golden SQL tests and the client
# tests: data under .run/ (ignored), run by the non-root user from setup.sh, on a free port.
#   cluster.sh start   initdb if needed, start (restart when pg_clip.so was installed since),
#                      create database pg_clip; prints nothing else
#   cluster.sh stop    stop it if running
#   cluster.sh env     print PGHOST/PGPORT/PGUSER/PGDATABASE exports for the running cluster
#   cluster.sh recreate-db NAME   drop (closing its sessions) and create a database
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
    if as_db "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        # the cluster preloads pg_clip, and its backends fork from the postmaster with the
        # library it loaded at start: after `make install` of a newer one, restart, or tests and
        # measurements would run the old code
        if [ "$("$BIN/pg_config" --pkglibdir)/pg_clip.so" -nt "$PGDATA/postmaster.pid" ]; then
            as_db "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
        else
            exit 0
        fi
    fi
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$RUN/port"
    mkdir -p "$RUN/sock" && chown "$DB_USER" "$RUN/sock"
    cat > "$RUN/pg_clip.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $(port)
unix_socket_directories = '$RUN/sock'
pg_clip.onnxruntime_library = '$ROOT/.deps/onnxruntime/libonnxruntime.so.1.32.0'
pg_clip.model_dir = '$ROOT/models'
# the auto-refresh worker watches the client tests' database
shared_preload_libraries = 'pg_clip'
pg_clip.auto_refresh = on
pg_clip.auto_refresh_database = 'pg_clip_client'
pg_clip.auto_refresh_naptime = 1
# an ordinary login role; each collection's batches run as the collection's owner
pg_clip.auto_refresh_role = 'clip_worker'
CONF
    grep -q "include_if_exists = '$RUN/pg_clip.conf'" "$PGDATA/postgresql.conf" ||
        echo "include_if_exists = '$RUN/pg_clip.conf'" | as_db tee -a "$PGDATA/postgresql.conf" >/dev/null
    as_db "$BIN/pg_ctl" -D "$PGDATA" -l "$RUN/postgres.log" -w -t 60 start >/dev/null
    as_db psql -h 127.0.0.1 -p "$(port)" -d postgres -tAqc "SELECT 1 FROM pg_roles WHERE rolname = 'clip_worker'" | grep -q 1 ||
        as_db psql -h 127.0.0.1 -p "$(port)" -d postgres -qc "CREATE ROLE clip_worker LOGIN"
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
recreate-db)
    # a fresh database for a test run; its sessions, the auto-refresh worker's included, are
    # closed first (DROP DATABASE ... FORCE does not end background workers)
    db="${2:?usage: $0 recreate-db NAME}"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        as_db psql -h 127.0.0.1 -p "$(port)" -d postgres -qAt -v ON_ERROR_STOP=1 -v db="$db" >/dev/null <<'SQL'
SELECT format('ALTER DATABASE %I ALLOW_CONNECTIONS false', datname) FROM pg_database WHERE datname = :'db' \gexec
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();
SQL
        as_db dropdb -h 127.0.0.1 -p "$(port)" --if-exists "$db" 2>/dev/null && break
        [ "$attempt" = 10 ] && { echo "cluster.sh: cannot drop database $db" >&2; exit 1; }
        sleep 1
    done
    as_db createdb -h 127.0.0.1 -p "$(port)" "$db"
    ;;
*)
    echo "usage: $0 start|stop|env|recreate-db NAME" >&2; exit 2
    ;;
esac
