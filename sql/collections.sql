-- pg_clip collections: a user's image table kept embedded, incrementally, in committed batches.
-- The bookkeeping is set-based SQL; the model work is clip._try_embed_images (Rust).

-- ERROR 22023 unless `name` is a valid name for a `kind` (collection, vocabulary, classifier,
-- clustering): clip._is_name, with a hint.
CREATE OR REPLACE FUNCTION clip._check_name(kind text, name text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF name IS NULL OR NOT clip._is_name(name) THEN
        RAISE EXCEPTION 'invalid % name "%"', kind, name USING ERRCODE = '22023',
            HINT = format('A %s name is lower-case letters, digits and _, starting with a letter, at most 40 characters.', kind);
    END IF;
END $$;

-- The names of what pg_clip makes at run time for collection `c`: its views (`embeddings`,
-- `attributes`), the HNSW index of model `arg` (`index`, with a pattern matching all of them:
-- `index_pattern`), the HNSW index of a reference set's projected references (`head_index`),
-- the source table's trigger for event suffix `arg` (`trigger`).
CREATE OR REPLACE FUNCTION clip._derived_name(c text, kind text, arg text DEFAULT NULL) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE kind
        WHEN 'embeddings' THEN c || '_embeddings'
        WHEN 'attributes' THEN c || '_attributes'
        WHEN 'index' THEN 'pg_clip_' || c || '_' || left(md5(arg), 8) || '_hnsw'
        WHEN 'index_pattern' THEN '^pg_clip_' || c || '_[0-9a-f]{8}_hnsw$'
        WHEN 'head_index' THEN 'pg_clip_' || c || '_head_hnsw'
        WHEN 'trigger' THEN 'pg_clip_' || c || '_' || arg
    END
$$;

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

-- running: a live backend is in the refresh. One that was terminated or crashed left its row
-- unfinished; its pid is gone (or belongs to a backend started after the refresh was: the
-- start time is visible to roles that may see that backend's statistics).
CREATE OR REPLACE VIEW clip.refresh_progress WITH (security_invoker = true) AS
SELECT collection, pid,
       finished_at IS NULL AND started_at IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(s.pid) a
                       WHERE a.backend_start IS NULL OR a.backend_start <= s.started_at) AS running,
       total, done,
       embedded, failed, removed, unchanged, started_at, updated_at, finished_at,
       round((done / greatest(extract(epoch FROM coalesce(finished_at, updated_at) - started_at), 0.001))::numeric, 2)
           AS images_per_s
FROM clip.refresh_state s;

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
    view_name text := clip._derived_name(name, 'embeddings');
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
        IF to_regclass(format('clip.%I', clip._derived_name(c.name, 'index', m.name))) IS NULL THEN
            EXECUTE format('CREATE INDEX %I ON clip.embedding USING hnsw ((embedding::%I.vector(%s)) %I.vector_cosine_ops)
                            WHERE collection = %L AND model = %L', clip._derived_name(c.name, 'index', m.name), vec, m.embed_dim, vec,
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
        WHERE x.indrelid = 'clip.embedding'::regclass AND i.relname ~ clip._derived_name(c.name, 'index_pattern')
          AND i.relname NOT IN (clip._derived_name(c.name, 'index', c.model),
                                 clip._derived_name(c.name, 'index', coalesce(c.next_model, c.model)))
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
        RETURN QUERY SELECT clip._derived_name(c.name, 'index', c.model);
        IF clip._index_projection(c.name) THEN
            RETURN QUERY SELECT clip._derived_name(c.name, 'head_index');
        END IF;
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
    PERFORM clip._check_name('collection', name);
    -- (looked up first: DROP ... IF EXISTS would say NOTICE for each one missing)
    IF NOT embeddings_only AND to_regclass(format('clip.%I', clip._derived_name(name, 'attributes'))) IS NOT NULL THEN
        EXECUTE format('DROP VIEW clip.%I', clip._derived_name(name, 'attributes'));
    END IF;
    IF NOT attributes_only AND to_regclass(format('clip.%I', clip._derived_name(name, 'embeddings'))) IS NOT NULL THEN
        EXECUTE format('DROP VIEW clip.%I', clip._derived_name(name, 'embeddings'));
    END IF;
    IF NOT attributes_only AND NOT embeddings_only THEN
        FOR idx IN
            SELECT i.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'clip.embedding'::regclass AND i.relname ~ clip._derived_name(name, 'index_pattern')
        LOOP
            EXECUTE format('DROP INDEX clip.%I', idx);
        END LOOP;
        IF to_regclass(format('clip.%I', clip._derived_name(name, 'head_index'))) IS NOT NULL THEN
            EXECUTE format('DROP INDEX clip.%I', clip._derived_name(name, 'head_index'));
        END IF;
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
    m text := coalesce(model, nullif(clip._setting('pg_clip.model'), ''));
    idtype regtype;
    imtype regtype;
    ev record;
BEGIN
    PERFORM clip._check_name('collection', name);
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
    IF imtype <> 'bytea'::regtype AND coalesce(clip._setting('pg_clip.image_root'), '') = '' THEN
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
                                         WHERE t.tgrelid = rel AND t.tgname = clip._derived_name(c.name, 'trigger', ev.suffix));
            IF make THEN
                EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s
                                FOR EACH STATEMENT EXECUTE FUNCTION clip._queue_changes(%L, %L, %L)',
                               clip._derived_name(c.name, 'trigger', ev.suffix), ev.event, rel,
                               CASE WHEN ev.refs <> '' THEN 'REFERENCING ' || ev.refs ELSE '' END,
                               c.name, c.id_column, c.image_column);
            ELSE
                EXECUTE format('DROP TRIGGER %I ON %s', clip._derived_name(c.name, 'trigger', ev.suffix), rel);
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- Text-to-image search: the k images most similar to a text, through the collection's index.
CREATE OR REPLACE FUNCTION clip.search(collection text, query text, k int DEFAULT 10)
RETURNS TABLE (image_id bigint, similarity real) LANGUAGE plpgsql STABLE AS $$
DECLARE c clip.collection;
BEGIN
    c := clip._collection(search.collection);
    RETURN QUERY EXECUTE format('SELECT image_id, (1 - (embedding <=> $1))::real FROM clip.%I
                                 ORDER BY embedding <=> $1 LIMIT $2', clip._derived_name(c.name, 'embeddings'))
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
                                 WHERE image_id <> $3 ORDER BY embedding <=> $1 LIMIT $2', clip._derived_name(c.name, 'embeddings'))
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
            WHERE k.content_sha256 IS DISTINCT FROM clip._file_sha256(s.%3$I)
        ),
        queued AS (INSERT INTO clip.refresh_queue (collection, image_id) SELECT $1, image_id FROM changed RETURNING 1)
        SELECT count(*) FROM queued $q$, c.id_column, c.source, c.image_column) INTO n USING c.name;
    RETURN n;
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
        GROUP BY 2 ORDER BY 3 DESC, 2 $q$, clip._derived_name(c.name, 'embeddings'))
        USING threshold, neighbours, c.name, c.model;
END $$;

-- SQL for the image bytes of collection `c`'s source row `s`: its bytea column, or the file
-- its text column names, read under pg_clip.image_root with clip.read_image_file's checks.
CREATE OR REPLACE FUNCTION clip._image_sql(c clip.collection) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE c.image_kind WHEN 'bytea' THEN format('s.%I', c.image_column)
                             ELSE format('clip.read_image_file(s.%I::text)', c.image_column) END
$$;

-- The source image of one row, read with the caller's rights (a role that may not read the
-- source table gets its ERROR). No such row: ERROR P0002.
CREATE OR REPLACE FUNCTION clip.image(collection text, image_id bigint) RETURNS bytea LANGUAGE plpgsql STABLE AS $$
DECLARE
    c clip.collection := clip._collection(collection);
    b bytea;
BEGIN
    EXECUTE format('SELECT %s FROM %s s WHERE s.%I = $1', clip._image_sql(c), c.source, c.id_column) INTO b USING image_id;
    IF b IS NULL THEN
        RAISE EXCEPTION 'collection "%" has no image %', c.name, image_id USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END $$;

-- A JPEG thumbnail of one row's image, its longer side at most `size` pixels (16 to 1024).
CREATE OR REPLACE FUNCTION clip.thumbnail(collection text, image_id bigint, size int DEFAULT 256) RETURNS bytea
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN clip.make_thumbnail(clip.image(collection, image_id), size);
END $$;
