-- pg_clip collection lifecycle: CALL clip.refresh (embed, then score), the batches the
-- auto-refresh worker runs, and clip.drop_collection. Last of the function files, since these
-- call into all of them: embedding (collections.sql), scoring (vocabulary.sql), learning.

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
        -- (thumbnails by content: one per distinct image and size)
        thumbs AS (
            INSERT INTO clip.thumbnail (collection, content_sha256, size, jpeg)
            SELECT $1, content_sha256, greatest(clip._setting('pg_clip.thumbnail_size')::int, 16), thumbnail
            FROM res WHERE embedding IS NOT NULL AND thumbnail IS NOT NULL
            ON CONFLICT DO NOTHING
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
        CASE c.image_kind WHEN 'bytea' THEN '_try_embed_images' ELSE '_try_embed_files' END)
        INTO embedded, failed USING c.name, target, cur_stamp, ids;
    -- a reference set's projection head projects its new and changed references
    PERFORM clip._project_references(c.name, ids);
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
            -- puts them back in line); unless the model refused the batch (38000): no row is to
            -- blame, and they wait for a model that works.
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            RAISE WARNING 'pg_clip: refreshing queued rows of collection "%" failed: %', c.name, msg;
            INSERT INTO clip.refresh_state AS s (collection, failed_batches, last_batch_error) VALUES (c.name, 1, msg)
            ON CONFLICT (collection) DO UPDATE SET failed_batches = s.failed_batches + 1, last_batch_error = msg
            RETURNING s.failed_batches INTO fails;
            IF fails >= 2 AND st <> '38000' THEN
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

-- Refresh, step 1: forget deleted rows: embeddings, errors and queue entries whose id is gone
-- from the source (under the collection's lock, taken before any row lock as every writer
-- does). Returns how many embeddings went.
CREATE OR REPLACE FUNCTION clip._refresh_forget_deleted(c clip.collection) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pg_clip.refresh'), hashtext(c.name));
    EXECUTE format('WITH gone AS (DELETE FROM clip.embedding e WHERE e.collection = $1
                        AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%I = e.image_id) RETURNING 1)
                    SELECT count(*) FROM gone', c.source, c.id_column) INTO n USING c.name;
    EXECUTE format('DELETE FROM clip.embedding_error e WHERE e.collection = $1
                        AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%I = e.image_id)', c.source, c.id_column) USING c.name;
    EXECUTE format('DELETE FROM clip.refresh_queue q WHERE q.collection = $1
                        AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%I = q.image_id)', c.source, c.id_column) USING c.name;
    -- thumbnails of content no embedding has any more
    DELETE FROM clip.thumbnail t WHERE t.collection = c.name
        AND NOT EXISTS (SELECT 1 FROM clip.embedding e WHERE e.collection = c.name AND e.content_sha256 = t.content_sha256);
    RETURN n;
END $$;

-- Refresh, step 2: the work list, into pg_temp.pg_clip_todo: queued (changed) rows, and rows
-- with no current embedding for `target` that have not failed. Returns its size, and how many
-- current embeddings need nothing (known failures are neither).
CREATE OR REPLACE FUNCTION clip._refresh_work_list(c clip.collection, target text, cur_stamp text,
                                                   OUT total bigint, OUT unchanged bigint) LANGUAGE plpgsql AS $$
BEGIN
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
    SELECT count(*) INTO total FROM pg_temp.pg_clip_todo;
    SELECT count(*) INTO unchanged FROM clip.embedding e
    WHERE e.collection = c.name AND e.model = target AND e.stamp = cur_stamp
      AND NOT EXISTS (SELECT 1 FROM pg_temp.pg_clip_todo t WHERE t.id = e.image_id);
END $$;

-- Refresh, step 4: with every row embedded (or recorded as failed) under the model being
-- built, switch to it and delete the old model's embeddings; in any case bring the view and
-- indexes in line (an old model's index that could not be dropped at the switch without
-- waiting goes now).
CREATE OR REPLACE FUNCTION clip._refresh_finish_model(c clip.collection) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF c.next_model IS NOT NULL THEN
        UPDATE clip.collection SET model = c.next_model, next_model = NULL WHERE name = c.name;
        PERFORM clip._index_collection(c.name);
        DELETE FROM clip.embedding e WHERE e.collection = c.name AND e.model <> c.next_model;
        RAISE NOTICE 'clip.refresh(%): switched from model % to %', c.name, c.model, c.next_model;
    ELSE
        PERFORM clip._index_collection(c.name);
    END IF;
END $$;

-- CALL clip.refresh('photos'): embed every row without a current embedding, re-embed queued
-- (changed) rows, remove embeddings of deleted rows. Work is committed after each batch of
-- pg_clip.batch_size rows, so a cancel or crash loses at most the batch in flight and the next
-- call continues. Two sessions may refresh the same collection: each batch takes a
-- transaction-scoped advisory lock and re-checks its rows, so no row is embedded twice.
-- A NOTICE reports progress every 5 seconds and a summary at the end; clip.refresh_progress
-- shows the same to other sessions. Must be CALLed outside an explicit transaction block.
-- The steps: forget deleted rows, list the work, embed it batch by batch (step 3, here: only a
-- procedure may COMMIT), finish a model switch, score.
CREATE OR REPLACE PROCEDURE clip.refresh(collection text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection;
    target text;
    cur_stamp text;
    bs int := clip._setting('pg_clip.batch_size')::int;
    ids bigint[];
    todo record;
    n_done bigint := 0;
    n_emb bigint := 0;
    n_fail bigint := 0;
    n_rem bigint;
    got record;
    scored record;
    t0 timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
BEGIN
    IF clip._in_transaction_block() THEN
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

    n_rem := clip._refresh_forget_deleted(c);
    todo := clip._refresh_work_list(c, target, cur_stamp);
    INSERT INTO clip.refresh_state AS r (collection, pid, started_at, updated_at, finished_at, total, done,
                                         embedded, failed, removed, unchanged)
    VALUES (c.name, pg_backend_pid(), t0, clock_timestamp(), NULL, todo.total, 0, 0, 0, n_rem, todo.unchanged)
    ON CONFLICT (collection) DO UPDATE SET pid = EXCLUDED.pid, started_at = EXCLUDED.started_at,
        updated_at = EXCLUDED.updated_at, finished_at = NULL, total = EXCLUDED.total, done = 0, embedded = 0,
        failed = 0, removed = EXCLUDED.removed, unchanged = EXCLUDED.unchanged;
    COMMIT;

    LOOP
        SELECT array_agg(id ORDER BY id) INTO ids FROM (SELECT id FROM pg_temp.pg_clip_todo ORDER BY id LIMIT bs) b;
        EXIT WHEN ids IS NULL;
        got := clip._refresh_batch(c, target, cur_stamp, ids);
        n_emb := n_emb + got.embedded;
        n_fail := n_fail + got.failed;
        DELETE FROM pg_temp.pg_clip_todo WHERE id = ANY (ids);
        n_done := n_done + cardinality(ids);
        UPDATE clip.refresh_state SET updated_at = clock_timestamp(), done = n_done, embedded = n_emb, failed = n_fail
        WHERE refresh_state.collection = c.name;
        COMMIT;
        IF clock_timestamp() - last_notice > interval '5 seconds' THEN
            RAISE NOTICE 'clip.refresh(%): % of % rows, % images/s', c.name, n_done, todo.total,
                round((n_done / greatest(extract(epoch FROM clock_timestamp() - t0), 0.001))::numeric, 1);
            last_notice := clock_timestamp();
        END IF;
    END LOOP;

    PERFORM clip._refresh_finish_model(c);
    IF n_emb > 1000 THEN
        -- fresh statistics before scoring reads the new rows: planned from stale ones, its
        -- anti-joins over tens of thousands of embeddings took minutes instead of seconds
        ANALYZE clip.embedding;
    END IF;
    -- zero-shot scores for the attached vocabulary (what changed only), in their own transaction
    scored := clip._score(c.name);
    IF scored.pairs > 0 OR scored.attributes_changed > 0 THEN
        RAISE NOTICE 'clip.refresh(%): scored % (image, attribute) pairs, % attributes changed', c.name,
            scored.pairs, scored.attributes_changed;
    END IF;
    COMMIT;
    UPDATE clip.refresh_state SET updated_at = clock_timestamp(), finished_at = clock_timestamp()
    WHERE refresh_state.collection = c.name;
    COMMIT;
    RAISE NOTICE 'clip.refresh(%): embedded %, unchanged %, removed %, failed %, % s', c.name, n_emb, todo.unchanged,
        n_rem, n_fail, round(extract(epoch FROM clock_timestamp() - t0)::numeric, 2);
END $$;
