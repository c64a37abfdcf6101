-- pg_clip 0.1.0 to 0.2.0, assembled by scripts/upgrade-script.py: do not edit.
\echo Use "ALTER EXTENSION pg_clip UPDATE TO '0.2.0'" to load this file. \quit

-- pg_clip 0.2.0 schema: run once, after schema/0.1.0.sql on a fresh install and alone in the
-- upgrade from 0.1.0. Frozen once 0.2.0 is released.
-- pg_clip run-once schema

-- the queue's sequence goes with its rows, so that entries queued after a restore do not take
-- the numbers of restored ones
SELECT pg_catalog.pg_extension_config_dump('clip.refresh_queue_seq_seq', '');

-- requires:
--   schema_0_2_0

-- pg_clip collections: a user's image table kept embedded, incrementally, in committed batches.
-- The bookkeeping is set-based SQL; the model work is clip.try_embed_images (Rust).

-- A collection's row, or ERROR 42704 naming it.
CREATE OR REPLACE FUNCTION clip._collection(name text) RETURNS clip.collection LANGUAGE plpgsql STABLE AS $$
DECLARE c clip.collection;
BEGIN
    SELECT * INTO c FROM clip.collection WHERE clip.collection.name = _collection.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" does not exist', name USING ERRCODE = '42704',
            HINT = 'Create it with SELECT clip.add_collection(name, source_table, id_column, image_column).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = c.source) THEN
        RAISE EXCEPTION 'the source table of collection "%" was dropped', c.name USING ERRCODE = '42P01',
            HINT = format('Drop the collection: SELECT clip.drop_collection(%L);', c.name);
    END IF;
    -- its columns as they were when it was made (a rename or a new type breaks it, visibly)
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = c.source AND a.attname = c.id_column AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.atttypid IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype))
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = c.source AND a.attname = c.image_column AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'collection "%" is broken: % no longer has an integer id column "%" and an image column "%"',
            c.name, c.source, c.id_column, c.image_column USING ERRCODE = '55000',
            HINT = format('Rename the columns back, or drop the collection (SELECT clip.drop_collection(%L)) and add it again.', c.name);
    END IF;
    IF NOT clip._may_read(c) THEN
        RAISE EXCEPTION 'permission denied for collection "%"', c.name USING ERRCODE = '42501',
            DETAIL = 'A collection''s embeddings, scores, labels and errors are for roles that may SELECT its source table.',
            HINT = format('Ask the owner of %s for SELECT on it.', c.source);
    END IF;
    RETURN c;
END $$;

-- The one rule of who sees a collection's data: roles that may SELECT its source table (a
-- source that is gone is nobody's to read). The row-security policies of every table keyed by
-- collection say the same through clip._readable_collections().
CREATE OR REPLACE FUNCTION clip._may_read(c clip.collection) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(pg_catalog.has_table_privilege(c.source, 'SELECT'), false)
$$;

-- The names of the collections the current role may read, for the row-security policies: a
-- policy written as `collection IN (SELECT r FROM clip._readable_collections() r)` is inlined
-- into one hashed subplan per query, not a privilege check per row.
CREATE OR REPLACE FUNCTION clip._readable_collections() RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT c.name FROM clip.collection c WHERE clip._may_read(c)
$$;

CREATE OR REPLACE FUNCTION clip._embeddings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE clip.embedding_version v SET version = v.version + 1
    WHERE v.collection IN (SELECT DISTINCT t.collection FROM pg_clip_changed t);
    RETURN NULL;
END $$;
-- (a trigger with a transition table takes one event, hence three)
CREATE OR REPLACE TRIGGER embedding_version_ins AFTER INSERT ON clip.embedding REFERENCING NEW TABLE AS pg_clip_changed
    FOR EACH STATEMENT EXECUTE FUNCTION clip._embeddings_changed();
CREATE OR REPLACE TRIGGER embedding_version_upd AFTER UPDATE ON clip.embedding REFERENCING NEW TABLE AS pg_clip_changed
    FOR EACH STATEMENT EXECUTE FUNCTION clip._embeddings_changed();
CREATE OR REPLACE TRIGGER embedding_version_del AFTER DELETE ON clip.embedding REFERENCING OLD TABLE AS pg_clip_changed
    FOR EACH STATEMENT EXECUTE FUNCTION clip._embeddings_changed();

CREATE OR REPLACE VIEW clip.refresh_progress WITH (security_invoker = true) AS
SELECT collection, pid, finished_at IS NULL AND started_at IS NOT NULL AS running, total, done,
       embedded, failed, removed, unchanged, started_at, updated_at, finished_at,
       round((done / greatest(extract(epoch FROM coalesce(finished_at, updated_at) - started_at), 0.001))::numeric, 2)
           AS images_per_s
FROM clip.refresh_state;

-- The source table's triggers: one statement-level trigger per event, with transition tables.
-- They run with the rights of the role that wrote the rows (no SECURITY DEFINER), so nothing of a
-- user's (a relation named like a transition table, a cast, an operator) runs with more rights
-- than its author has. That role may add entries to clip.refresh_queue for the collections whose
-- source it may write, and only those (the table's row-security policy). An UPDATE queues only
-- rows whose image (or id) changed; a TRUNCATE queues one entry without an id, and the next pass
-- checks every embedding of the collection. A failure here (the collection is broken: its id
-- column renamed or retyped) is a WARNING and the user's write goes through.
CREATE OR REPLACE FUNCTION clip._queue_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    coll text := TG_ARGV[0];
    idc  text := TG_ARGV[1];
    imc  text := TG_ARGV[2];
BEGIN
    -- fired as the collection's own trigger: after a statement, on its source, with the
    -- transition tables (otherwise the names below would not be the transition tables)
    IF TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER' OR NOT EXISTS (
           SELECT 1 FROM pg_catalog.pg_trigger t JOIN clip.collection c ON c.name = coll
           WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME
             AND (c.source = TG_RELID OR TG_RELID IN (SELECT p.relid FROM pg_catalog.pg_partition_tree(c.source) p))
             AND (TG_OP = 'TRUNCATE' OR ((TG_OP IN ('INSERT', 'UPDATE')) = (t.tgnewtable IS NOT NULL)
                                         AND (TG_OP IN ('DELETE', 'UPDATE')) = (t.tgoldtable IS NOT NULL)))) THEN
        RAISE EXCEPTION 'clip._queue_changes is the trigger of a collection''s source table'
            USING ERRCODE = '39P01', HINT = 'clip.add_collection creates it; do not attach it elsewhere.';
    END IF;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            EXECUTE format('INSERT INTO clip.refresh_queue (collection, image_id) SELECT $1, %I::bigint FROM pg_clip_new',
                           idc) USING coll;
        ELSIF TG_OP = 'DELETE' THEN
            EXECUTE format('INSERT INTO clip.refresh_queue (collection, image_id) SELECT $1, %I::bigint FROM pg_clip_old',
                           idc) USING coll;
        ELSIF TG_OP = 'UPDATE' THEN
            EXECUTE format($q$
                INSERT INTO clip.refresh_queue (collection, image_id)
                SELECT $1, n.%1$I::bigint FROM pg_clip_new n LEFT JOIN pg_clip_old o ON o.%1$I = n.%1$I
                WHERE o.%1$I IS NULL OR o.%2$I IS DISTINCT FROM n.%2$I
                UNION
                SELECT $1, o.%1$I::bigint FROM pg_clip_old o LEFT JOIN pg_clip_new n ON n.%1$I = o.%1$I
                WHERE n.%1$I IS NULL $q$, idc, imc) USING coll;
        ELSE
            INSERT INTO clip.refresh_queue (collection, image_id) VALUES (coll, NULL);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_clip: collection "%" did not queue this change: %', coll, SQLERRM
            USING HINT = format('Fix or drop the collection (SELECT clip.drop_collection(%L)); CALL clip.refresh(%L) finds the rows it missed.', coll, coll);
    END;
    RETURN NULL;
END $$;

-- May the current role write collection `c`'s source table? (Who may queue its rows: the
-- policy on clip.refresh_queue.)
CREATE OR REPLACE FUNCTION clip._may_write_source(c clip.collection) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(pg_catalog.has_table_privilege(c.source, 'INSERT, UPDATE, DELETE, TRUNCATE'), false)
$$;

-- The name of a collection's HNSW index under a model: one per (collection, model), so that the
-- index of the model a collection is switching to is built beside the current one.
CREATE OR REPLACE FUNCTION clip._index_name(collection text, model text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'pg_clip_' || collection || '_' || left(md5(model), 8) || '_hnsw'
$$;

-- A collection's run-time objects, brought in line with its models: the view of its embeddings
-- under the current model, with their fixed dimension, and an HNSW (cosine) index on exactly that
-- expression and predicate for the current model and for the one it is switching to, so that
-- ORDER BY embedding <=> q LIMIT k on the view is an index scan. The next model's index is made by
-- clip.set_model, while that model has no rows (a scan, no graph to build), and grows with each
-- inserted row; at the switch only the view is made again. Indexes of models the collection no
-- longer uses are dropped if clip.embedding's lock comes within 50 ms, else on a later call: the
-- shared table is never locked long, so other collections' searches and refreshes go on.
-- SECURITY DEFINER: the index is on clip.embedding, which only the extension's owner may index,
-- and the views live in schema clip, where no one else may create. It reads only clip's own
-- tables and names only objects derived from a registered collection's (checked) name. The view
-- is security_invoker: a reader sees through it the rows clip.embedding's policy shows them.
CREATE OR REPLACE FUNCTION clip._index_collection(name text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c clip.collection;
    m record;
    view_name text := name || '_embeddings';
    view_says text;
    stale text;
    saved text := current_setting('lock_timeout');
    -- pgvector's schema, for its type and operator class in the statements below
    vec name := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector');
BEGIN
    SELECT * INTO c FROM clip.collection co WHERE co.name = _index_collection.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" does not exist', name USING ERRCODE = '42704';
    END IF;
    FOR m IN SELECT md.name, md.embed_dim FROM clip.model md WHERE md.name IN (c.model, c.next_model) LOOP
        IF to_regclass(format('clip.%I', clip._index_name(c.name, m.name))) IS NULL THEN
            EXECUTE format('CREATE INDEX %I ON clip.embedding USING hnsw ((embedding::%I.vector(%s)) %I.vector_cosine_ops)
                            WHERE collection = %L AND model = %L', clip._index_name(c.name, m.name), vec, m.embed_dim, vec,
                           c.name, m.name);
        END IF;
    END LOOP;
    -- (the view's comment names the model it reads)
    view_says := format('embeddings of collection %s under model %s', c.name, c.model);
    IF obj_description(to_regclass(format('clip.%I', view_name)), 'pg_class') IS DISTINCT FROM view_says THEN
        PERFORM clip._drop_collection_objects(name, false, true);
        EXECUTE format('CREATE VIEW clip.%I WITH (security_invoker = true) AS
                        SELECT image_id, embedding::%I.vector(%s) AS embedding, embedded_at
                        FROM clip.embedding WHERE collection = %L AND model = %L',
                       view_name, vec, (SELECT md.embed_dim FROM clip.model md WHERE md.name = c.model), c.name, c.model);
        EXECUTE format('COMMENT ON VIEW clip.%I IS %L', view_name, view_says);
        EXECUTE format('GRANT SELECT ON clip.%I TO PUBLIC', view_name);
    END IF;
    FOR stale IN
        SELECT i.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
        WHERE x.indrelid = 'clip.embedding'::regclass AND i.relname ~ ('^pg_clip_' || c.name || '_[0-9a-f]{8}_hnsw$')
          AND i.relname NOT IN (clip._index_name(c.name, c.model), clip._index_name(c.name, coalesce(c.next_model, c.model)))
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            EXECUTE format('DROP INDEX clip.%I', stale);
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', saved, true);
END $$;

-- pg_dump keeps a collection's views and triggers but not its HNSW indexes (they are on
-- clip.embedding, a table of the extension's, whose definition a dump leaves to CREATE
-- EXTENSION): after pg_restore, SELECT clip.rebuild_indexes() makes them again for every
-- collection the caller may read, or for one, and returns their names. CALL clip.refresh(name)
-- does it for its collection.
CREATE OR REPLACE FUNCTION clip.rebuild_indexes(collection text DEFAULT NULL) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE c clip.collection;
BEGIN
    IF collection IS NOT NULL THEN
        PERFORM clip._collection(collection);
    END IF;
    FOR c IN SELECT * FROM clip.collection co WHERE (rebuild_indexes.collection IS NULL OR co.name = rebuild_indexes.collection)
                                                AND clip._may_read(co) ORDER BY co.name LOOP
        PERFORM clip._index_collection(c.name);
        RETURN QUERY SELECT clip._index_name(c.name, c.model);
    END LOOP;
END $$;

-- Drop what clip made for collection `name` at run time: its views and its HNSW index. Also
-- SECURITY DEFINER (the owner of those objects drops them); `name` must have a collection's shape,
-- so nothing else can be named, and may be gone from clip.collection already. `attributes_only`:
-- the attribute view alone (a vocabulary detached); `embeddings_only`: the embeddings view alone.
CREATE OR REPLACE FUNCTION clip._drop_collection_objects(name text, attributes_only boolean DEFAULT false,
                                              embeddings_only boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE idx text;
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid collection name "%"', name USING ERRCODE = '22023';
    END IF;
    -- (looked up first: DROP ... IF EXISTS would say NOTICE for each one missing)
    IF NOT embeddings_only AND to_regclass(format('clip.%I', name || '_attributes')) IS NOT NULL THEN
        EXECUTE format('DROP VIEW clip.%I', name || '_attributes');
    END IF;
    IF NOT attributes_only AND to_regclass(format('clip.%I', name || '_embeddings')) IS NOT NULL THEN
        EXECUTE format('DROP VIEW clip.%I', name || '_embeddings');
    END IF;
    IF NOT attributes_only AND NOT embeddings_only THEN
        FOR idx IN
            SELECT i.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'clip.embedding'::regclass AND i.relname ~ ('^pg_clip_' || name || '_[0-9a-f]{8}_hnsw$')
        LOOP
            EXECUTE format('DROP INDEX clip.%I', idx);
        END LOOP;
    END IF;
END $$;

-- Move a collection to another model. The next clip.refresh builds the new model's embeddings
-- next to the old ones; queries (the view, search, similar) keep using the old set until the new
-- one is complete, then the collection switches and the old embeddings are deleted.
CREATE OR REPLACE FUNCTION clip.set_model(collection text, model text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE c clip.collection;
BEGIN
    c := clip._collection(set_model.collection);
    IF NOT EXISTS (SELECT 1 FROM clip.model WHERE name = set_model.model) THEN
        RAISE EXCEPTION 'model "%" is not registered', set_model.model USING ERRCODE = '42704';
    END IF;
    UPDATE clip.collection SET next_model = nullif(set_model.model, c.model) WHERE name = c.name;
    -- the next model's index, now, while it has no rows
    PERFORM clip._index_collection(c.name);
    RETURN CASE WHEN set_model.model = c.model THEN format('collection %s already uses model %s', c.name, c.model)
                ELSE format('collection %s will switch from %s to %s once CALL clip.refresh(%L) has embedded every row',
                            c.name, c.model, set_model.model, c.name) END;
END $$;

-- The type of a user column, or ERROR 42703 naming it.
CREATE OR REPLACE FUNCTION clip._column_type(source regclass, col text) RETURNS regtype LANGUAGE plpgsql STABLE AS $$
DECLARE t regtype;
BEGIN
    SELECT atttypid::regtype INTO t FROM pg_attribute
    WHERE attrelid = source AND attname = col AND attnum > 0 AND NOT attisdropped;
    IF t IS NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in %', col, source USING ERRCODE = '42703';
    END IF;
    RETURN t;
END $$;

CREATE OR REPLACE FUNCTION clip.add_collection(
    name text, source regclass, id_column text, image_column text, model text DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m text := coalesce(model, nullif(current_setting('pg_clip.model', true), ''));
    idtype regtype;
    imtype regtype;
    ev record;
BEGIN
    IF name !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid collection name "%"', name USING ERRCODE = '22023',
            HINT = 'A collection name is lower-case letters, digits and _, starting with a letter, at most 40 characters.';
    END IF;
    IF m IS NULL OR NOT EXISTS (SELECT 1 FROM clip.model WHERE clip.model.name = m) THEN
        RAISE EXCEPTION 'model "%" is not registered', coalesce(m, '(none)') USING ERRCODE = '42704',
            HINT = 'Pass a registered model, or SET pg_clip.model (see SELECT name FROM clip.model).';
    END IF;
    -- a table (or a partitioned one): reading a view or a foreign table would run its owner's code
    IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = source) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', source USING ERRCODE = '42809',
            HINT = 'A collection''s source is a plain or partitioned table; copy the rows of a view into one.';
    END IF;
    idtype := clip._column_type(source, id_column);
    IF idtype NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'id column "%" of % is %, not an integer type', id_column, source, idtype
            USING ERRCODE = '42804',
            HINT = format('Add one: ALTER TABLE %s ADD COLUMN clip_id bigint GENERATED ALWAYS AS IDENTITY UNIQUE;', source);
    END IF;
    -- one row per id, always: a NOT NULL column with a unique index on it alone, not partial
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = source AND a.attname = id_column AND a.attnotnull)
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                          ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                      WHERE i.indrelid = source AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
                        AND i.indexprs IS NULL AND a.attname = id_column) THEN
        RAISE EXCEPTION 'id column "%" of % must be NOT NULL and unique', id_column, source USING ERRCODE = '42P10',
            HINT = format('ALTER TABLE %s ADD PRIMARY KEY (%I); or ADD UNIQUE (%I) and SET NOT NULL.', source, id_column, id_column);
    END IF;
    imtype := clip._column_type(source, image_column);
    IF imtype NOT IN ('bytea'::regtype, 'text'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION 'image column "%" of % is %, not bytea or text', image_column, source, imtype
            USING ERRCODE = '42804', HINT = 'The image column holds the image bytes (bytea) or a path under pg_clip.image_root (text).';
    END IF;
    IF imtype <> 'bytea'::regtype AND coalesce(current_setting('pg_clip.image_root', true), '') = '' THEN
        RAISE EXCEPTION 'image column "%" holds paths but pg_clip.image_root is not set', image_column
            USING ERRCODE = '55000', HINT = 'A superuser sets pg_clip.image_root to the folder the paths are relative to.';
    END IF;
    INSERT INTO clip.collection (name, source, id_column, image_column, image_kind, model)
    VALUES (name, source, id_column, image_column, CASE WHEN imtype = 'bytea'::regtype THEN 'bytea' ELSE 'path' END, m);
    INSERT INTO clip.embedding_version (collection) VALUES (name);
    PERFORM clip._index_collection(name);
    PERFORM clip._source_triggers(clip._collection(name), true);
END $$;

-- The queueing triggers of a collection, on its source and, for a partitioned source, on every
-- partition (a statement trigger fires for the table a statement names: the parent's for writes
-- through the parent, a partition's for writes straight into it), made where missing, or all
-- dropped. CALL clip.refresh makes them for partitions attached since.
CREATE OR REPLACE FUNCTION clip._source_triggers(c clip.collection, make boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE rel regclass; ev record;
BEGIN
    FOR rel IN SELECT c.source UNION SELECT t.relid FROM pg_catalog.pg_partition_tree(c.source) t LOOP
        FOR ev IN SELECT * FROM (VALUES ('ins', 'INSERT', 'NEW TABLE AS pg_clip_new'),
                                        ('upd', 'UPDATE', 'OLD TABLE AS pg_clip_old NEW TABLE AS pg_clip_new'),
                                        ('del', 'DELETE', 'OLD TABLE AS pg_clip_old'),
                                        ('trunc', 'TRUNCATE', '')) AS v (suffix, event, refs)
        LOOP
            CONTINUE WHEN make = EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                         WHERE t.tgrelid = rel AND t.tgname = 'pg_clip_' || c.name || '_' || ev.suffix);
            IF make THEN
                EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s
                                FOR EACH STATEMENT EXECUTE FUNCTION clip._queue_changes(%L, %L, %L)',
                               'pg_clip_' || c.name || '_' || ev.suffix, ev.event, rel,
                               CASE WHEN ev.refs <> '' THEN 'REFERENCING ' || ev.refs ELSE '' END,
                               c.name, c.id_column, c.image_column);
            ELSE
                EXECUTE format('DROP TRIGGER %I ON %s', 'pg_clip_' || c.name || '_' || ev.suffix, rel);
            END IF;
        END LOOP;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION clip.drop_collection(name text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE c clip.collection;
BEGIN
    -- (not clip._collection: a collection whose source is gone or unreadable is dropped too)
    SELECT * INTO c FROM clip.collection WHERE clip.collection.name = drop_collection.name;
    IF NOT FOUND THEN
        PERFORM clip._collection(drop_collection.name);
    END IF;
    -- (a source that was dropped took its triggers with it)
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = c.source) THEN
        PERFORM clip._source_triggers(c, false);
    END IF;
    PERFORM clip._drop_scores(c.name);
    PERFORM clip._drop_collection_objects(c.name);
    DELETE FROM clip.feature_image_attribute f WHERE f.collection = c.name;
    DELETE FROM clip.collection WHERE clip.collection.name = drop_collection.name;
END $$;

-- Text-to-image search: the k images most similar to a text, through the collection's index.
CREATE OR REPLACE FUNCTION clip.search(collection text, query text, k int DEFAULT 10)
RETURNS TABLE (image_id bigint, similarity real) LANGUAGE plpgsql STABLE AS $$
DECLARE c clip.collection;
BEGIN
    c := clip._collection(search.collection);
    RETURN QUERY EXECUTE format('SELECT image_id, (1 - (embedding <=> $1))::real FROM clip.%I
                                 ORDER BY embedding <=> $1 LIMIT $2', c.name || '_embeddings')
        USING clip.embed_text(query, c.model), k;
END $$;

-- Image-to-image: the k images most similar to image `id` of the collection (itself excluded).
CREATE OR REPLACE FUNCTION clip.similar(collection text, id bigint, k int DEFAULT 10)
RETURNS TABLE (image_id bigint, similarity real) LANGUAGE plpgsql STABLE AS $$
-- ("similar" is an SQL keyword, so parameters are referred to by position)
DECLARE c clip.collection; q vector;
BEGIN
    c := clip._collection($1);
    SELECT e.embedding INTO q FROM clip.embedding e
    WHERE e.collection = c.name AND e.model = c.model AND e.image_id = $2;
    IF q IS NULL THEN
        RAISE EXCEPTION 'image % of collection "%" has no embedding', $2, c.name USING ERRCODE = '55000',
            HINT = format('Run CALL clip.refresh(%L) first, or see clip.embedding_error.', c.name);
    END IF;
    RETURN QUERY EXECUTE format('SELECT image_id, (1 - (embedding <=> $1))::real FROM clip.%I
                                 WHERE image_id <> $3 ORDER BY embedding <=> $1 LIMIT $2', c.name || '_embeddings')
        USING q, $3, $2;
END $$;

-- Failed rows are skipped until their image changes; this puts them back in line.
CREATE OR REPLACE FUNCTION clip.retry_failed(collection text) RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM clip.embedding_error e WHERE e.collection = retry_failed.collection RETURNING e.image_id)
    SELECT count(*) FROM gone
$$;

-- For a collection of file paths: queue the rows whose file no longer holds the bytes that were
-- embedded (or that failed), which no trigger can see, since the path did not change. Reads and
-- hashes every file. The next CALL clip.refresh re-embeds what it queued. Returns how many.
CREATE OR REPLACE FUNCTION clip.recheck_files(collection text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    c clip.collection := clip._collection(collection);
    n bigint;
BEGIN
    IF c.image_kind <> 'path' THEN
        RAISE EXCEPTION 'collection "%" stores image bytes, not file paths', c.name USING ERRCODE = '22023',
            HINT = 'Its triggers see every change of the bytes; only file contents can change unseen.';
    END IF;
    EXECUTE format($q$
        WITH known AS (
            SELECT image_id, content_sha256 FROM clip.embedding WHERE collection = $1
            UNION
            SELECT image_id, content_sha256 FROM clip.embedding_error WHERE collection = $1
        ),
        changed AS (
            SELECT DISTINCT k.image_id FROM known k JOIN %2$s s ON s.%1$I = k.image_id
            WHERE k.content_sha256 IS DISTINCT FROM clip.file_sha256(s.%3$I)
        ),
        queued AS (INSERT INTO clip.refresh_queue (collection, image_id) SELECT $1, image_id FROM changed RETURNING 1)
        SELECT count(*) FROM queued $q$, c.id_column, c.source, c.image_column) INTO n USING c.name;
    RETURN n;
END $$;

-- One batch, in the caller's transaction: embed those of `ids` that still need it (queued, or
-- without a current embedding for `target`), record failures, dequeue what this snapshot saw.
-- Used by CALL clip.refresh and by clip.refresh_queued (the auto-refresh worker).
CREATE OR REPLACE FUNCTION clip._refresh_batch(c clip.collection, target text, cur_stamp text, ids bigint[],
                                    OUT embedded bigint, OUT failed bigint) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pg_clip.refresh'), hashtext(c.name));
    -- under the lock: skip rows another session embedded meanwhile (unless queued again)
    EXECUTE format($q$
        WITH seen AS (
            SELECT seq FROM clip.refresh_queue WHERE collection = $1 AND image_id = ANY ($4)
        ),
        batch AS (
            SELECT s.%1$I::bigint AS id, s.%2$I%4$s AS img
            FROM %3$s s
            WHERE s.%1$I = ANY ($4)
              AND (EXISTS (SELECT 1 FROM clip.refresh_queue q WHERE q.collection = $1 AND q.image_id = s.%1$I)
                   OR NOT EXISTS (SELECT 1 FROM clip.embedding e WHERE e.collection = $1 AND e.model = $2
                                      AND e.image_id = s.%1$I AND e.stamp = $3))
            ORDER BY 1
        ),
        arr AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(img ORDER BY id) AS imgs FROM batch),
        res AS (
            SELECT arr.ids[t.ord] AS id, t.*
            FROM arr, clip.%5$I(arr.imgs, $2) t
            WHERE arr.ids IS NOT NULL
        ),
        ok AS (
            INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
            SELECT $1, $2, id, $3, content_sha256, embedding FROM res WHERE embedding IS NOT NULL
            ON CONFLICT (collection, model, image_id) DO UPDATE
                SET stamp = EXCLUDED.stamp, content_sha256 = EXCLUDED.content_sha256,
                    embedding = EXCLUDED.embedding, embedded_at = now()
            RETURNING image_id
        ),
        cleared AS (
            DELETE FROM clip.embedding_error x USING ok WHERE x.collection = $1 AND x.image_id = ok.image_id
        ),
        bad AS (
            INSERT INTO clip.embedding_error (collection, image_id, content_sha256, sqlstate, message)
            SELECT $1, id, content_sha256, coalesce(error_sqlstate, '22004'),
                   coalesce(error_message, 'image is NULL')
            FROM res WHERE embedding IS NULL
            ON CONFLICT (collection, image_id) DO UPDATE
                SET content_sha256 = EXCLUDED.content_sha256, sqlstate = EXCLUDED.sqlstate,
                    message = EXCLUDED.message, failed_at = now()
            RETURNING image_id
        ),
        -- only the queue entries this statement's snapshot saw: a change committed while the
        -- batch ran has a new entry, which stays queued
        dequeued AS (
            DELETE FROM clip.refresh_queue q WHERE q.seq IN (SELECT seq FROM seen)
        )
        SELECT (SELECT count(*) FROM ok), (SELECT count(*) FROM bad)
        $q$, c.id_column, c.image_column, c.source,
        CASE c.image_kind WHEN 'bytea' THEN '' ELSE '::text' END,
        CASE c.image_kind WHEN 'bytea' THEN 'try_embed_images' ELSE 'try_embed_files' END)
        INTO embedded, failed USING c.name, target, cur_stamp, ids;
END $$;

-- Embed up to `max_rows` queued rows of a collection (inserted or changed since they were last
-- embedded) and forget queued rows that were deleted, in the caller's transaction. Returns how
-- many queue entries it handled. The auto-refresh worker calls it; CALL clip.refresh does this
-- and more (rows never queued, stale model stamps, model switches).
CREATE OR REPLACE FUNCTION clip.refresh_queued(collection text, max_rows int DEFAULT 32) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection;
    target text;
    cur_stamp text;
    ids bigint[];
    n_gone bigint;
    st text;
    msg text;
    fails int;
BEGIN
    SELECT * INTO c FROM clip.collection WHERE name = refresh_queued.collection;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- ERROR for a collection whose source is gone, or that this role may not read
    PERFORM clip._collection(c.name);
    target := coalesce(c.next_model, c.model);
    SELECT stamp INTO cur_stamp FROM clip.model WHERE name = target;
    -- the collection's lock before any row lock, in every writer, so that writers cannot deadlock
    PERFORM pg_advisory_xact_lock(hashtext('pg_clip.refresh'), hashtext(c.name));
    -- queued ids gone from the source (the entries this snapshot sees; later ones stay queued)
    EXECUTE format($q$
        WITH g AS (
            SELECT q.seq, q.image_id FROM clip.refresh_queue q
            WHERE q.collection = $1 AND NOT EXISTS (SELECT 1 FROM %1$s s WHERE s.%2$I = q.image_id)
        ),
        -- a TRUNCATE's entry (no id): every embedding and error whose row is gone
        t AS (SELECT 1 FROM g WHERE g.image_id IS NULL LIMIT 1),
        d0 AS (DELETE FROM clip.embedding e WHERE e.collection = $1 AND EXISTS (SELECT 1 FROM t)
                   AND NOT EXISTS (SELECT 1 FROM %1$s s WHERE s.%2$I = e.image_id) RETURNING e.image_id),
        d0x AS (DELETE FROM clip.embedding_error x WHERE x.collection = $1 AND EXISTS (SELECT 1 FROM t)
                    AND NOT EXISTS (SELECT 1 FROM %1$s s WHERE s.%2$I = x.image_id)),
        d1 AS (DELETE FROM clip.embedding e USING g WHERE e.collection = $1 AND e.image_id = g.image_id),
        d2 AS (DELETE FROM clip.embedding_error x USING g WHERE x.collection = $1 AND x.image_id = g.image_id),
        d3 AS (DELETE FROM clip.refresh_queue q WHERE q.seq IN (SELECT seq FROM g) RETURNING image_id)
        SELECT count(DISTINCT image_id) + (SELECT count(*) FROM d0) FROM d3 $q$, c.source, c.id_column)
        INTO n_gone USING c.name;
    -- the longest-waiting ids first
    SELECT array_agg(image_id ORDER BY image_id) INTO ids
    FROM (SELECT image_id FROM clip.refresh_queue WHERE collection = c.name
          GROUP BY image_id ORDER BY min(seq) LIMIT max_rows) s;
    IF ids IS NOT NULL THEN
        BEGIN
            PERFORM clip._refresh_batch(c, target, cur_stamp, ids);
            UPDATE clip.refresh_state s SET failed_batches = 0 WHERE s.collection = c.name AND s.failed_batches > 0;
        EXCEPTION WHEN OTHERS THEN
            -- A failure of the whole batch (no ONNX Runtime library, pg_clip.image_root unset, ...)
            -- leaves the rows queued for the next try and does not stop the other collections.
            -- The second failure in a row records the batch's rows in clip.embedding_error and
            -- dequeues them, so that the worker does not retry them forever (clip.retry_failed
            -- puts them back in line).
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            RAISE WARNING 'pg_clip: refreshing queued rows of collection "%" failed: %', c.name, msg;
            INSERT INTO clip.refresh_state AS s (collection, failed_batches, last_batch_error) VALUES (c.name, 1, msg)
            ON CONFLICT (collection) DO UPDATE SET failed_batches = s.failed_batches + 1, last_batch_error = msg
            RETURNING s.failed_batches INTO fails;
            IF fails >= 2 THEN
                INSERT INTO clip.embedding_error (collection, image_id, sqlstate, message)
                SELECT c.name, u, st, 'its batch failed twice as a whole: ' || msg FROM unnest(ids) u
                ON CONFLICT (collection, image_id) DO UPDATE
                    SET sqlstate = EXCLUDED.sqlstate, message = EXCLUDED.message, failed_at = now();
                DELETE FROM clip.refresh_queue q WHERE q.collection = c.name AND q.image_id = ANY (ids);
                UPDATE clip.refresh_state s SET failed_batches = 0 WHERE s.collection = c.name;
            END IF;
            RETURN n_gone;
        END;
    END IF;
    IF n_gone > 0 OR ids IS NOT NULL THEN
        -- scores of the new and changed images (a no-op without an attached vocabulary); a
        -- failure keeps the embedded batch, and the next pass or refresh scores again
        BEGIN
            PERFORM clip._score(c.name);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_clip: scoring collection "%" failed: %', c.name, SQLERRM;
        END;
    END IF;
    RETURN n_gone + coalesce(cardinality(ids), 0);
END $$;

-- The auto-refresh worker's step for one collection, in a transaction of its own: nothing when
-- another session holds the collection's lock (a refresh is running: the worker comes back next
-- round), else clip.refresh_queued. An ERROR (a broken collection: its source dropped, a column
-- renamed) comes back as text, for the worker to report once and go on with the others.
CREATE OR REPLACE FUNCTION clip._worker_step(collection text, max_rows int, OUT handled bigint, OUT error text)
LANGUAGE plpgsql AS $$
BEGIN
    handled := 0;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('pg_clip.refresh'), pg_catalog.hashtext(collection)) THEN
        RETURN;
    END IF;
    handled := clip.refresh_queued(collection, max_rows);
EXCEPTION WHEN OTHERS THEN
    error := SQLERRM;
    handled := 0;
END $$;

-- CALL clip.refresh('photos'): embed every row without a current embedding, re-embed queued
-- (changed) rows, remove embeddings of deleted rows. Work is committed after each batch of
-- pg_clip.batch_size rows, so a cancel or crash loses at most the batch in flight and the next
-- call continues. Two sessions may refresh the same collection: each batch takes a
-- transaction-scoped advisory lock and re-checks its rows, so no row is embedded twice.
-- A NOTICE reports progress every 5 seconds and a summary at the end; clip.refresh_progress
-- shows the same to other sessions. Must be CALLed outside an explicit transaction block.
CREATE OR REPLACE PROCEDURE clip.refresh(collection text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection;
    target text;
    cur_stamp text;
    bs int := greatest(coalesce(nullif(current_setting('pg_clip.batch_size', true), '')::int, 32), 1);
    ids bigint[];
    n_total bigint;
    n_done bigint := 0;
    n_emb bigint := 0;
    n_fail bigint := 0;
    n_rem bigint := 0;
    n_unch bigint;
    got_ok bigint;
    got_bad bigint;
    scored record;
    t0 timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
BEGIN
    IF clip.in_transaction_block() THEN
        RAISE EXCEPTION 'clip.refresh commits after each batch and cannot run inside a transaction block'
            USING ERRCODE = '25001',
            HINT = 'CALL it on its own: not between BEGIN and COMMIT, nor in a multi-statement query string.';
    END IF;
    c := clip._collection(refresh.collection);
    IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = c.source) = 'p' THEN
        -- partitions attached since the last refresh get the queueing triggers
        PERFORM clip._source_triggers(c, true);
    END IF;
    -- during a model change the new model's set is built; the old one serves queries meanwhile
    target := coalesce(c.next_model, c.model);
    SELECT stamp INTO cur_stamp FROM clip.model WHERE name = target;

    -- deleted rows: embeddings, errors and queue entries whose id is gone from the source
    -- (under the collection's lock, taken before any row lock as every writer does)
    PERFORM pg_advisory_xact_lock(hashtext('pg_clip.refresh'), hashtext(c.name));
    EXECUTE format('WITH gone AS (DELETE FROM clip.embedding e WHERE e.collection = $1
                        AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%I = e.image_id) RETURNING 1)
                    SELECT count(*) FROM gone', c.source, c.id_column) INTO n_rem USING c.name;
    EXECUTE format('DELETE FROM clip.embedding_error e WHERE e.collection = $1
                        AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%I = e.image_id)', c.source, c.id_column) USING c.name;
    EXECUTE format('DELETE FROM clip.refresh_queue q WHERE q.collection = $1
                        AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%I = q.image_id)', c.source, c.id_column) USING c.name;

    -- the work list: queued (changed) rows, and rows with no current embedding that have not failed
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.pg_clip_todo (id bigint PRIMARY KEY);
    TRUNCATE pg_temp.pg_clip_todo;
    EXECUTE format($q$
        INSERT INTO pg_temp.pg_clip_todo
        SELECT image_id FROM clip.refresh_queue WHERE collection = $1 AND image_id IS NOT NULL
        UNION
        SELECT s.%1$I FROM %2$s s
        WHERE NOT EXISTS (SELECT 1 FROM clip.embedding e WHERE e.collection = $1 AND e.model = $2
                              AND e.image_id = s.%1$I AND e.stamp = $3)
          AND NOT EXISTS (SELECT 1 FROM clip.embedding_error x WHERE x.collection = $1 AND x.image_id = s.%1$I)
        $q$, c.id_column, c.source) USING c.name, target, cur_stamp;
    SELECT count(*) INTO n_total FROM pg_temp.pg_clip_todo;
    -- unchanged: current embeddings that need nothing (known failures are neither)
    SELECT count(*) INTO n_unch FROM clip.embedding e
    WHERE e.collection = c.name AND e.model = target AND e.stamp = cur_stamp
      AND NOT EXISTS (SELECT 1 FROM pg_temp.pg_clip_todo t WHERE t.id = e.image_id);
    INSERT INTO clip.refresh_state AS r (collection, pid, started_at, updated_at, finished_at, total, done,
                                         embedded, failed, removed, unchanged)
    VALUES (c.name, pg_backend_pid(), t0, clock_timestamp(), NULL, n_total, 0, 0, 0, n_rem, n_unch)
    ON CONFLICT (collection) DO UPDATE SET pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
        updated_at = EXCLUDED.updated_at, finished_at = NULL, total = EXCLUDED.total, done = 0, embedded = 0,
        failed = 0, removed = EXCLUDED.removed, unchanged = EXCLUDED.unchanged;
    COMMIT;

    LOOP
        SELECT array_agg(id ORDER BY id) INTO ids FROM (SELECT id FROM pg_temp.pg_clip_todo ORDER BY id LIMIT bs) b;
        EXIT WHEN ids IS NULL;
        SELECT * INTO got_ok, got_bad FROM clip._refresh_batch(c, target, cur_stamp, ids);
        n_emb := n_emb + got_ok;
        n_fail := n_fail + got_bad;
        DELETE FROM pg_temp.pg_clip_todo WHERE id = ANY (ids);
        n_done := n_done + cardinality(ids);
        UPDATE clip.refresh_state SET updated_at = clock_timestamp(), done = n_done, embedded = n_emb, failed = n_fail
        WHERE refresh_state.collection = c.name;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            RAISE NOTICE 'clip.refresh(%): % of % rows, % images/s', c.name, n_done, n_total,
                round((n_done / greatest(extract(epoch FROM clock_timestamp() - t0), 0.001))::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;
    IF c.next_model IS NOT NULL THEN
        -- every row is now embedded (or recorded as failed) under the new model: switch
        UPDATE clip.collection SET model = c.next_model, next_model = NULL WHERE name = c.name;
        PERFORM clip._index_collection(c.name);
        DELETE FROM clip.embedding e WHERE e.collection = c.name AND e.model <> c.next_model;
        RAISE NOTICE 'clip.refresh(%): switched from model % to %', c.name, c.model, c.next_model;
    ELSE
        -- (an old model's index that could not be dropped at the switch without waiting)
        PERFORM clip._index_collection(c.name);
    END IF;
    IF n_emb > 1000 THEN
        -- fresh statistics before scoring reads the new rows: planned from stale ones, its
        -- anti-joins over tens of thousands of embeddings took minutes instead of seconds
        ANALYZE clip.embedding;
    END IF;
    -- zero-shot scores for the attached vocabulary (what changed only), in their own transaction
    SELECT * INTO scored FROM clip._score(c.name);
    IF scored.pairs > 0 OR scored.attributes_changed > 0 THEN
        RAISE NOTICE 'clip.refresh(%): scored % (image, attribute) pairs, % attributes changed', c.name,
            scored.pairs, scored.attributes_changed;
    END IF;
    COMMIT;
    UPDATE clip.refresh_state SET updated_at = clock_timestamp(), finished_at = clock_timestamp()
    WHERE refresh_state.collection = c.name;
    COMMIT;
    RAISE NOTICE 'clip.refresh(%): embedded %, unchanged %, removed %, failed %, % s', c.name, n_emb, n_unch,
        n_rem, n_fail, round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2);
END $$;

-- Duplicates: exact ones (same bytes) as one group per content hash, near ones (cosine at or
-- above `threshold`) as pairs. Each image asks the HNSW index for its `neighbours` nearest,
-- so the cost grows with rows x neighbours, not rows squared; a near pair both of whose images
-- have more than `neighbours` closer matches can be missed (raise it for dense clusters).
CREATE OR REPLACE FUNCTION clip.duplicates(collection text, threshold real DEFAULT 0.95, neighbours int DEFAULT 10)
RETURNS TABLE (kind text, image_ids bigint[], similarity real) LANGUAGE plpgsql STABLE AS $$
DECLARE c clip.collection;
BEGIN
    c := clip._collection(duplicates.collection);
    RETURN QUERY
    SELECT 'exact'::text, array_agg(e.image_id ORDER BY e.image_id), 1::real
    FROM clip.embedding e
    WHERE e.collection = c.name AND e.model = c.model
    GROUP BY e.content_sha256 HAVING count(*) > 1
    ORDER BY 2;
    RETURN QUERY EXECUTE format($q$
        SELECT 'near'::text, ARRAY[least(a.image_id, n.image_id), greatest(a.image_id, n.image_id)],
               max((1 - n.d))::real
        FROM clip.%1$I a
        CROSS JOIN LATERAL (
            SELECT b.image_id, b.embedding <=> a.embedding AS d FROM clip.%1$I b
            WHERE b.image_id <> a.image_id ORDER BY b.embedding <=> a.embedding LIMIT $2
        ) n
        JOIN clip.embedding ea ON ea.collection = $3 AND ea.model = $4 AND ea.image_id = a.image_id
        JOIN clip.embedding eb ON eb.collection = $3 AND eb.model = $4 AND eb.image_id = n.image_id
        WHERE 1 - n.d >= $1 AND ea.content_sha256 <> eb.content_sha256
        GROUP BY 2 ORDER BY 3 DESC, 2 $q$, c.name || '_embeddings')
        USING threshold, neighbours, c.name, c.model;
END $$;

-- requires:
--   collections

-- pg_clip vocabularies: YAML attributes scored, per collection, into clip.feature_image_attribute.
-- The YAML is checked by clip.parse_vocabulary (Rust); storage, diffing and scoring are SQL over
-- the stored embeddings: no image is embedded again to score a new or changed attribute.

-- Create or update vocabulary `name` from YAML text. A file with problems raises one ERROR that
-- lists every problem with its line and column, and changes nothing. Returns one row per
-- attribute that was added, removed or changed (with the fields that changed); loading the
-- same vocabulary again returns nothing and writes nothing. Attached collections pick the
-- change up at their next refresh.
CREATE OR REPLACE FUNCTION clip.load_vocabulary(name text, yaml text)
RETURNS TABLE (attribute text, change text, fields text[]) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    vname text := load_vocabulary.name;
BEGIN
    IF vname IS NULL OR vname !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'bad vocabulary name "%"', vname USING ERRCODE = '22023',
            HINT = 'Names are [a-z][a-z0-9_]*, at most 40 characters.';
    END IF;
    IF to_regclass('pg_temp.pg_clip_vocab_new') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_vocab_new (LIKE clip.vocabulary_attribute);
    END IF;
    TRUNCATE pg_temp.pg_clip_vocab_new;
    -- raises with every problem listed, before anything is written
    INSERT INTO pg_temp.pg_clip_vocab_new
    SELECT vname, p.code, p.position, p.kind, p.label, p.description, p.tag, p.prompts, p.center, p.scale,
           p.grp, p.rule, p.rule_expanded, p.rule_codes, p.threshold
    FROM clip.parse_vocabulary(yaml) p;

    RETURN QUERY
    SELECT coalesce(n.code, o.code),
           CASE WHEN o.code IS NULL THEN 'added' WHEN n.code IS NULL THEN 'removed' ELSE 'changed' END,
           CASE WHEN n.code IS NOT NULL AND o.code IS NOT NULL THEN array_remove(ARRAY[
               CASE WHEN n.kind IS DISTINCT FROM o.kind THEN 'kind' END,
               CASE WHEN n.label IS DISTINCT FROM o.label THEN 'label' END,
               CASE WHEN n.description IS DISTINCT FROM o.description THEN 'description' END,
               CASE WHEN n.tag IS DISTINCT FROM o.tag THEN 'type' END,
               CASE WHEN n.prompts IS DISTINCT FROM o.prompts THEN 'prompts' END,
               CASE WHEN (n.center, n.scale) IS DISTINCT FROM (o.center, o.scale) THEN 'calibration' END,
               CASE WHEN n.grp IS DISTINCT FROM o.grp THEN 'group' END,
               CASE WHEN n.rule IS DISTINCT FROM o.rule THEN 'rule' END,
               CASE WHEN n.threshold IS DISTINCT FROM o.threshold THEN 'threshold' END], NULL) END
    FROM pg_temp.pg_clip_vocab_new n
    FULL JOIN (SELECT * FROM clip.vocabulary_attribute va WHERE va.vocabulary = vname) o ON o.code = n.code
    -- (a move alone is not reported, but it is stored: it orders the view's columns)
    WHERE n.code IS NULL OR o.code IS NULL OR (n.*) IS DISTINCT FROM (o.vocabulary, o.code, n.position, o.kind, o.label,
          o.description, o.tag, o.prompts, o.center, o.scale, o.grp, o.rule, o.rule_expanded, o.rule_codes, o.threshold)
    ORDER BY coalesce(n.position, o.position + 100000), 1;

    IF NOT EXISTS (SELECT 1 FROM clip.vocabulary v WHERE v.name = vname)
       OR EXISTS (SELECT * FROM pg_temp.pg_clip_vocab_new
                  EXCEPT SELECT * FROM clip.vocabulary_attribute va WHERE va.vocabulary = vname)
       OR EXISTS (SELECT * FROM clip.vocabulary_attribute va WHERE va.vocabulary = vname
                  EXCEPT SELECT * FROM pg_temp.pg_clip_vocab_new) THEN
        INSERT INTO clip.vocabulary AS v (name, source) VALUES (vname, yaml)
        ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, loaded_at = now();
        DELETE FROM clip.vocabulary_attribute va WHERE va.vocabulary = vname;
        INSERT INTO clip.vocabulary_attribute SELECT * FROM pg_temp.pg_clip_vocab_new;
    ELSIF (SELECT v.source FROM clip.vocabulary v WHERE v.name = vname) IS DISTINCT FROM yaml THEN
        -- same attributes, other text (comments, layout): keep the text, nothing to rescore
        UPDATE clip.vocabulary v SET source = yaml WHERE v.name = vname;
    END IF;
    TRUNCATE pg_temp.pg_clip_vocab_new;
END $$;

-- As clip.load_vocabulary, from a file: a bare name such as 'space.yaml' is one of the examples
-- installed with the extension; other paths are read under pg_clip.image_root (superusers and
-- members of pg_read_server_files).
CREATE OR REPLACE FUNCTION clip.load_vocabulary_file(name text, path text)
RETURNS TABLE (attribute text, change text, fields text[]) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM clip.load_vocabulary(name, clip.read_vocabulary_file(path));
END $$;

-- Score collection `collection` with vocabulary `vocabulary` from its next refresh on. Attaching
-- another vocabulary than the one it had removes the old scores and view at once.
CREATE OR REPLACE FUNCTION clip.attach_vocabulary(collection text, vocabulary text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE c clip.collection := clip._collection(collection);
BEGIN
    PERFORM clip._vocabulary(attach_vocabulary.vocabulary);
    IF EXISTS (SELECT 1 FROM clip.collection_vocabulary cv
               WHERE cv.collection = c.name AND cv.vocabulary <> attach_vocabulary.vocabulary) THEN
        -- another vocabulary: its scores go now, the next refresh scores the new one
        PERFORM clip._drop_scores(c.name);
    END IF;
    INSERT INTO clip.collection_vocabulary AS cv (collection, vocabulary) VALUES (c.name, attach_vocabulary.vocabulary)
    ON CONFLICT ON CONSTRAINT collection_vocabulary_pkey DO UPDATE SET vocabulary = EXCLUDED.vocabulary;
END $$;

-- Stop scoring a collection: its scores, its attribute view and its scoring state are removed.
CREATE OR REPLACE FUNCTION clip.detach_vocabulary(collection text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE c clip.collection := clip._collection(collection);
BEGIN
    PERFORM clip._drop_scores(c.name);
    DELETE FROM clip.collection_vocabulary cv WHERE cv.collection = c.name;
END $$;

CREATE OR REPLACE FUNCTION clip._drop_scores(collection text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clip._drop_collection_objects(collection, true);
    DELETE FROM clip.feature_image_attribute f WHERE f.collection = _drop_scores.collection AND f.source <> 'classifier';
    DELETE FROM clip.attribute_score_state s WHERE s.collection = _drop_scores.collection;
    DELETE FROM clip.image_score_state s WHERE s.collection = _drop_scores.collection;
    UPDATE clip.collection_vocabulary cv SET scored_embedding_version = NULL WHERE cv.collection = _drop_scores.collection;
END $$;

-- The per-collection view: one real column per attribute, in vocabulary order, then the
-- classes of the classifiers written by clip.classify, keyed by image id. `vocabulary` may be NULL.
-- SECURITY DEFINER, as clip._index_collection and for the same reasons; the codes are quoted, and
-- the view is security_invoker, so readers see the rows clip.feature_image_attribute shows them.
CREATE OR REPLACE FUNCTION clip._attribute_view(collection text, vocabulary text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE cols text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clip.collection c WHERE c.name = _attribute_view.collection) THEN
        RAISE EXCEPTION 'collection "%" does not exist', collection USING ERRCODE = '42704';
    END IF;
    SELECT string_agg(format('max(confidence) FILTER (WHERE attribute_code = %L) AS %I', x.code, x.code), ', '
                      ORDER BY x.o1, x.o2)
    INTO cols FROM (
        SELECT a.code, 0 AS o1, a.position AS o2 FROM clip.vocabulary_attribute a WHERE a.vocabulary = _attribute_view.vocabulary
        UNION ALL
        SELECT u.code, 1, row_number() OVER (ORDER BY k.classifier, u.o)
        FROM clip.classification k CROSS JOIN LATERAL unnest(k.codes) WITH ORDINALITY u (code, o)
        WHERE k.collection = _attribute_view.collection) x;
    IF to_regclass(format('clip.%I', collection || '_attributes')) IS NOT NULL THEN
        EXECUTE format('DROP VIEW clip.%I', collection || '_attributes');
    END IF;
    EXECUTE format('CREATE VIEW clip.%I WITH (security_invoker = true) AS SELECT image_id%s FROM clip.feature_image_attribute
                    WHERE collection = %L GROUP BY image_id', collection || '_attributes',
                   coalesce(', ' || cols, ''), collection);
    EXECUTE format('COMMENT ON VIEW clip.%I IS %L', collection || '_attributes',
                   format('confidences of vocabulary %s and classifiers for collection %s, one column per attribute',
                          coalesce(vocabulary, '(none)'), collection));
    EXECUTE format('GRANT SELECT ON clip.%I TO PUBLIC', collection || '_attributes');
END $$;

-- The text embeddings of a vocabulary's base attributes under model `m`: prompt lists without
-- one get it now (one model call per prompt list), others are reused from clip.text_embedding.
CREATE OR REPLACE FUNCTION clip._text_embeddings(vocabulary text, m clip.model) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT DISTINCT a.prompts FROM clip.vocabulary_attribute a
             WHERE a.vocabulary = _text_embeddings.vocabulary AND a.kind = 'base'
               AND NOT EXISTS (SELECT 1 FROM clip.text_embedding t
                               WHERE t.model = m.name AND t.stamp = m.stamp AND t.prompts = a.prompts) LOOP
        INSERT INTO clip.text_embedding (model, stamp, prompts, embedding)
        SELECT m.name, m.stamp, r.prompts, l2_normalize(avg(e)) FROM unnest(clip.embed_texts(r.prompts, m.name)) e;
    END LOOP;
END $$;

-- Bring a collection's scores up to date with its embeddings (current model) and its vocabulary,
-- doing only what changed: new or re-embedded images get every attribute; a new attribute, or
-- one with other prompts or another group, is scored for every image (its whole softmax group
-- with it); a new calibration recomputes confidences from the stored logits; removed
-- attributes and deleted images lose their rows; derived attributes are recomputed where what
-- they read changed. Called by CALL clip.refresh and the auto-refresh worker.
CREATE OR REPLACE FUNCTION clip._score(collection text, OUT pairs bigint, OUT attributes_changed int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    v text;
    m clip.model;
    r record;
    gone text[];
    rescore text[];
    recal text[];
    rederive text[];
    stale bigint[];
    grouped boolean;
    n bigint;
    emb_version bigint;
BEGIN
    pairs := 0;
    attributes_changed := 0;
    SELECT cv.vocabulary INTO v FROM clip.collection_vocabulary cv WHERE cv.collection = c.name;
    IF v IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO m FROM clip.model WHERE name = c.model;
    PERFORM pg_advisory_xact_lock(hashtext('pg_clip.score'), hashtext(c.name));

    PERFORM clip._text_embeddings(v, m);

    -- an attribute that changed kind (base <-> derived) starts over
    WITH turned AS (
        DELETE FROM clip.attribute_score_state s USING clip.vocabulary_attribute a
        WHERE s.collection = c.name AND a.vocabulary = v AND a.code = s.code AND a.kind <> s.kind
        RETURNING s.code)
    DELETE FROM clip.feature_image_attribute f USING turned t
    WHERE f.collection = c.name AND f.attribute_code = t.code AND f.source IN ('zero_shot', 'derived');

    -- what changed in the vocabulary since the last scoring
    SELECT array_agg(s.code) INTO gone FROM clip.attribute_score_state s
    WHERE s.collection = c.name
      AND NOT EXISTS (SELECT 1 FROM clip.vocabulary_attribute a WHERE a.vocabulary = v AND a.code = s.code);
    SELECT array_agg(a.code) INTO rescore
    FROM clip.vocabulary_attribute a LEFT JOIN clip.attribute_score_state s ON s.collection = c.name AND s.code = a.code
    WHERE a.vocabulary = v AND a.kind = 'base'
      AND (s.code IS NULL OR s.kind <> 'base' OR s.model <> m.name OR s.stamp <> m.stamp
           OR s.prompts <> a.prompts OR s.grp IS DISTINCT FROM a.grp);
    -- a softmax changes when a member of its group changes, joins or leaves: rescore the group
    SELECT array_agg(a.code) INTO rescore FROM clip.vocabulary_attribute a
    WHERE a.vocabulary = v AND a.kind = 'base'
      AND (a.code = ANY (rescore) OR a.grp IN (
          SELECT x.grp FROM clip.vocabulary_attribute x WHERE x.vocabulary = v AND x.code = ANY (rescore)
          UNION
          SELECT s.grp FROM clip.attribute_score_state s
          WHERE s.collection = c.name AND (s.code = ANY (gone) OR s.code = ANY (rescore))));
    SELECT array_agg(a.code) INTO recal
    FROM clip.vocabulary_attribute a JOIN clip.attribute_score_state s ON s.collection = c.name AND s.code = a.code
    WHERE a.vocabulary = v AND a.kind = 'base' AND a.grp IS NULL AND a.code <> ALL (coalesce(rescore, '{}'))
      AND (s.center, s.scale) IS DISTINCT FROM (a.center, a.scale);

    -- images deleted (or embedded under another model) lose their rows; new or re-embedded ones are
    -- stale. Only when an embedding of the collection changed since the last scoring: the version
    -- is read before the images are, so a batch committed meanwhile is seen again next time.
    SELECT ev.version INTO emb_version FROM clip.embedding_version ev WHERE ev.collection = c.name;
    IF emb_version IS NULL OR emb_version IS DISTINCT FROM
       (SELECT cv.scored_embedding_version FROM clip.collection_vocabulary cv WHERE cv.collection = c.name) THEN
        WITH gone_images AS (
            DELETE FROM clip.image_score_state x
            WHERE x.collection = c.name
              AND NOT EXISTS (SELECT 1 FROM clip.embedding e WHERE e.collection = c.name AND e.model = m.name
                                  AND e.image_id = x.image_id AND e.stamp = x.stamp AND e.content_sha256 = x.content_sha256)
            RETURNING x.image_id)
        DELETE FROM clip.feature_image_attribute f USING gone_images g
        WHERE f.collection = c.name AND f.image_id = g.image_id AND f.source IN ('zero_shot', 'derived');
        SELECT array_agg(e.image_id) INTO stale FROM clip.embedding e
        WHERE e.collection = c.name AND e.model = m.name
          AND NOT EXISTS (SELECT 1 FROM clip.image_score_state x WHERE x.collection = c.name AND x.image_id = e.image_id);
    END IF;

    DELETE FROM clip.feature_image_attribute f
    WHERE f.collection = c.name AND f.source IN ('zero_shot', 'derived') AND f.attribute_code = ANY (gone);
    DELETE FROM clip.attribute_score_state s WHERE s.collection = c.name AND s.code = ANY (gone);

    -- zero-shot rows: every image for the rescored attributes, every attribute for stale images
    IF rescore IS NOT NULL OR stale IS NOT NULL THEN
        DELETE FROM clip.feature_image_attribute f
        WHERE f.collection = c.name AND f.source = 'zero_shot' AND f.attribute_code = ANY (rescore);
        DELETE FROM clip.feature_image_attribute f
        WHERE f.collection = c.name AND f.source = 'zero_shot' AND f.image_id IN (SELECT unnest(stale));
        -- sigmoid attributes, then softmax groups: only the groups need the per-image window
        -- (and its sort), so they are written by a statement of their own
        -- (ARRAY[t.embedding])[1]: the text embedding detoasted once per attribute. A stored
        -- 512-dim vector is TOASTed, and the CTE's rows keep the TOAST pointer, so each image's
        -- cosine fetched it again: 0.34 s instead of 0.12 s per attribute over 45,000 images.
        FOREACH grouped IN ARRAY ARRAY[false, true] LOOP
            EXECUTE format($q$
                WITH attrs AS (
                    SELECT a.code, a.grp, a.center, a.scale, coalesce(a.code = ANY ($6), false) AS everywhere,
                           (ARRAY[t.embedding])[1] AS embedding
                    FROM clip.vocabulary_attribute a
                    JOIN clip.text_embedding t ON t.model = $3 AND t.stamp = $4 AND t.prompts = a.prompts
                    WHERE a.vocabulary = $2 AND a.kind = 'base' AND (a.grp IS NOT NULL) = $8
                ),
                pairs AS (
                    SELECT e.image_id, a.code, a.grp, a.center, a.scale, $5 * (1 - (e.embedding <=> a.embedding)) AS logit
                    FROM clip.embedding e JOIN attrs a ON a.everywhere
                    WHERE e.collection = $1 AND e.model = $3
                    UNION ALL
                    SELECT e.image_id, a.code, a.grp, a.center, a.scale, $5 * (1 - (e.embedding <=> a.embedding))
                    FROM clip.embedding e JOIN attrs a ON NOT a.everywhere
                    WHERE e.collection = $1 AND e.model = $3 AND e.image_id IN (SELECT unnest($7))
                ),
                done AS (
                    INSERT INTO clip.feature_image_attribute
                        (collection, image_id, attribute_code, confidence, logit, source, vocabulary, model)
                    SELECT $1, q.image_id, q.code, %s, q.logit, 'zero_shot', $2, $3 FROM %s q
                    RETURNING 1)
                SELECT count(*) FROM done $q$,
                CASE WHEN grouped
                     -- exp(logit - max) / sum over the image's group (the max subtracted for range)
                     THEN 'exp(q.logit - q.peak) / sum(exp(q.logit - q.peak)) OVER (PARTITION BY q.image_id, q.grp)'
                     ELSE '1 / (1 + exp(-(q.logit - q.center) / q.scale))' END,
                CASE WHEN grouped
                     THEN '(SELECT p.*, max(p.logit) OVER (PARTITION BY p.image_id, p.grp) AS peak FROM pairs p)'
                     ELSE 'pairs' END)
                INTO n USING c.name, v, m.name, m.stamp, m.logit_scale, rescore, stale, grouped;
            pairs := pairs + n;
        END LOOP;
    END IF;

    -- new calibration: confidences from the stored logits, no model needed
    UPDATE clip.feature_image_attribute f
    SET confidence = 1 / (1 + exp(-(f.logit - a.center) / a.scale)), scored_at = now()
    FROM clip.vocabulary_attribute a
    WHERE a.vocabulary = v AND a.code = ANY (recal)
      AND f.collection = c.name AND f.attribute_code = a.code AND f.source = 'zero_shot';
    GET DIAGNOSTICS n = ROW_COUNT;
    pairs := pairs + n;

    -- derived attributes: everywhere when the rule or what it reads changed, else on stale images
    SELECT array_agg(a.code) INTO rederive
    FROM clip.vocabulary_attribute a LEFT JOIN clip.attribute_score_state s ON s.collection = c.name AND s.code = a.code
    WHERE a.vocabulary = v AND a.kind = 'derived'
      AND (s.code IS NULL OR s.kind <> 'derived' OR s.rule_expanded IS DISTINCT FROM a.rule_expanded
           OR a.rule_codes && (coalesce(rescore, '{}') || coalesce(recal, '{}') || coalesce(gone, '{}')));
    FOR r IN SELECT a.code, clip._rule_sql(a.rule_expanded) AS rule_sql, a.rule_codes, coalesce(a.code = ANY (rederive), false) AS everywhere
             FROM clip.vocabulary_attribute a WHERE a.vocabulary = v AND a.kind = 'derived' ORDER BY a.position LOOP
        CONTINUE WHEN NOT r.everywhere AND stale IS NULL;
        EXECUTE format('DELETE FROM clip.feature_image_attribute f
                        WHERE f.collection = $1 AND f.attribute_code = $2 AND f.source = ''derived'' %s',
                       CASE WHEN r.everywhere THEN '' ELSE 'AND f.image_id IN (SELECT unnest($3))' END)
            USING c.name, r.code, stale;
        EXECUTE format($q$
            WITH done AS (
                INSERT INTO clip.feature_image_attribute (collection, image_id, attribute_code, confidence, logit, source, vocabulary, model)
                SELECT $1, x.image_id, $2, %2$s, NULL, 'derived', $3, $4
                FROM (SELECT f.image_id, %3$s FROM clip.feature_image_attribute f
                      WHERE f.collection = $1 AND f.source = 'zero_shot' AND f.attribute_code = ANY ($5) %1$s
                      GROUP BY f.image_id) x
                WHERE %2$s IS NOT NULL
                RETURNING 1)
            SELECT count(*) FROM done $q$,
            CASE WHEN r.everywhere THEN '' ELSE 'AND f.image_id IN (SELECT unnest($6))' END,
            r.rule_sql,
            (SELECT string_agg(format('max(f.confidence) FILTER (WHERE f.attribute_code = %L) AS %I', u, u), ', ')
             FROM (SELECT DISTINCT unnest(r.rule_codes) AS u) d))
            INTO n USING c.name, r.code, v, m.name, r.rule_codes, stale;
        pairs := pairs + n;
    END LOOP;

    attributes_changed := coalesce(cardinality(gone), 0) + coalesce(cardinality(rescore), 0)
                          + coalesce(cardinality(recal), 0) + coalesce(cardinality(rederive), 0);
    INSERT INTO clip.attribute_score_state AS s (collection, code, kind, model, stamp, prompts, center, scale, grp, rule_expanded)
    SELECT c.name, a.code, a.kind, m.name, m.stamp, a.prompts, a.center, a.scale, a.grp, a.rule_expanded
    FROM clip.vocabulary_attribute a WHERE a.vocabulary = v
    ON CONFLICT (collection, code) DO UPDATE SET kind = EXCLUDED.kind, model = EXCLUDED.model, stamp = EXCLUDED.stamp,
        prompts = EXCLUDED.prompts, center = EXCLUDED.center, scale = EXCLUDED.scale, grp = EXCLUDED.grp,
        rule_expanded = EXCLUDED.rule_expanded;
    INSERT INTO clip.image_score_state (collection, image_id, model, stamp, content_sha256)
    SELECT c.name, e.image_id, e.model, e.stamp, e.content_sha256 FROM clip.embedding e
    WHERE e.collection = c.name AND e.model = m.name AND e.image_id IN (SELECT unnest(stale));
    UPDATE clip.collection_vocabulary cv SET scored_embedding_version = emb_version
    WHERE cv.collection = c.name AND cv.scored_embedding_version IS DISTINCT FROM emb_version;
    IF pairs > 100000 THEN
        -- after a bulk scoring, fresh statistics for the next incremental one (autovacuum would
        -- get there too, later): the anti-joins above are planned from them
        ANALYZE clip.image_score_state;
        ANALYZE clip.feature_image_attribute;
    END IF;
    IF attributes_changed > 0 OR to_regclass(format('clip.%I', c.name || '_attributes')) IS NULL THEN
        PERFORM clip._attribute_view(c.name, v);
    END IF;
END $$;

-- Calibration from a collection's own images, without labels. For each sigmoid attribute of the
-- vocabulary (base, not in a softmax group): the logits of a random sample of at most
-- `sample_size` images, their summary, the current center and scale, and a suggested center and
-- scale that map the median image to 0.05 and the 99th percentile to 0.95:
-- center = (p50 + p99) / 2, scale = (p99 - p50) / (2 ln 19).
CREATE OR REPLACE FUNCTION clip.calibrate(collection text, vocabulary text, sample_size int DEFAULT 500)
RETURNS TABLE (attribute text, n bigint, logit_min real, logit_mean real, logit_max real, logit_std real,
               p05 real, p25 real, p50 real, p75 real, p95 real, p99 real,
               center real, scale real, suggested_center real, suggested_scale real)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    m clip.model;
BEGIN
    PERFORM clip._vocabulary(calibrate.vocabulary);
    SELECT * INTO m FROM clip.model WHERE name = c.model;
    PERFORM clip._text_embeddings(calibrate.vocabulary, m);
    RETURN QUERY
    WITH sample AS (
        SELECT e.embedding FROM clip.embedding e WHERE e.collection = c.name AND e.model = m.name
        ORDER BY random() LIMIT sample_size
    ),
    l AS (
        SELECT a.code, a.position, a.center, a.scale, m.logit_scale * (1 - (s.embedding <=> t.embedding)) AS logit
        FROM clip.vocabulary_attribute a
        JOIN clip.text_embedding t ON t.model = m.name AND t.stamp = m.stamp AND t.prompts = a.prompts
        CROSS JOIN sample s
        WHERE a.vocabulary = calibrate.vocabulary AND a.kind = 'base' AND a.grp IS NULL
    ),
    q AS (
        SELECT l.code, l.position, l.center, l.scale, count(*) AS n, min(l.logit) AS lo, avg(l.logit) AS mean,
               max(l.logit) AS hi, stddev_samp(l.logit) AS sd,
               percentile_cont(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95, 0.99]) WITHIN GROUP (ORDER BY l.logit) AS p
        FROM l GROUP BY 1, 2, 3, 4
    )
    SELECT q.code, q.n, q.lo::real, q.mean::real, q.hi::real, q.sd::real,
           q.p[1]::real, q.p[2]::real, q.p[3]::real, q.p[4]::real, q.p[5]::real, q.p[6]::real,
           q.center::real, q.scale::real, ((q.p[3] + q.p[6]) / 2)::real,
           greatest((q.p[6] - q.p[3]) / (2 * ln(19)), 0.001)::real
    FROM q ORDER BY q.position;
END $$;

-- Write clip.calibrate's suggestions into the vocabulary's stored attributes (all sigmoid
-- attributes, or those named), so the next refresh recomputes their confidences from the stored
-- logits. The YAML text is not rewritten: loading the file again brings its own values back.
CREATE OR REPLACE FUNCTION clip.apply_calibration(collection text, vocabulary text, attributes text[] DEFAULT NULL,
                                       sample_size int DEFAULT 500)
RETURNS TABLE (attribute text, old_center real, old_scale real, new_center real, new_scale real)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE missing text;
BEGIN
    IF to_regclass('pg_temp.pg_clip_calibration') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_calibration AS SELECT * FROM clip.calibrate(collection, vocabulary, 0) WITH NO DATA;
    END IF;
    TRUNCATE pg_temp.pg_clip_calibration;
    INSERT INTO pg_temp.pg_clip_calibration SELECT * FROM clip.calibrate(collection, vocabulary, sample_size);
    SELECT string_agg(x, ', ') INTO missing FROM unnest(attributes) x
    WHERE NOT EXISTS (SELECT 1 FROM pg_temp.pg_clip_calibration k WHERE k.attribute = x);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'not sigmoid attributes of vocabulary "%" (or no images to calibrate on): %', vocabulary, missing
            USING ERRCODE = '42704', HINT = 'Softmax group members and derived attributes take no calibration.';
    END IF;
    UPDATE clip.vocabulary_attribute a SET center = k.suggested_center, scale = k.suggested_scale
    FROM pg_temp.pg_clip_calibration k
    WHERE a.vocabulary = apply_calibration.vocabulary AND a.code = k.attribute
      AND (apply_calibration.attributes IS NULL OR k.attribute = ANY (apply_calibration.attributes));
    RETURN QUERY SELECT k.attribute, k.center, k.scale, k.suggested_center, k.suggested_scale
    FROM pg_temp.pg_clip_calibration k
    WHERE apply_calibration.attributes IS NULL OR k.attribute = ANY (apply_calibration.attributes);
    TRUNCATE pg_temp.pg_clip_calibration;
END $$;

-- The distribution of an attribute's stored zero-shot logits in a collection, in `bins` equal
-- bins between the smallest and the largest, for plotting.
CREATE OR REPLACE FUNCTION clip.logit_histogram(collection text, attribute text, bins int DEFAULT 20)
RETURNS TABLE (bin int, lower real, upper real, images bigint) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    lo float8;
    hi float8;
BEGIN
    IF bins IS NULL OR bins < 1 OR bins > 10000 THEN
        RAISE EXCEPTION 'bins must be between 1 and 10000, not %', bins USING ERRCODE = '22023';
    END IF;
    SELECT min(f.logit), max(f.logit) INTO lo, hi FROM clip.feature_image_attribute f
    WHERE f.collection = c.name AND f.attribute_code = logit_histogram.attribute AND f.source = 'zero_shot';
    IF lo IS NULL THEN
        RAISE EXCEPTION 'collection "%" has no zero-shot scores for attribute "%"', c.name, attribute
            USING ERRCODE = '42704', HINT = 'Attach a vocabulary with it and CALL clip.refresh.';
    END IF;
    hi := greatest(hi, lo + 1e-6);
    RETURN QUERY
    SELECT b, (lo + (b - 1) * (hi - lo) / bins)::real, (lo + b * (hi - lo) / bins)::real, count(f.logit)
    FROM generate_series(1, bins) b
    LEFT JOIN clip.feature_image_attribute f
           ON f.collection = c.name AND f.attribute_code = logit_histogram.attribute AND f.source = 'zero_shot'
          AND least(width_bucket(f.logit, lo, hi, bins), bins) = b
    GROUP BY b ORDER BY b;
END $$;

-- A vocabulary's row, or ERROR 42704 naming it.
CREATE OR REPLACE FUNCTION clip._vocabulary(name text) RETURNS clip.vocabulary LANGUAGE plpgsql STABLE AS $$
DECLARE v clip.vocabulary;
BEGIN
    SELECT * INTO v FROM clip.vocabulary WHERE clip.vocabulary.name = _vocabulary.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'vocabulary "%" does not exist', name USING ERRCODE = '42704',
            HINT = 'Load it first with SELECT * FROM clip.load_vocabulary(name, yaml).';
    END IF;
    RETURN v;
END $$;

-- requires:
--   vocabulary

-- pg_clip learning: labels, logistic-regression classifiers with active learning, k-means
-- clusters. The fitting runs in Rust (clip._fit_logreg, clip._kmeans) over the stored
-- embeddings; predictions are SQL over pgvector's inner product, with weights that have the
-- standardisation folded in, so no model is loaded to predict.

CREATE OR REPLACE FUNCTION clip._clustering_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM clip.cluster_assignment a USING pg_clip_gone g WHERE a.clustering = g.name;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER clustering_deleted AFTER DELETE ON clip.clustering REFERENCING OLD TABLE AS pg_clip_gone
    FOR EACH STATEMENT EXECUTE FUNCTION clip._clustering_deleted();

-- ERROR 22023 unless `name` is a valid name for a `kind` (classifier, clustering): it becomes
-- part of column names.
CREATE OR REPLACE FUNCTION clip._check_name(kind text, name text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'bad % name "%"', kind, name USING ERRCODE = '22023',
            HINT = 'Names are [a-z][a-z0-9_]*, at most 40 characters.';
    END IF;
END $$;

-- The current (highest) version of a classifier, or ERROR 42704 naming it. (Not clip._classifier:
-- that is the name of the array type of clip.classifier, and a call with a literal would be a cast.)
CREATE OR REPLACE FUNCTION clip._current_classifier(name text) RETURNS clip.classifier LANGUAGE plpgsql STABLE AS $$
DECLARE k clip.classifier;
BEGIN
    SELECT * INTO k FROM clip.classifier WHERE clip.classifier.name = _current_classifier.name ORDER BY version DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'classifier "%" does not exist', name USING ERRCODE = '42704',
            HINT = 'Label images with clip.label(collection, image_id, classifier, label), then SELECT * FROM clip.fit_classifier(classifier, collection).';
    END IF;
    RETURN k;
END $$;

-- The attribute code of a classifier's class: <classifier>_<label in lower case, other
-- characters as _>, a column name of the collection's attribute view.
CREATE OR REPLACE FUNCTION clip._class_code(classifier text, label text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT left(classifier || '_' || coalesce(nullif(trim(BOTH '_' FROM regexp_replace(lower(label), '[^a-z0-9]+', '_', 'g')), ''), 'x'), 63)
$$;

-- Record (or change) one label. With pg_clip.refit_every > 0, the classifier is refitted once
-- that many labels were given since its last fit (a refit that cannot run yet, too few labels
-- say, is a NOTICE). Returns what it did.
CREATE OR REPLACE FUNCTION clip.label(collection text, image_id bigint, classifier text, label text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    c clip.collection := clip._collection(collection);
    every int := coalesce(nullif(current_setting('pg_clip.refit_every', true), '')::int, 10);
    last clip.classifier;
    fresh bigint;
    refit record;
BEGIN
    PERFORM clip._check_name('classifier', classifier);
    IF label IS NULL OR label = '' THEN
        RAISE EXCEPTION 'a label must be a non-empty text' USING ERRCODE = '22023';
    END IF;
    INSERT INTO clip.label AS l (collection, classifier, image_id, label)
    VALUES (c.name, label.classifier, label.image_id, label.label)
    ON CONFLICT ON CONSTRAINT label_pkey DO UPDATE
        SET label = EXCLUDED.label, labelled_by = EXCLUDED.labelled_by, labelled_at = EXCLUDED.labelled_at;
    IF every = 0 THEN
        RETURN 'labelled';
    END IF;
    SELECT * INTO last FROM clip.classifier k WHERE k.name = label.classifier ORDER BY k.version DESC LIMIT 1;
    SELECT count(*) INTO fresh FROM clip.label l
    WHERE l.collection = c.name AND l.classifier = label.classifier AND (last.fitted_at IS NULL OR l.labelled_at > last.fitted_at);
    IF fresh < every THEN
        RETURN 'labelled';
    END IF;
    BEGIN
        SELECT * INTO refit FROM clip.fit_classifier(label.classifier, c.name, coalesce(last.options, '{}'));
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'clip.label: classifier "%" not refitted: %', label.classifier, SQLERRM;
        RETURN 'labelled';
    END;
    RETURN format('labelled; classifier %s refitted as version %s', label.classifier, refit.version);
END $$;

-- Labels from any query returning (image id, label), written into clip.label for classifier
-- `classifier` (a label already there is replaced); returns how many. Then fit_classifier,
-- next_to_label and label_stats see them like labels given one by one.
CREATE OR REPLACE FUNCTION clip.import_labels(collection text, classifier text, query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    c clip.collection := clip._collection(collection);
    n bigint;
BEGIN
    PERFORM clip._check_name('classifier', classifier);
    BEGIN
        EXECUTE format($q$
            WITH q AS (SELECT * FROM (%s) q (id, label)),
            done AS (
                INSERT INTO clip.label AS l (collection, classifier, image_id, label)
                SELECT $1, $2, q.id::bigint, q.label::text FROM q WHERE q.label IS NOT NULL AND q.label::text <> ''
                ON CONFLICT ON CONSTRAINT label_pkey DO UPDATE
                    SET label = EXCLUDED.label, labelled_by = EXCLUDED.labelled_by, labelled_at = EXCLUDED.labelled_at
                RETURNING 1)
            SELECT count(*) FROM done $q$, query) INTO n USING c.name, classifier;
    EXCEPTION WHEN syntax_error OR undefined_column OR invalid_column_reference OR datatype_mismatch
                   OR invalid_text_representation THEN
        RAISE EXCEPTION 'the labels query must return two columns, an image id and a label: %', SQLERRM
            USING ERRCODE = '22023', HINT = 'For example: SELECT id, category FROM my_labels';
    END;
    RETURN n;
END $$;

-- Fit classifier `name` on the labels of `collection` (clip.label) and the collection's current
-- embeddings: L2-regularised logistic regression on standardised embeddings, binary or
-- multinomial, after stratified k-fold cross-validation. Options: C (1.0), class_weight
-- ("balanced" or null), max_iter (100), folds (5). Too few labels is an ERROR whose hint says
-- how many more of which class. Each fit is stored as a new version; the old ones are kept.
CREATE OR REPLACE FUNCTION clip.fit_classifier(name text, collection text, options jsonb DEFAULT '{}')
RETURNS TABLE (classifier text, version int, labels text[], label_counts int[], metrics jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    m clip.model;
    folds int;
    lab text[];
    cnt int[];
    total int;
    res jsonb;
    v int;
    short record;
BEGIN
    PERFORM clip._check_name('classifier', name);
    IF EXISTS (SELECT 1 FROM clip.classifier k WHERE k.name = fit_classifier.name AND k.collection <> c.name) THEN
        RAISE EXCEPTION 'classifier "%" belongs to another collection', name USING ERRCODE = '42710';
    END IF;
    folds := coalesce((options ->> 'folds')::int, 5);
    SELECT * INTO m FROM clip.model WHERE clip.model.name = c.model;
    -- labelled images that have an embedding under the collection's model
    SELECT array_agg(x.label ORDER BY x.label), array_agg(x.n::int ORDER BY x.label), sum(x.n)
    INTO lab, cnt, total
    FROM (SELECT l.label, count(*) AS n FROM clip.label l
          JOIN clip.embedding e ON e.collection = l.collection AND e.model = c.model AND e.image_id = l.image_id
          WHERE l.collection = c.name AND l.classifier = fit_classifier.name GROUP BY l.label) x;
    IF coalesce(total, 0) < 10 THEN
        RAISE EXCEPTION 'classifier "%" has % labelled images with an embedding; fitting needs at least 10', name, coalesce(total, 0)
            USING ERRCODE = '55000',
            HINT = format('Label %s more with SELECT clip.label(%L, image_id, %L, label).', 10 - coalesce(total, 0), c.name, name);
    END IF;
    IF cardinality(lab) < 2 THEN
        RAISE EXCEPTION 'classifier "%" has one class only ("%"); it needs two or more', name, lab[1]
            USING ERRCODE = '55000', HINT = 'Label some images with another label.';
    END IF;
    SELECT u.l, u.n INTO short FROM unnest(lab, cnt) u (l, n) WHERE u.n < folds ORDER BY u.n, u.l LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'class "%" of classifier "%" has % labels; %-fold cross-validation needs at least % of each class',
            short.l, name, short.n, folds, folds USING ERRCODE = '55000',
            HINT = format('Label %s more "%s" images, or pass {"folds": %s} in the options.', folds - short.n, short.l,
                          greatest(short.n, 2));
    END IF;
    IF (SELECT count(DISTINCT clip._class_code(name, x)) FROM unnest(lab) x) < cardinality(lab) THEN
        RAISE EXCEPTION 'labels of classifier "%" differ only in case or punctuation: %', name, lab USING ERRCODE = '22023',
            HINT = 'Each class becomes a column <classifier>_<label>; relabel so that they stay distinct.';
    END IF;
    SELECT clip._fit_logreg(array_agg(e.embedding::real[] ORDER BY l.image_id), m.embed_dim,
                            array_agg(array_position(lab, l.label) - 1 ORDER BY l.image_id), cardinality(lab), options::text)
    INTO res
    FROM clip.label l JOIN clip.embedding e ON e.collection = l.collection AND e.model = c.model AND e.image_id = l.image_id
    WHERE l.collection = c.name AND l.classifier = fit_classifier.name;
    SELECT coalesce(max(k.version), 0) + 1 INTO v FROM clip.classifier k WHERE k.name = fit_classifier.name;
    INSERT INTO clip.classifier (name, version, collection, model, model_stamp, labels, label_counts, options, metrics,
                                 iterations, scaler_mean, scaler_scale)
    VALUES (fit_classifier.name, v, c.name, m.name, m.stamp, lab, cnt, res -> 'options', res -> 'metrics',
            (res ->> 'iterations')::int, (res -> 'scaler' ->> 'mean')::vector, (res -> 'scaler' ->> 'scale')::vector);
    INSERT INTO clip.classifier_weight (name, version, class, weight, intercept)
    SELECT fit_classifier.name, v, CASE WHEN cardinality(lab) = 2 THEN 1 ELSE (w.ord - 1)::int END,
           (w.j ->> 'weight')::vector, (w.j ->> 'intercept')::float8
    FROM jsonb_array_elements(res -> 'weights') WITH ORDINALITY w (j, ord);
    RETURN QUERY SELECT fit_classifier.name, v, lab, cnt, res -> 'metrics';
END $$;

-- Class probabilities of a collection's images (all, or `ids`) under the current version of
-- classifier `k`: (image_id, class index, label, probability, score), score being the class's
-- linear score (the logit of the positive class with two classes).
CREATE OR REPLACE FUNCTION clip._probabilities(k clip.classifier, ids bigint[] DEFAULT NULL)
RETURNS TABLE (image_id bigint, class int, label text, probability float8, score float8)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    ws vector[];
    bs float8[];
    cls int[];
BEGIN
    IF k.model_stamp IS DISTINCT FROM (SELECT m.stamp FROM clip.model m WHERE m.name = k.model)
       OR k.model IS DISTINCT FROM (SELECT c.model FROM clip.collection c WHERE c.name = k.collection) THEN
        RAISE EXCEPTION 'classifier "%" was fitted on embeddings of another model than collection "%" has now', k.name, k.collection
            USING ERRCODE = '55000', HINT = format('Refit it: SELECT * FROM clip.fit_classifier(%L, %L).', k.name, k.collection);
    END IF;
    -- The weights as an array: its elements are stored inline. Joined from clip.classifier_weight,
    -- each 512-dim weight (TOASTed, like the embeddings) was fetched again for every image, half
    -- the time of a prediction over 45,000 images (0.42 s, 0.2 s from the array).
    SELECT array_agg(w.weight ORDER BY w.class), array_agg(w.intercept ORDER BY w.class), array_agg(w.class ORDER BY w.class)
    INTO ws, bs, cls
    FROM clip.classifier_weight w WHERE w.name = k.name AND w.version = k.version;
    -- scores clamped to +-700: exp() beyond that is an ERROR in PostgreSQL, not infinity
    RETURN QUERY
    WITH z AS (
        SELECT e.image_id, w.class, least(greatest(w.intercept - (e.embedding <#> w.weight), -700), 700) AS z
        FROM clip.embedding e
        CROSS JOIN unnest(ws, bs, cls) w (weight, intercept, class)
        WHERE e.collection = k.collection AND e.model = k.model AND (ids IS NULL OR e.image_id = ANY (ids))
    ),
    multi AS (SELECT z.*, max(z.z) OVER (PARTITION BY z.image_id) AS peak FROM z)
    SELECT z.image_id, 1, k.labels[2], 1 / (1 + exp(-z.z)), z.z FROM z WHERE cardinality(k.labels) = 2
    UNION ALL
    SELECT z.image_id, 0, k.labels[1], 1 - 1 / (1 + exp(-z.z)), -z.z FROM z WHERE cardinality(k.labels) = 2
    UNION ALL
    SELECT x.image_id, x.class, k.labels[x.class + 1],
           exp(greatest(x.z - x.peak, -700)) / sum(exp(greatest(x.z - x.peak, -700))) OVER (PARTITION BY x.image_id), x.z
    FROM multi x WHERE cardinality(k.labels) > 2;
END $$;

-- The probability of each class for one image (its current embedding).
CREATE OR REPLACE FUNCTION clip.predict_proba(classifier text, image_id bigint)
RETURNS TABLE (label text, probability real) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE k clip.classifier := clip._current_classifier(classifier);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clip.embedding e JOIN clip.collection c ON c.name = e.collection AND c.model = e.model
                   WHERE e.collection = k.collection AND e.image_id = predict_proba.image_id) THEN
        RAISE EXCEPTION 'image % of collection "%" has no embedding', image_id, k.collection USING ERRCODE = '55000',
            HINT = format('Run CALL clip.refresh(%L) first, or see clip.embedding_error.', k.collection);
    END IF;
    RETURN QUERY SELECT p.label, p.probability::real FROM clip._probabilities(k, ARRAY[predict_proba.image_id]) p
    ORDER BY p.class;
END $$;

-- The most probable class of one image.
CREATE OR REPLACE FUNCTION clip.predict(classifier text, image_id bigint) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT p.label FROM clip.predict_proba(classifier, image_id) p ORDER BY p.probability DESC, p.label LIMIT 1
$$;

-- Write the current classifier's probabilities for every image of the collection into
-- clip.feature_image_attribute (source 'classifier', one attribute <classifier>_<label> per
-- class, logit = the class's linear score), replacing its earlier rows; they appear as columns
-- of clip.<collection>_attributes. Returns the number of rows written.
CREATE OR REPLACE FUNCTION clip.classify(collection text, classifier text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    c clip.collection := clip._collection(collection);
    k clip.classifier := clip._current_classifier(classifier);
    codes text[];
    n bigint;
BEGIN
    IF k.collection <> c.name THEN
        RAISE EXCEPTION 'classifier "%" belongs to collection "%"', k.name, k.collection USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(clip._class_code(k.name, x) ORDER BY o) INTO codes FROM unnest(k.labels) WITH ORDINALITY u (x, o);
    IF EXISTS (SELECT 1 FROM clip.collection_vocabulary cv JOIN clip.vocabulary_attribute a ON a.vocabulary = cv.vocabulary
               WHERE cv.collection = c.name AND a.code = ANY (codes)) THEN
        RAISE EXCEPTION 'a class of classifier "%" has the code of a vocabulary attribute: %', k.name, codes
            USING ERRCODE = '42710', HINT = 'Rename the classifier or the attribute.';
    END IF;
    DELETE FROM clip.feature_image_attribute f
    WHERE f.collection = c.name AND f.source = 'classifier'
      AND f.attribute_code = ANY (coalesce((SELECT x.codes FROM clip.classification x
                                             WHERE x.collection = c.name AND x.classifier = k.name), '{}'));
    WITH done AS (
        INSERT INTO clip.feature_image_attribute (collection, image_id, attribute_code, confidence, logit, source, vocabulary, model)
        SELECT c.name, p.image_id, codes[p.class + 1], p.probability, p.score, 'classifier', NULL, k.model
        FROM clip._probabilities(k) p
        RETURNING 1)
    SELECT count(*) INTO n FROM done;
    INSERT INTO clip.classification AS x (collection, classifier, version, codes) VALUES (c.name, k.name, k.version, codes)
    ON CONFLICT ON CONSTRAINT classification_pkey DO UPDATE
        SET version = EXCLUDED.version, codes = EXCLUDED.codes, classified_at = now();
    PERFORM clip._attribute_view(c.name, (SELECT cv.vocabulary FROM clip.collection_vocabulary cv WHERE cv.collection = c.name));
    RETURN n;
END $$;

-- Active learning: the `n` unlabelled images the current classifier is least sure of, with its
-- prediction. Two classes: smallest |p - 0.5| first; more: smallest margin between the two most
-- probable classes first. uncertainty = 1 - that margin (1 = a coin toss). With no classifier
-- yet, a seeded random sample (the same for the same classifier name), prediction NULL.
CREATE OR REPLACE FUNCTION clip.next_to_label(collection text, classifier text, n int DEFAULT 20)
RETURNS TABLE (image_id bigint, prediction text, probability real, uncertainty real)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    k clip.classifier;
BEGIN
    SELECT * INTO k FROM clip.classifier x WHERE x.name = next_to_label.classifier AND x.collection = c.name
    ORDER BY x.version DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT e.image_id, NULL::text, NULL::real, NULL::real FROM clip.embedding e
        WHERE e.collection = c.name AND e.model = c.model
          AND NOT EXISTS (SELECT 1 FROM clip.label l WHERE l.collection = c.name AND l.classifier = next_to_label.classifier
                              AND l.image_id = e.image_id)
        ORDER BY hashtextextended(e.image_id::text, hashtext(next_to_label.classifier)), e.image_id LIMIT n;
        RETURN;
    END IF;
    RETURN QUERY
    WITH p AS (
        SELECT q.image_id, q.label, q.probability,
               row_number() OVER (PARTITION BY q.image_id ORDER BY q.probability DESC, q.class) AS r
        FROM clip._probabilities(k) q
        WHERE NOT EXISTS (SELECT 1 FROM clip.label l WHERE l.collection = c.name AND l.classifier = k.name
                              AND l.image_id = q.image_id)
    ),
    top AS (
        SELECT p1.image_id, p1.label, p1.probability, p1.probability - p2.probability AS margin
        FROM p p1 JOIN p p2 ON p2.image_id = p1.image_id AND p2.r = 2 WHERE p1.r = 1
    )
    SELECT t.image_id, t.label, t.probability::real, (1 - t.margin)::real FROM top t
    ORDER BY t.margin, t.image_id LIMIT n;
END $$;

-- For a labelling screen's header, per class: images labelled, images predicted (over the
-- whole collection), the predicted share, and the share of those predictions made with a
-- probability of at least 0.9.
CREATE OR REPLACE FUNCTION clip.label_stats(collection text, classifier text)
RETURNS TABLE (label text, labelled bigint, predicted bigint, predicted_share real, confident_share real)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    k clip.classifier;
BEGIN
    SELECT * INTO k FROM clip.classifier x WHERE x.name = label_stats.classifier AND x.collection = c.name
    ORDER BY x.version DESC LIMIT 1;
    IF to_regclass('pg_temp.pg_clip_best') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_best (image_id bigint, label text, probability float8);
    END IF;
    TRUNCATE pg_temp.pg_clip_best;
    IF k.name IS NOT NULL THEN
        INSERT INTO pg_temp.pg_clip_best
        SELECT DISTINCT ON (q.image_id) q.image_id, q.label, q.probability
        FROM clip._probabilities(k) q ORDER BY q.image_id, q.probability DESC, q.class;
    END IF;
    RETURN QUERY
    WITH labelled AS (
        SELECT l.label, count(*) AS n FROM clip.label l
        WHERE l.collection = c.name AND l.classifier = label_stats.classifier GROUP BY l.label
    ),
    predicted AS (
        SELECT b.label, count(*) AS n, avg((b.probability >= 0.9)::int) AS confident FROM pg_temp.pg_clip_best b GROUP BY b.label
    )
    SELECT coalesce(l.label, p.label), coalesce(l.n, 0), coalesce(p.n, 0),
           (coalesce(p.n, 0)::float8 / greatest((SELECT count(*) FROM pg_temp.pg_clip_best), 1))::real, p.confident::real
    FROM labelled l FULL JOIN predicted p ON p.label = l.label
    ORDER BY 1;
END $$;

-- k-means over the collection's current embeddings (unit vectors, so the clusters follow cosine
-- similarity): k-means++ seeding, best of n_init runs, seeded and so reproducible. Options:
-- n_init (4), max_iter (300), tol (1e-4), seed (0). Stores the clustering, its centroids and
-- every image's cluster and distance (clustering `name` is replaced), and returns the size of
-- each cluster with the inertia (sum of squared distances to the centroids).
CREATE OR REPLACE FUNCTION clip.kmeans(collection text, k int, name text, options jsonb DEFAULT '{}')
RETURNS TABLE (cluster int, size bigint, inertia real) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    dim int;
    r record;
BEGIN
    PERFORM clip._check_name('clustering', name);
    SELECT m.embed_dim INTO dim FROM clip.model m WHERE m.name = c.model;
    SELECT * INTO r FROM clip._kmeans(c.name, c.model, k, options::text);
    DELETE FROM clip.clustering x WHERE x.name = kmeans.name;
    INSERT INTO clip.clustering (name, collection, model, k, options, inertia, iterations)
    VALUES (kmeans.name, c.name, c.model, k, options, r.inertia, r.iterations);
    -- (unnest, not ids[i]: subscripting a large array once per row copies it once per row)
    INSERT INTO clip.cluster_assignment (clustering, collection, image_id, cluster, distance)
    SELECT kmeans.name, c.name, u.id, u.cl, u.d FROM unnest(r.ids, r.clusters, r.distances) u (id, cl, d);
    INSERT INTO clip.cluster_centroid (clustering, cluster, centroid, size)
    SELECT kmeans.name, g, r.centroids[g * dim + 1 : (g + 1) * dim]::vector, coalesce(n.size, 0)
    FROM generate_series(0, k - 1) g
    LEFT JOIN (SELECT u.cl, count(*) AS size FROM unnest(r.clusters) u (cl) GROUP BY u.cl) n ON n.cl = g;
    RETURN QUERY SELECT x.cluster, x.size, r.inertia::real FROM clip.cluster_centroid x
    WHERE x.clustering = kmeans.name ORDER BY x.cluster;
END $$;

-- The attributes of softmax group `attribute_group` in the vocabulary attached to collection
-- `c`, with their text embeddings under the collection's model, one row per class of `labels`
-- (matched by code, or by label case-insensitively), into pg_temp.pg_clip_classes; ERROR 22023 naming
-- what does not match.
CREATE OR REPLACE FUNCTION clip._group_classes(c clip.collection, attribute_group text, labels text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v text := (SELECT cv.vocabulary FROM clip.collection_vocabulary cv WHERE cv.collection = c.name);
    m clip.model;
    members text;
    unmatched text;
BEGIN
    IF v IS NULL THEN
        RAISE EXCEPTION 'collection "%" has no vocabulary', c.name USING ERRCODE = '55000',
            HINT = 'Attach one with clip.attach_vocabulary(collection, vocabulary) and CALL clip.refresh.';
    END IF;
    SELECT string_agg(a.code, ', ' ORDER BY a.position) INTO members FROM clip.vocabulary_attribute a
    WHERE a.vocabulary = v AND a.grp = attribute_group;
    IF members IS NULL THEN
        RAISE EXCEPTION 'vocabulary "%" has no attribute group "%"', v, attribute_group USING ERRCODE = '22023',
            HINT = 'Groups are the "group:" of base attributes: softmax groups of mutually exclusive attributes.';
    END IF;
    SELECT * INTO m FROM clip.model WHERE name = c.model;
    PERFORM clip._text_embeddings(v, m);
    IF to_regclass('pg_temp.pg_clip_classes') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_classes (class int, label text, code text, embedding vector);
    END IF;
    TRUNCATE pg_temp.pg_clip_classes;
    INSERT INTO pg_temp.pg_clip_classes
    SELECT (u.o - 1)::int, u.l, a.code, t.embedding
    FROM unnest(labels) WITH ORDINALITY u (l, o)
    LEFT JOIN clip.vocabulary_attribute a ON a.vocabulary = v AND a.grp = attribute_group
         AND (a.code = regexp_replace(lower(u.l), '[^a-z0-9]+', '_', 'g') OR lower(a.label) = lower(u.l))
    LEFT JOIN clip.text_embedding t ON t.model = m.name AND t.stamp = m.stamp AND t.prompts = a.prompts;
    SELECT string_agg(x.label, ', ') INTO unmatched FROM pg_temp.pg_clip_classes x WHERE x.code IS NULL;
    IF unmatched IS NOT NULL THEN
        RAISE EXCEPTION 'no attribute of group "%" matches: %', attribute_group, unmatched USING ERRCODE = '22023',
            HINT = format('The group has %s; a class matches an attribute by code or by label.', members);
    END IF;
END $$;

-- For each cluster of a clustering, the member of attribute group `attribute_group` its centroid
-- is most similar to (the cluster's prior), with the prior's softmax confidence over the group
-- (logit_scale x cosine, as zero-shot scoring does). Where images of the cluster are labelled
-- for the classifier named like the group, it reports how many and the share whose label is
-- the prior; below `min_agreement` the prior is not trustworthy (clusters can follow lighting
-- or background rather than the attribute). trustworthy is NULL without labels.
CREATE OR REPLACE FUNCTION clip.cluster_prior(collection text, clustering text, attribute_group text, min_agreement real DEFAULT 0.7)
RETURNS TABLE (cluster int, size bigint, prior text, similarity real, prior_confidence real, labelled bigint,
               agreement real, trustworthy boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    members text[];
    scale float8;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clip.clustering x WHERE x.name = cluster_prior.clustering AND x.collection = c.name) THEN
        RAISE EXCEPTION 'collection "%" has no clustering "%"', c.name, clustering USING ERRCODE = '42704',
            HINT = 'Make one with SELECT * FROM clip.kmeans(collection, k, name).';
    END IF;
    SELECT array_agg(a.code ORDER BY a.position) INTO members FROM clip.vocabulary_attribute a
    JOIN clip.collection_vocabulary cv ON cv.vocabulary = a.vocabulary
    WHERE cv.collection = c.name AND a.grp = attribute_group;
    PERFORM clip._group_classes(c, attribute_group, members);
    SELECT m.logit_scale INTO scale FROM clip.model m WHERE m.name = c.model;
    RETURN QUERY
    WITH sim AS (
        SELECT z.cluster, z.size, g.code, 1 - (z.centroid <=> g.embedding) AS cos
        FROM clip.cluster_centroid z CROSS JOIN pg_temp.pg_clip_classes g WHERE z.clustering = cluster_prior.clustering
    ),
    top AS (SELECT s.*, max(s.cos) OVER (PARTITION BY s.cluster) AS peak FROM sim s),
    soft AS (
        SELECT t.*, exp(greatest(scale * (t.cos - t.peak), -700))
                    / sum(exp(greatest(scale * (t.cos - t.peak), -700))) OVER (PARTITION BY t.cluster) AS conf
        FROM top t
    ),
    best AS (SELECT DISTINCT ON (s.cluster) s.* FROM soft s ORDER BY s.cluster, s.cos DESC, s.code),
    agree AS (
        SELECT a.cluster, count(*) AS n, avg((regexp_replace(lower(l.label), '[^a-z0-9]+', '_', 'g') = b.code)::int) AS share
        FROM clip.cluster_assignment a
        JOIN clip.label l ON l.collection = c.name AND l.classifier = attribute_group AND l.image_id = a.image_id
        JOIN best b ON b.cluster = a.cluster
        WHERE a.clustering = cluster_prior.clustering GROUP BY a.cluster
    )
    SELECT b.cluster, b.size, b.code, b.cos::real, b.conf::real, coalesce(g.n, 0), g.share::real, g.share >= min_agreement
    FROM best b LEFT JOIN agree g ON g.cluster = b.cluster ORDER BY b.cluster;
END $$;

-- Per image, the classifier's decision blended with the zero-shot confidences of attribute group
-- `attribute_group` (whose members match the classifier's classes by code or label) and, given
-- a clustering, the prior of the image's cluster (softmax of logit_scale x cosine between its
-- centroid and each member): w = the classifier's certainty (top probability minus the second),
-- p = w x classifier + (1 - w) x mean(zero-shot, cluster prior). See clip._blend and the README.
CREATE OR REPLACE FUNCTION clip.decide(collection text, classifier text, attribute_group text, clustering text DEFAULT NULL)
RETURNS TABLE (image_id bigint, decision text, confidence real, classifier_label text, classifier_probability real,
               zero_shot real, cluster_prior real, classifier_weight real)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    k clip.classifier := clip._current_classifier(classifier);
    scale float8;
BEGIN
    IF k.collection <> c.name THEN
        RAISE EXCEPTION 'classifier "%" belongs to collection "%"', k.name, k.collection USING ERRCODE = '22023';
    END IF;
    IF clustering IS NOT NULL AND NOT EXISTS (SELECT 1 FROM clip.clustering x WHERE x.name = decide.clustering AND x.collection = c.name) THEN
        RAISE EXCEPTION 'collection "%" has no clustering "%"', c.name, clustering USING ERRCODE = '42704';
    END IF;
    PERFORM clip._group_classes(c, attribute_group, k.labels);
    SELECT m.logit_scale INTO scale FROM clip.model m WHERE m.name = c.model;
    RETURN QUERY
    WITH clf AS (
        SELECT p.image_id, array_agg(p.probability::real ORDER BY p.class) AS probs FROM clip._probabilities(k) p GROUP BY p.image_id
    ),
    zs AS (
        SELECT f.image_id, array_agg(f.confidence ORDER BY g.class) AS probs
        FROM clip.feature_image_attribute f JOIN pg_temp.pg_clip_classes g ON g.code = f.attribute_code
        WHERE f.collection = c.name AND f.source = 'zero_shot'
        GROUP BY f.image_id HAVING count(*) = (SELECT count(*) FROM pg_temp.pg_clip_classes)
    ),
    prior AS (
        -- softmax weights relative to the nearest member, floored where real (float4) would underflow
        SELECT p.cluster, array_agg(exp(greatest(scale * (p.cos - p.peak), -80))::real ORDER BY p.class) AS probs
        FROM (SELECT z.cluster, g.class, 1 - (z.centroid <=> g.embedding) AS cos,
                     max(1 - (z.centroid <=> g.embedding)) OVER (PARTITION BY z.cluster) AS peak
              FROM clip.cluster_centroid z CROSS JOIN pg_temp.pg_clip_classes g WHERE z.clustering = decide.clustering) p
        GROUP BY p.cluster
    ),
    cl AS (
        SELECT a.image_id, pr.probs FROM clip.cluster_assignment a JOIN prior pr ON pr.cluster = a.cluster
        WHERE a.clustering = decide.clustering
    )
    SELECT x.image_id, k.labels[b.top], b.probabilities[b.top], k.labels[x.ctop], x.probs[x.ctop],
           z.probs[b.top], l.probs[b.top] / (SELECT sum(v) FROM unnest(l.probs) v), b.classifier_weight
    FROM (SELECT clf.*, (SELECT o FROM unnest(clf.probs) WITH ORDINALITY u (v, o) ORDER BY v DESC, o LIMIT 1)::int AS ctop
          FROM clf) x
    LEFT JOIN zs z ON z.image_id = x.image_id
    LEFT JOIN cl l ON l.image_id = x.image_id
    CROSS JOIN LATERAL (
        SELECT bl.*, (SELECT o FROM unnest(bl.probabilities) WITH ORDINALITY u (v, o) ORDER BY v DESC, o LIMIT 1)::int AS top
        FROM clip._blend(x.probs, z.probs, l.probs) bl
    ) b
    ORDER BY x.image_id;
END $$;

-- Predictions and cluster assignments are made from an image's embedding at the time: when the
-- embedding is deleted (the image is gone, or the collection changed model) or replaced by one of
-- other content, the image's classifier rows and cluster assignments go with it, rather than
-- stay in the attribute view as if they were current. clip.classify and clip.kmeans write them
-- again.
CREATE OR REPLACE FUNCTION clip._learned_rows_stale() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    colls text[];
    ids bigint[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.collection), array_agg(o.image_id) INTO colls, ids FROM pg_clip_old o;
    ELSE
        SELECT array_agg(o.collection), array_agg(o.image_id) INTO colls, ids
        FROM pg_clip_old o JOIN pg_clip_new n USING (collection, model, image_id)
        WHERE (o.stamp, o.content_sha256) IS DISTINCT FROM (n.stamp, n.content_sha256);
    END IF;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM clip.feature_image_attribute f USING unnest(colls, ids) g (collection, image_id)
    WHERE f.collection = g.collection AND f.image_id = g.image_id AND f.source = 'classifier';
    DELETE FROM clip.cluster_assignment a USING clip.clustering z, unnest(colls, ids) g (collection, image_id)
    WHERE z.collection = g.collection AND a.clustering = z.name AND a.image_id = g.image_id;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER learned_rows_stale_upd AFTER UPDATE ON clip.embedding
    REFERENCING OLD TABLE AS pg_clip_old NEW TABLE AS pg_clip_new
    FOR EACH STATEMENT EXECUTE FUNCTION clip._learned_rows_stale();
CREATE OR REPLACE TRIGGER learned_rows_stale_del AFTER DELETE ON clip.embedding REFERENCING OLD TABLE AS pg_clip_old
    FOR EACH STATEMENT EXECUTE FUNCTION clip._learned_rows_stale();

-- requires:
--   collections

-- pg_clip identification: reference sets (one or a few images per label) and clip.identify,
-- "which one is this?" for a camera frame, as one call in an application's query. A reference
-- set is a collection (kept embedded by CALL clip.refresh, indexed with HNSW) plus where its
-- labels come from.

-- A reference set's row, or ERROR 42704 naming it.
CREATE OR REPLACE FUNCTION clip._reference_set(name text) RETURNS clip.reference_set LANGUAGE plpgsql STABLE AS $$
DECLARE r clip.reference_set;
BEGIN
    SELECT * INTO r FROM clip.reference_set WHERE clip.reference_set.name = _reference_set.name;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM clip.collection c WHERE c.name = _reference_set.name) THEN
        -- hidden by row security, or a collection that is no reference set: say which
        PERFORM clip._collection(name);
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reference set "%" does not exist', name USING ERRCODE = '42704',
            HINT = 'Create it with SELECT clip.add_reference_set(name, source_table, id_column, image_column), then CALL clip.refresh(name).';
    END IF;
    RETURN r;
END $$;

-- Make table `source` a reference set: a collection of the same name (CALL clip.refresh embeds
-- it; the auto-refresh worker keeps it embedded) whose labels come from `label_column`, or,
-- without one, from the file names in the image column (clip.label_from_filename).
CREATE OR REPLACE FUNCTION clip.add_reference_set(name text, source regclass, id_column text, image_column text,
                                       label_column text DEFAULT NULL, model text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF label_column IS NULL
       AND clip._column_type(source, image_column) NOT IN ('text'::regtype, 'character varying'::regtype) THEN
        RAISE EXCEPTION 'reference set "%" needs a label column: its images are bytes, with no file name to read a label from', name
            USING ERRCODE = '22023',
            HINT = 'Pass label_column, a column of the table holding each image''s label.';
    END IF;
    IF label_column IS NOT NULL THEN
        PERFORM clip._column_type(source, label_column);
    END IF;
    PERFORM clip.add_collection(name, source, id_column, image_column, model);
    INSERT INTO clip.reference_set (name, label_column) VALUES (add_reference_set.name, add_reference_set.label_column);
END $$;

CREATE OR REPLACE FUNCTION clip.drop_reference_set(name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clip._reference_set(name);
    PERFORM clip.drop_collection(name);
END $$;

-- SQL selecting (reference_id, label, variant) from the set's source table, alias s. The id is
-- not cast, so that a join on it can use the source table's index on its id column.
CREATE OR REPLACE FUNCTION clip._reference_labels_sql(r clip.reference_set, c clip.collection) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.label_column IS NULL
        THEN format('SELECT s.%1$I AS reference_id, f.label, f.variant FROM %2$s s
                     CROSS JOIN LATERAL clip.label_from_filename(s.%3$I) f', c.id_column, c.source, c.image_column)
        ELSE format('SELECT s.%1$I AS reference_id, s.%3$I::text AS label, NULL::text AS variant
                     FROM %2$s s', c.id_column, c.source, r.label_column) END
$$;

-- Every reference of a set with its label and variant, as clip.identify reports them.
CREATE OR REPLACE FUNCTION clip.reference_labels(reference_set text)
RETURNS TABLE (reference_id bigint, label text, variant text) LANGUAGE plpgsql STABLE AS $$
DECLARE r clip.reference_set := clip._reference_set(reference_set); c clip.collection := clip._collection(reference_set);
BEGIN
    RETURN QUERY EXECUTE format('SELECT l.reference_id::bigint, l.label, l.variant FROM (%s) l ORDER BY 1',
                               clip._reference_labels_sql(r, c));
END $$;

-- The references nearest to an embedding: rank, reference id, label, variant, cosine
-- similarity, and margin = this score minus the best score of a candidate with another label
-- (NULL when none of the candidates has another label). The nearest max(k, 10) references are
-- the candidates: through the set's HNSW index with hnsw.ef_search = pg_clip.identify_ef_search,
-- or exactly when the set has fewer than pg_clip.identify_exact_limit references. With
-- min_score / min_margin, rows below them are left out, so a frame that matches nothing well
-- returns no row rather than a wrong one.
CREATE OR REPLACE FUNCTION clip.identify(embedding vector, reference_set text, k int DEFAULT 1,
                              min_score real DEFAULT NULL, min_margin real DEFAULT NULL)
RETURNS TABLE (rank int, reference_id bigint, label text, variant text, score real, margin real)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r clip.reference_set;
    c clip.collection;
    dim int;
    n int := greatest(k, 10);
    exact_limit int := coalesce(nullif(current_setting('pg_clip.identify_exact_limit', true), '')::int, 200);
    ef int := greatest(coalesce(nullif(current_setting('pg_clip.identify_ef_search', true), '')::int, 100), n);
    saved text[];
    exact boolean;
    candidates text;
BEGIN
    IF embedding IS NULL THEN
        RETURN;
    END IF;
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be at least 1' USING ERRCODE = '22023';
    END IF;
    r := clip._reference_set(reference_set);
    SELECT * INTO c FROM clip.collection co WHERE co.name = r.name;
    SELECT m.embed_dim INTO dim FROM clip.model m WHERE m.name = c.model;
    IF vector_dims(embedding) <> dim THEN
        RAISE EXCEPTION 'embedding has % dimensions, reference set "%" (model %) has %', vector_dims(embedding),
            c.name, c.model, dim USING ERRCODE = '22023',
            HINT = format('Embed the query with the set''s model: clip.embed_image(image, %L).', c.model);
    END IF;
    -- counting stops at the limit, so a large set costs no full count
    SELECT count(*) < exact_limit INTO exact FROM (
        SELECT 1 FROM clip.embedding e WHERE e.collection = c.name AND e.model = c.model LIMIT exact_limit) x;
    candidates := CASE WHEN exact
        -- the raw column matches no index expression: a scan of the set and a sort
        THEN format('SELECT e.image_id, e.embedding <=> $1 AS d FROM clip.embedding e
                     WHERE e.collection = %L AND e.model = %L ORDER BY 2 LIMIT $2', c.name, c.model)
        ELSE format('SELECT v.image_id, v.embedding <=> $1 AS d FROM clip.%I v ORDER BY 2 LIMIT $2',
                    c.name || '_embeddings') END;
    IF NOT exact THEN
        -- For this call only. The planner must take the index: pgvector 0.8.0's HNSW cost
        -- estimate rises as ef_search falls (at 10,000 references and ef_search 40 it chose a
        -- 25 ms scan over a 1 ms index search), and a sequential scan's cost leaves out the
        -- detoasting of every vector. With sequential scans off, JIT would be triggered by their
        -- penalty cost, so it goes off too.
        saved := ARRAY[current_setting('hnsw.ef_search', true), current_setting('enable_seqscan'), current_setting('jit')];
        PERFORM set_config('hnsw.ef_search', ef::text, true), set_config('enable_seqscan', 'off', true),
                set_config('jit', 'off', true);
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH cand AS (%1$s),
        lab AS (
            SELECT cand.image_id, (1 - cand.d)::real AS score, l.label, l.variant
            FROM cand JOIN (%2$s) l ON l.reference_id = cand.image_id
        ),
        ranked AS (
            SELECT lab.*, (lab.score - (SELECT max(o.score) FROM lab o WHERE o.label IS DISTINCT FROM lab.label))::real AS margin,
                   row_number() OVER (ORDER BY lab.score DESC, lab.image_id)::int AS rank
            FROM lab
        )
        SELECT x.rank, x.image_id, x.label, x.variant, x.score, x.margin FROM ranked x
        WHERE x.rank <= $3 AND ($4 IS NULL OR x.score >= $4) AND ($5 IS NULL OR x.margin IS NULL OR x.margin >= $5)
        ORDER BY x.rank $q$, candidates, clip._reference_labels_sql(r, c))
        USING embedding, n, k, min_score, min_margin;
    IF NOT exact THEN
        PERFORM set_config('hnsw.ef_search', coalesce(saved[1], '40'), true), set_config('enable_seqscan', saved[2], true),
                set_config('jit', saved[3], true);
    END IF;
END $$;

-- As above, from image bytes: one model call (the set's model), then the search.
CREATE OR REPLACE FUNCTION clip.identify(image bytea, reference_set text, k int DEFAULT 1,
                              min_score real DEFAULT NULL, min_margin real DEFAULT NULL)
RETURNS TABLE (rank int, reference_id bigint, label text, variant text, score real, margin real)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r clip.reference_set := clip._reference_set(reference_set);
    c clip.collection := clip._collection(reference_set);
BEGIN
    IF image IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM clip.identify(clip.embed_image(image, c.model), reference_set, k, min_score, min_margin);
END $$;

-- Many frames at once: one batched model call for all of them (pg_clip.batch_size per call),
-- then one search each. `frame` is the 1-based position in the array; NULL frames give no rows,
-- a frame that cannot be decoded is an ERROR naming its position.
CREATE OR REPLACE FUNCTION clip.identify_many(images bytea[], reference_set text, k int DEFAULT 1,
                                   min_score real DEFAULT NULL, min_margin real DEFAULT NULL)
RETURNS TABLE (frame int, rank int, reference_id bigint, label text, variant text, score real, margin real)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r clip.reference_set := clip._reference_set(reference_set);
    c clip.collection := clip._collection(reference_set);
    -- embedded into a variable first: inside the query, the planner evaluated the model call
    -- twice (measured: twice the time of the same query outside the function)
    vs vector[] := clip.embed_images(images, c.model);
BEGIN
    RETURN QUERY
    SELECT e.ord::int, i.* FROM unnest(vs) WITH ORDINALITY e (v, ord)
    CROSS JOIN LATERAL clip.identify(e.v, reference_set, k, min_score, min_margin) i
    ORDER BY 1, 2;
END $$;

-- Self-test of a reference set: each embedded reference is augmented four ways (crop, small
-- rotation, colour change, blur: clip.augmented_copies), the copies are identified against the
-- set as clip.identify would, and the result says how well the set separates under this model:
-- the share of copies whose top-1 label is their source's, the median and lowest margins
-- (best score of the true label minus best score of another label; negative = misidentified),
-- a margin histogram (bins of 0.1), the most confusable pairs of labels (nearest references with
-- different labels, and how many copies of one were taken for the other), and a verdict from the
-- median margin: above 0.3 strong, 0.1 to 0.3 medium, below 0.1 too alike for this model.
CREATE OR REPLACE FUNCTION clip.verify_reference_set(name text)
RETURNS TABLE (refs bigint, copies bigint, top1_rate real, median_margin real, lowest_margin real,
               verdict text, margin_histogram jsonb, confusable_pairs jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r clip.reference_set := clip._reference_set(name);
    c clip.collection := clip._collection(name);
    bs int := greatest(coalesce(nullif(current_setting('pg_clip.batch_size', true), '')::int, 32) / 4, 1);
    ids bigint[];
    last_id bigint := -9223372036854775808;
    copy_ids bigint[];
    copy_kinds text[];
    copy_images bytea[];
    copy_vectors vector[];
BEGIN
    IF to_regclass('pg_temp.pg_clip_verify_ref') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_verify_ref (reference_id bigint PRIMARY KEY, label text, embedding vector);
        CREATE TEMP TABLE pg_temp.pg_clip_verify_copy (reference_id bigint, kind text, label text, top1 text, margin real);
    END IF;
    TRUNCATE pg_temp.pg_clip_verify_ref, pg_temp.pg_clip_verify_copy;
    EXECUTE format('INSERT INTO pg_temp.pg_clip_verify_ref SELECT l.reference_id::bigint, l.label, e.embedding FROM (%s) l
                    JOIN clip.embedding e ON e.collection = $1 AND e.model = $2 AND e.image_id = l.reference_id',
                   clip._reference_labels_sql(r, c)) USING c.name, c.model;
    IF NOT EXISTS (SELECT 1 FROM pg_temp.pg_clip_verify_ref) THEN
        RAISE EXCEPTION 'reference set "%" has no embedded references', c.name USING ERRCODE = '55000',
            HINT = format('CALL clip.refresh(%L) first.', c.name);
    END IF;
    LOOP
        SELECT array_agg(x.reference_id ORDER BY x.reference_id) INTO ids FROM (
            SELECT v.reference_id FROM pg_temp.pg_clip_verify_ref v WHERE v.reference_id > last_id
            ORDER BY 1 LIMIT bs) x;
        EXIT WHEN ids IS NULL;
        last_id := ids[cardinality(ids)];
        -- the copies, then one embed_images call for them (into variables: inside one query
        -- with the join below, the planner may run the model twice, as it did in identify_many)
        EXECUTE format($q$
            SELECT array_agg(src.id ORDER BY src.id, a.kind), array_agg(a.kind ORDER BY src.id, a.kind),
                   array_agg(a.image ORDER BY src.id, a.kind)
            FROM (SELECT s.%1$I::bigint AS id, %3$s AS img FROM %2$s s WHERE s.%1$I = ANY ($1)) src
            CROSS JOIN LATERAL clip.augmented_copies(src.img) a $q$,
            c.id_column, c.source,
            CASE c.image_kind WHEN 'bytea' THEN format('s.%I', c.image_column)
                              ELSE format('clip.read_image_file(s.%I)', c.image_column) END)
            INTO copy_ids, copy_kinds, copy_images USING ids;
        copy_vectors := clip.embed_images(copy_images, c.model);
        INSERT INTO pg_temp.pg_clip_verify_copy
        SELECT copy_ids[t.ord], copy_kinds[t.ord], v.label, m.top1,
               (greatest(1 - (t.v <=> v.embedding), m.own) - coalesce(m.other, m.lowest))::real
        FROM unnest(copy_vectors) WITH ORDINALITY t (v, ord)
        JOIN pg_temp.pg_clip_verify_ref v ON v.reference_id = copy_ids[t.ord]
        CROSS JOIN LATERAL (
            SELECT (array_agg(i.label ORDER BY i.rank))[1] AS top1,
                   max(i.score) FILTER (WHERE i.label = v.label) AS own,
                   max(i.score) FILTER (WHERE i.label <> v.label) AS other,
                   min(i.score) AS lowest
            FROM clip.identify(t.v, c.name, 10) i) m;
    END LOOP;
    RETURN QUERY
    WITH s AS (
        SELECT count(*) AS n, avg((p.top1 = p.label)::int)::real AS rate,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY p.margin)::real AS med, min(p.margin) AS lo
        FROM pg_temp.pg_clip_verify_copy p
    ),
    hist AS (
        SELECT jsonb_agg(jsonb_build_object('from', round(b * 0.1 - 1.1, 1), 'to', round(b * 0.1 - 1.0, 1), 'copies', n)
                         ORDER BY b) AS h
        FROM (SELECT least(greatest(width_bucket(p.margin, -1, 1, 20), 1), 20) AS b, count(*) AS n FROM pg_temp.pg_clip_verify_copy p GROUP BY 1) x
    ),
    near AS (
        -- each reference's nearest reference with another label
        SELECT DISTINCT ON (least(v.label, i.label), greatest(v.label, i.label))
               least(v.label, i.label) AS a, greatest(v.label, i.label) AS b, i.score
        FROM pg_temp.pg_clip_verify_ref v CROSS JOIN LATERAL clip.identify(v.embedding, c.name, 10) i
        WHERE i.label <> v.label
        ORDER BY least(v.label, i.label), greatest(v.label, i.label), i.score DESC
    ),
    pairs AS (
        SELECT jsonb_agg(jsonb_build_object('labels', jsonb_build_array(n.a, n.b), 'similarity', round(n.score::numeric, 3),
                         'copies_confused', (SELECT count(*) FROM pg_temp.pg_clip_verify_copy p
                                             WHERE (p.label, p.top1) IN ((n.a, n.b), (n.b, n.a))))
                         ORDER BY n.score DESC, n.a, n.b) AS p
        FROM (SELECT * FROM near ORDER BY score DESC, a, b LIMIT 10) n
    )
    SELECT (SELECT count(*) FROM pg_temp.pg_clip_verify_ref), s.n, s.rate, s.med, s.lo,
           CASE WHEN s.med > 0.3 THEN 'strong'
                WHEN s.med >= 0.1 THEN 'medium'
                ELSE 'weak: references too alike for this model' END,
           hist.h, coalesce(pairs.p, '[]')
    FROM s, hist, pairs;
END $$;

-- pg_clip::api::learn::_blend
CREATE OR REPLACE FUNCTION "_blend"(
	"classifier" real[], /* Vec < f32 > */
	"zero_shot" real[], /* :: std :: option :: Option < Vec < f32 > > */
	"cluster" real[] /* :: std :: option :: Option < Vec < f32 > > */
) RETURNS TABLE (
	"probabilities" real[],  /* Vec < f32 > */
	"classifier_weight" real  /* f32 */
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_blend_wrapper';

-- pg_clip::api::learn::_fit_logreg
CREATE OR REPLACE FUNCTION "_fit_logreg"(
	"embeddings" real[], /* Array < f32 > */
	"dim" INT, /* i32 */
	"y" INT[], /* Array < i32 > */
	"classes" INT, /* i32 */
	"options" TEXT /* & str */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_fit_logreg_wrapper';

-- pg_clip::api::learn::_kmeans
CREATE OR REPLACE FUNCTION "_kmeans"(
	"collection" TEXT, /* & str */
	"model" TEXT, /* & str */
	"k" INT, /* i32 */
	"options" TEXT /* & str */
) RETURNS TABLE (
	"ids" bigint[],  /* Vec < i64 > */
	"centroids" real[],  /* Vec < f32 > */
	"clusters" INT[],  /* Vec < i32 > */
	"distances" real[],  /* Vec < f32 > */
	"inertia" double precision,  /* f64 */
	"iterations" INT  /* i32 */
)
STRICT STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_kmeans_wrapper';

-- pg_clip::api::vocab::_rule_sql
CREATE OR REPLACE FUNCTION "_rule_sql"(
	"expanded" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_rule_sql_wrapper';

-- pg_clip::api::identify::augmented_copies
CREATE OR REPLACE FUNCTION "augmented_copies"(
	"image" bytea /* & [u8] */
) RETURNS TABLE (
	"kind" TEXT,  /* String */
	"image" bytea  /* Vec < u8 > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'augmented_copies_wrapper';

-- pg_clip::api::embed::embed_image
CREATE OR REPLACE FUNCTION "embed_image"(
	"image" bytea, /* Option < & [u8] > */
	"model" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS vector /* Option < Vector > */
STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_image_wrapper';

-- pg_clip::api::embed::embed_images
CREATE OR REPLACE FUNCTION "embed_images"(
	"images" bytea[], /* :: std :: option :: Option < Array < & [u8] > > */
	"model" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS vector[] /* :: std :: option :: Option < Vec < Option < Vector > > > */
STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_images_wrapper';

-- pg_clip::api::embed::embed_text
CREATE OR REPLACE FUNCTION "embed_text"(
	"text" TEXT, /* Option < & str > */
	"model" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS vector /* Option < Vector > */
STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_text_wrapper';

-- pg_clip::api::embed::embed_texts
CREATE OR REPLACE FUNCTION "embed_texts"(
	"texts" TEXT[], /* :: std :: option :: Option < Array < & str > > */
	"model" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS vector[] /* :: std :: option :: Option < Vec < Option < Vector > > > */
STABLE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_texts_wrapper';

-- pg_clip::api::collection::file_sha256
CREATE OR REPLACE FUNCTION "file_sha256"(
	"path" TEXT /* & str */
) RETURNS bytea /* :: std :: option :: Option < Vec < u8 > > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'file_sha256_wrapper';

-- pg_clip::api::collection::in_transaction_block
CREATE OR REPLACE FUNCTION "in_transaction_block"() RETURNS bool /* bool */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'in_transaction_block_wrapper';

-- pg_clip::api::identify::label_from_filename
CREATE OR REPLACE FUNCTION "label_from_filename"(
	"path" TEXT /* & str */
) RETURNS TABLE (
	"label" TEXT,  /* String */
	"variant" TEXT  /* Option < String > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'label_from_filename_wrapper';

-- pg_clip::api::vocab::parse_vocabulary
CREATE OR REPLACE FUNCTION "parse_vocabulary"(
	"yaml" TEXT /* & str */
) RETURNS TABLE (
	"position" INT,  /* i32 */
	"code" TEXT,  /* String */
	"kind" TEXT,  /* String */
	"label" TEXT,  /* String */
	"description" TEXT,  /* Option < String > */
	"tag" TEXT,  /* Option < String > */
	"prompts" TEXT[],  /* :: std :: option :: Option < Vec < String > > */
	"center" double precision,  /* Option < f64 > */
	"scale" double precision,  /* Option < f64 > */
	"grp" TEXT,  /* Option < String > */
	"rule" TEXT,  /* Option < String > */
	"rule_expanded" TEXT,  /* Option < String > */
	"rule_codes" TEXT[],  /* :: std :: option :: Option < Vec < String > > */
	"threshold" double precision  /* f64 */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'parse_vocabulary_wrapper';

-- pg_clip::api::identify::read_image_file
CREATE OR REPLACE FUNCTION "read_image_file"(
	"path" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'read_image_file_wrapper';

-- pg_clip::api::vocab::read_vocabulary_file
CREATE OR REPLACE FUNCTION "read_vocabulary_file"(
	"path" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'read_vocabulary_file_wrapper';

-- pg_clip::api::model::register_model
CREATE OR REPLACE FUNCTION "register_model"(
	"name" TEXT, /* & str */
	"folder" TEXT /* & str */
) RETURNS TABLE (
	"name" TEXT,  /* String */
	"folder" TEXT,  /* String */
	"embed_dim" INT,  /* i32 */
	"image_size" INT,  /* i32 */
	"context_length" INT,  /* i32 */
	"stamp" TEXT,  /* String */
	"device" TEXT  /* String */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'register_model_wrapper';

-- pg_clip::api::collection::try_embed_files
CREATE OR REPLACE FUNCTION "try_embed_files"(
	"paths" TEXT[], /* Array < & str > */
	"model" TEXT /* & str */
) RETURNS TABLE (
	"ord" INT,  /* i32 */
	"content_sha256" bytea,  /* :: std :: option :: Option < Vec < u8 > > */
	"embedding" vector,  /* Option < Vector > */
	"error_sqlstate" TEXT,  /* Option < String > */
	"error_message" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'try_embed_files_wrapper';

-- pg_clip::api::collection::try_embed_images
CREATE OR REPLACE FUNCTION "try_embed_images"(
	"images" bytea[], /* Array < & [u8] > */
	"model" TEXT /* & str */
) RETURNS TABLE (
	"ord" INT,  /* i32 */
	"content_sha256" bytea,  /* :: std :: option :: Option < Vec < u8 > > */
	"embedding" vector,  /* Option < Vector > */
	"error_sqlstate" TEXT,  /* Option < String > */
	"error_message" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'try_embed_images_wrapper';

-- finalize
-- Runs last, after every function exists: who may do what (the README's privilege table).
--
-- Everyone may embed with the registered models and read the collections whose source tables
-- they may read. Writing pg_clip's tables (collections, refreshes, vocabularies, labels, fits,
-- clusterings, reference sets) is for the extension's owner and the roles it makes managers
-- with clip.grant_manager(role). Row security keeps every role, managers included, to the
-- collections whose source tables it may read (superusers and the extension's owner are exempt,
-- as PostgreSQL exempts table owners).

-- Who may read what: the schema and the registered models, everyone; a collection's data, the
-- roles that may read its source table (the row-security policies below).
GRANT USAGE ON SCHEMA clip TO PUBLIC;
GRANT SELECT ON clip.model, clip.collection, clip.embedding, clip.embedding_error, clip.embedding_version,
    clip.refresh_state, clip.refresh_progress, clip.vocabulary, clip.vocabulary_attribute,
    clip.collection_vocabulary, clip.feature_image_attribute, clip.reference_set, clip.label, clip.classifier,
    clip.classifier_weight, clip.clustering, clip.cluster_centroid, clip.cluster_assignment TO PUBLIC;

-- Row security on every table that holds a collection's data. (Made again by every version's
-- script: a policy has no CREATE OR REPLACE.)
DO $$
DECLARE t text; rule text;
BEGIN
    FOR t, rule IN
        SELECT u, 'collection IN (SELECT r FROM clip._readable_collections() r)'
        FROM unnest(ARRAY['embedding', 'embedding_error', 'embedding_version', 'refresh_queue', 'refresh_state',
                          'feature_image_attribute', 'collection_vocabulary', 'attribute_score_state',
                          'image_score_state', 'label', 'classifier', 'classification', 'clustering',
                          'cluster_assignment']) u
        UNION ALL VALUES ('reference_set', 'name IN (SELECT r FROM clip._readable_collections() r)'),
                         ('classifier_weight', 'name IN (SELECT k.name FROM clip.classifier k)'),
                         ('cluster_centroid', 'clustering IN (SELECT z.name FROM clip.clustering z)')
    LOOP
        EXECUTE format('ALTER TABLE clip.%I ENABLE ROW LEVEL SECURITY', t);
        -- (looked up first: DROP POLICY IF EXISTS would say NOTICE on a fresh install)
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = ('clip.' || t)::regclass AND polname = 'readable') THEN
            EXECUTE format('DROP POLICY readable ON clip.%I', t);
        END IF;
        EXECUTE format('CREATE POLICY readable ON clip.%I USING (%s)', t, rule);
    END LOOP;
    -- the source tables' triggers run as the role that writes the rows: it may queue them
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = 'clip.refresh_queue'::regclass AND polname = 'queue_writes') THEN
        DROP POLICY queue_writes ON clip.refresh_queue;
    END IF;
    CREATE POLICY queue_writes ON clip.refresh_queue FOR INSERT
        WITH CHECK (collection IN (SELECT c.name FROM clip.collection c WHERE clip._may_write_source(c)));
END $$;
GRANT INSERT ON clip.refresh_queue TO PUBLIC;

-- What a manager holds (clip.grant_manager gives it, clip.revoke_manager takes it back): the
-- rows of clip's tables, and every function and procedure but model registration and these.
CREATE OR REPLACE FUNCTION clip._manager_privileges(role regrole, give boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    verb text := CASE WHEN give THEN 'GRANT' ELSE 'REVOKE' END;
    dir text := CASE WHEN give THEN 'TO' ELSE 'FROM' END;
BEGIN
    FOR t IN SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = 'clip'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('%s SELECT, INSERT, UPDATE, DELETE ON %s %s %s', verb, t, dir, role);
    END LOOP;
    EXECUTE format('%s EXECUTE ON ALL FUNCTIONS IN SCHEMA clip %s %s', verb, dir, role);
    EXECUTE format('%s EXECUTE ON ALL PROCEDURES IN SCHEMA clip %s %s', verb, dir, role);
    IF give THEN
        EXECUTE format('REVOKE EXECUTE ON FUNCTION clip.register_model(text, text), clip.grant_manager(regrole),
                        clip.revoke_manager(regrole), clip._manager_privileges(regrole, boolean) FROM %s', role);
    END IF;
END $$;

-- Internal functions are not for PUBLIC: the triggers, the SECURITY DEFINER helpers, the batch
-- embedders and file readers behind clip.refresh. (Triggers fire whoever writes; managers get
-- EXECUTE from clip.grant_manager.) The helpers that public functions call stay callable and
-- are safe with any argument: they read through the row-security policies or compute only.
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_clip'
        WHERE (p.proname LIKE '\_%' OR p.proname IN ('try_embed_images', 'try_embed_files', 'file_sha256', 'register_model'))
          AND p.proname NOT IN ('_collection', '_may_read', '_readable_collections', '_may_write_source',
                                '_reference_set', '_reference_labels_sql', '_probabilities', '_current_classifier',
                                '_class_code', '_check_name', '_vocabulary', '_group_classes', '_blend')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

-- Make `role` a pg_clip manager: it may create and refresh collections, load vocabularies,
-- label, fit and cluster, for the collections whose source tables it may read. Registering
-- models stays with superusers (it reads server files). Run by the extension's owner.
CREATE OR REPLACE FUNCTION clip.grant_manager(role regrole) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clip._manager_privileges(role, true);
END $$;

CREATE OR REPLACE FUNCTION clip.revoke_manager(role regrole) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clip._manager_privileges(role, false);
END $$;
REVOKE ALL ON FUNCTION clip.grant_manager(regrole), clip.revoke_manager(regrole) FROM PUBLIC;

-- Every function runs with a pinned search_path: pg_catalog, clip, pgvector's schema (found
-- now: PostgreSQL 15 has no @extschema:vector@), then pg_temp last, so that no name a function
-- looks up resolves to a user's object (temporary relations are named pg_temp.* where used).
-- A user can neither shadow an operator such as <=> nor a type such as vector from a schema of
-- theirs. (Moving pgvector to another schema later breaks these paths: upgrade scripts must run
-- this block again.)
DO $$
DECLARE
    vec name := (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'vector');
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_clip'
        -- (not CALL clip.refresh: a procedure with SET cannot COMMIT. It runs as its caller and
        -- all it does is call pinned functions and write clip's tables, named in full.)
        WHERE p.prokind <> 'p'
          -- (SECURITY DEFINER functions keep their own, stricter path: pg_catalog, pg_temp)
          AND NOT p.prosecdef
          -- (the SQL functions of the row-security policies stay inlinable, which a SET clause
          -- prevents: the planner folds them into each query instead of calling them per row:
          -- 0.23 ms less per identify for a reader. Their bodies name everything in full.)
          AND p.proname NOT IN ('_may_read', '_readable_collections', '_may_write_source')
    LOOP
        EXECUTE format('ALTER ROUTINE %s SET search_path = pg_catalog, clip, %I, pg_temp', f, vec);
    END LOOP;
END $$;

-- A manager made before this version's functions existed gets EXECUTE on them too (the roles,
-- other than the owner, that clip.grant_manager gave INSERT on clip.collection).
DO $$
DECLARE r regrole;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = 'clip.collection'::regclass AND a.privilege_type = 'INSERT' AND a.grantee <> c.relowner
               AND a.grantee <> 0 LOOP
        PERFORM clip._manager_privileges(r, true);
    END LOOP;
END $$;
