#!/usr/bin/env bash
# Part (8) of make bench: what safety on a shared server costs on the hot paths, side by side in
# one run with the tiny model (the costs are SQL, not model time):
#   - a user's single-row INSERT into a collection's source table, with the queueing trigger
#     (it checks how it fired and queues under row security) and into the same table without;
#   - clip.identify by vector against 1,000 references (HNSW) and 100 (exact), and a k = 10
#     query on a collection's view, as the superuser (exempt from row security) and as a role
#     that may read the source (row security applies: one hashed subplan per query).
# Latencies are taken inside the server (clock_timestamp around each call). Expects the project
# cluster's environment; writes "security ..." lines to $1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$1"
export PGDATABASE=pg_clip_bench_security
"$ROOT/scripts/cluster.sh" recreate-db "$PGDATABASE"
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

q -At <<'SQL' | grep "^security " | tee -a "$OUT"
SET client_min_messages = warning;
CREATE EXTENSION pg_clip CASCADE;
SELECT clip.register_model('tiny', 'tiny-clip') \gset
DROP ROLE IF EXISTS bench_reader;
CREATE ROLE bench_reader;
CREATE TABLE with_trigger (id bigint PRIMARY KEY, img bytea);
CREATE TABLE without_trigger (id bigint PRIMARY KEY, img bytea);
SELECT clip.add_collection('trig', 'with_trigger', 'id', 'img', 'tiny');
-- reference sets of 100 and 1,000 generated unit vectors, their index built once
CREATE TABLE refs_100 (id bigint PRIMARY KEY, label text NOT NULL, img bytea);
CREATE TABLE refs_1000 (id bigint PRIMARY KEY, label text NOT NULL, img bytea);
INSERT INTO refs_100 SELECT g, 'card ' || g, NULL FROM generate_series(1, 100) g;
INSERT INTO refs_1000 SELECT g, 'card ' || g, NULL FROM generate_series(1, 1000) g;
SELECT clip.add_reference_set('refs_100', 'refs_100', 'id', 'img', 'label', 'tiny');
SELECT clip.add_reference_set('refs_1000', 'refs_1000', 'id', 'img', 'label', 'tiny');
-- (found by name pattern, so that the script also runs against earlier versions for comparison)
SELECT format('DROP INDEX clip.%I', relname) FROM pg_class WHERE relname ~ '^pg_clip_refs_' AND relkind = 'i' \gexec
SELECT setseed(0.42);
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT s, 'tiny', g, m.stamp, '\x00', l2_normalize((SELECT array_agg(random() - 0.5) FROM generate_series(1, 64) WHERE g > 0)::vector)
FROM unnest(ARRAY['refs_100', 'refs_1000']) s CROSS JOIN LATERAL generate_series(1, substr(s, 6)::int) g
CROSS JOIN clip.model m WHERE m.name = 'tiny';
SELECT clip._index_collection(s) FROM unnest(ARRAY['refs_100', 'refs_1000']) s;
ANALYZE clip.embedding;
CREATE TABLE queries AS
SELECT g AS qid, l2_normalize((SELECT array_agg(random() - 0.5) FROM generate_series(1, 64) WHERE g > 0)::vector) AS v
FROM generate_series(1, 300) g;
GRANT SELECT ON refs_100, refs_1000, queries TO bench_reader;
CREATE TABLE lat (who text, what text, ms float8);
GRANT INSERT ON lat TO bench_reader;
CREATE FUNCTION time_queries(what text, q text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; t0 timestamptz;
BEGIN
    FOR r IN SELECT qid, v FROM queries ORDER BY qid LOOP
        t0 := clock_timestamp();
        EXECUTE q USING r.v;
        INSERT INTO lat VALUES (current_user, what, extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END $$;
-- single-row INSERT statements, alternating between the two tables
DO $$
DECLARE t0 timestamptz;
BEGIN
    FOR i IN 1..2000 LOOP
        t0 := clock_timestamp();
        INSERT INTO with_trigger VALUES (i, NULL);
        INSERT INTO lat VALUES ('owner', 'insert_with_trigger', extract(epoch FROM clock_timestamp() - t0) * 1000);
        t0 := clock_timestamp();
        INSERT INTO without_trigger VALUES (i, NULL);
        INSERT INTO lat VALUES ('owner', 'insert_without_trigger', extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END $$;
-- warm both roles' plans, then time them alternately
SELECT time_queries('warm', 'SELECT * FROM clip.identify($1, ''refs_1000'')');
SELECT time_queries('identify_1000', 'SELECT * FROM clip.identify($1, ''refs_1000'')');
SELECT time_queries('identify_100', 'SELECT * FROM clip.identify($1, ''refs_100'')');
SELECT time_queries('view_k10', 'SELECT image_id FROM clip.refs_1000_embeddings ORDER BY embedding <=> $1 LIMIT 10');
SET ROLE bench_reader;
SELECT time_queries('warm', 'SELECT * FROM clip.identify($1, ''refs_1000'')');
SELECT time_queries('identify_1000', 'SELECT * FROM clip.identify($1, ''refs_1000'')');
SELECT time_queries('identify_100', 'SELECT * FROM clip.identify($1, ''refs_100'')');
SELECT time_queries('view_k10', 'SELECT image_id FROM clip.refs_1000_embeddings ORDER BY embedding <=> $1 LIMIT 10');
RESET ROLE;
SELECT 'security what=' || what || ' who=' || CASE WHEN who = 'bench_reader' THEN 'reader' ELSE 'superuser' END
       || ' p50_ms=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3)
       || ' p99_ms=' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) || ' n=' || count(*)
FROM lat WHERE what <> 'warm' GROUP BY what, who ORDER BY what, who;
DROP TABLE lat;
SQL
q -c "DROP OWNED BY bench_reader; DROP ROLE bench_reader" >/dev/null
