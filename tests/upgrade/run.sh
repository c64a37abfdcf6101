#!/usr/bin/env bash
# Upgrade and dump/restore tests against the project's cluster, with the installed extension:
#   run.sh <released version> <current version> <pg_regress> <bindir>
# 1. ALTER EXTENSION pg_clip UPDATE from the release leaves the catalog a fresh install has:
#    the same pg_dump --binary-upgrade schema (every member object, definition and privilege),
#    and the contents golden of make test-regress passes on the upgraded database.
# 2. A database used under the release (tests/upgrade/populate.sql) answers the same queries
#    (tests/upgrade/answers.sql) after the upgrade, and again after pg_dump and pg_restore into
#    a new database, where a new row still goes through the triggers, refresh and scoring.
set -euo pipefail
RELEASED=$1 VERSION=$2 PG_REGRESS=$3 PG_BIN=$4
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$ROOT/.run/upgrade"
cd "$ROOT"
export PG_CLIP_ROOT="$ROOT"
eval "$(./scripts/cluster.sh env)"
rm -rf "$OUT" && mkdir -p "$OUT"
q() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "upgrade test: $*" >&2; exit 1; }

# the schema of the extension's members, without what differs between any two databases
member_schema() {
    "$PG_BIN/pg_dump" --binary-upgrade --schema-only -d "$1" |
        grep -vE "binary_upgrade_(set_next|set_missing|create_empty_extension)|^-- Dumped|^\\\\(un)?restrict|relfrozenxid|WHERE oid = '[0-9]+'"
}

echo "--- catalog: $RELEASED upgraded to $VERSION against a fresh $VERSION"
for db in pg_clip_upgraded_empty pg_clip_fresh; do ./scripts/cluster.sh recreate-db $db; done
q -d pg_clip_upgraded_empty -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_clip VERSION '$RELEASED' CASCADE" \
    -c "ALTER EXTENSION pg_clip UPDATE"
q -d pg_clip_fresh -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_clip CASCADE"
[ "$(q -d pg_clip_upgraded_empty -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pg_clip'")" = "$VERSION" ] ||
    fail "ALTER EXTENSION pg_clip UPDATE did not reach $VERSION"
member_schema pg_clip_upgraded_empty > "$OUT/upgraded.schema"
member_schema pg_clip_fresh > "$OUT/fresh.schema"
diff -u "$OUT/fresh.schema" "$OUT/upgraded.schema" || fail "the upgraded catalog differs from a fresh install (above)"
"$PG_REGRESS" --use-existing --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" --dbname=pg_clip_upgraded_empty \
    --inputdir=tests/pg_regress --outputdir="$OUT/regress" --bindir="$PG_BIN" contents ||
    { cat "$OUT/regress/regression.diffs"; fail "the contents golden differs after the upgrade"; }

# the SQL reference lists every routine a user may call, with its signature as installed
missing=$(q -d pg_clip_fresh -Atc "SELECT format('clip.%s(%s)', p.proname, replace(pg_get_function_identity_arguments(p.oid), 'IN ', ''))
                                   FROM pg_proc p WHERE p.pronamespace = 'clip'::regnamespace AND p.proname !~ '^_' ORDER BY 1" |
          while read -r sig; do grep -qF "\`$sig\`" docs/reference.md || echo "$sig"; done)
[ -z "$missing" ] || fail "docs/reference.md does not list: $missing"

echo "--- a database used under $RELEASED: upgraded, then dumped and restored"
./scripts/cluster.sh recreate-db pg_clip_upgrade
q -d pg_clip_upgrade -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_clip VERSION '$RELEASED' CASCADE"
q -d pg_clip_upgrade -f tests/upgrade/populate.sql > "$OUT/populate.out"
q -d pg_clip_upgrade -f tests/upgrade/answers.sql > "$OUT/released.out"
q -d pg_clip_upgrade -c "ALTER EXTENSION pg_clip UPDATE"
q -d pg_clip_upgrade -f tests/upgrade/answers.sql > "$OUT/upgraded.out"
diff -u "$OUT/released.out" "$OUT/upgraded.out" || fail "answers changed with the upgrade (above)"
# the release's manager may still refresh: it was given EXECUTE on the new version's functions
q -d pg_clip_upgrade -c "SET ROLE clip_test_manager" -c "SET client_min_messages = warning" \
    -c "INSERT INTO photos SELECT 200, 'copy', img FROM photos WHERE id = 1" -c "CALL clip.refresh('photos')" \
    -c "DELETE FROM photos WHERE id = 200" -c "CALL clip.refresh('photos')" ||
    fail "a manager made under $RELEASED cannot refresh after the upgrade"

"$PG_BIN/pg_dump" -Fc -d pg_clip_upgrade -f "$OUT/pg_clip.dump"
./scripts/cluster.sh recreate-db pg_clip_restored
"$PG_BIN/pg_restore" --exit-on-error -d pg_clip_restored "$OUT/pg_clip.dump"
# (the documented step after a restore: the HNSW indexes are not in a dump)
q -d pg_clip_restored -c "SELECT * FROM clip.rebuild_indexes()" > "$OUT/rebuilt.out"
for db in pg_clip_upgrade pg_clip_restored; do
    q -d $db -Atc "SELECT last_value FROM clip.refresh_queue_seq_seq" > "$OUT/$db.seq"
done
cmp -s "$OUT/pg_clip_upgrade.seq" "$OUT/pg_clip_restored.seq" || fail "the queue's sequence did not come back"
q -d pg_clip_restored -f tests/upgrade/answers.sql > "$OUT/restored.out"
diff -u "$OUT/released.out" "$OUT/restored.out" || fail "answers differ after pg_dump and pg_restore (above)"
echo "--- rows $RELEASED recorded against a model's own failure (38000) are put back in line"
./scripts/cluster.sh recreate-db pg_clip_upgrade_38000
q -d pg_clip_upgrade_38000 -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_clip VERSION '$RELEASED' CASCADE"
q -d pg_clip_upgrade_38000 >/dev/null <<'SQL'
SET client_min_messages = warning;
SET pg_clip.device = 'cpu';
SELECT name FROM clip.register_model('tiny', 'tiny-clip') \gset
\getenv root PG_CLIP_ROOT
CREATE TABLE shots (id int PRIMARY KEY, img bytea);
INSERT INTO shots VALUES (1, pg_read_binary_file(:'root' || '/tests/images/photos/rocket.jpg')),
                         (2, pg_read_binary_file(:'root' || '/tests/images/edge/truncated.jpg'));
SELECT clip.add_collection('shots', 'shots', 'id', 'img', 'tiny');
-- as 0.1.0 recorded a batch a batch-1 graph refused: every row, SQLSTATE 38000
INSERT INTO clip.embedding_error (collection, image_id, sqlstate, message)
VALUES ('shots', 1, '38000', 'visual model failed: Got invalid dimensions for input: image');
SQL
q -d pg_clip_upgrade_38000 -c "SET client_min_messages = warning" -c "ALTER EXTENSION pg_clip UPDATE" \
    -c "SET pg_clip.device = 'cpu'" -c "CALL clip.refresh('shots')"
got=$(q -d pg_clip_upgrade_38000 -Atc "SELECT (SELECT string_agg(image_id::text, ',' ORDER BY image_id) FROM clip.embedding WHERE collection = 'shots')
                                              || ' / ' || (SELECT string_agg(image_id || ':' || sqlstate, ',' ORDER BY image_id) FROM clip.embedding_error WHERE collection = 'shots')")
[ "$got" = "1 / 2:22023" ] || fail "after the upgrade and a refresh: embedded / failed = '$got', expected '1 / 2:22023'"

echo "upgrade from $RELEASED, catalog, answers and dump/restore: ok ($(grep -c . "$OUT/released.out") lines of answers)"
