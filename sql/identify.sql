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
--
-- When the set has a projection head (clip.train_projection) and pg_clip.identify_projection
-- is on, the query is projected through the newest head and compared with the projected
-- references (their own HNSW index): scores and margins are cosines in the head's space, and
-- `head` says which version answered (NULL: none). A head trained for another model, or
-- before the model was registered again, is stale: a NOTICE says so and the answer is given
-- without it.
CREATE OR REPLACE FUNCTION clip.identify(embedding vector, reference_set text, k int DEFAULT 1,
                              min_score real DEFAULT NULL, min_margin real DEFAULT NULL)
RETURNS TABLE (rank int, reference_id bigint, label text, variant text, score real, margin real, head int)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r clip.reference_set;
    c clip.collection;
    h clip.projection;
    q vector := embedding;
    dim int;
    n int := greatest(k, 10);
    exact_limit int := clip._setting('pg_clip.identify_exact_limit')::int;
    ef int := greatest(clip._setting('pg_clip.identify_ef_search')::int, n);
    saved text[];
    embedded bigint;
    waiting bigint;
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
    SELECT count(*) INTO embedded FROM (
        SELECT 1 FROM clip.embedding e WHERE e.collection = c.name AND e.model = c.model LIMIT greatest(exact_limit, 1)) x;
    exact := embedded < exact_limit;
    -- references not embedded yet would make a wrong answer look like a right one: say so
    IF embedded = 0 THEN
        EXECUTE format('SELECT count(*) FROM %s', c.source) INTO waiting;
        RAISE EXCEPTION 'reference set "%" has no embedded references yet (% rows waiting)', c.name, waiting
            USING ERRCODE = '55000', HINT = format('CALL clip.refresh(%L) embeds them.', c.name);
    END IF;
    -- (counted up to 1,000: a bulk load's queue is not counted through on every call)
    SELECT count(*) INTO waiting FROM (SELECT 1 FROM clip.refresh_queue q WHERE q.collection = c.name LIMIT 1000) x;
    IF waiting > 0 THEN
        RAISE WARNING 'reference set "%" has queued changes that are not embedded yet (%): they are not matched',
            c.name, CASE WHEN waiting < 1000 THEN waiting::text ELSE 'at least 1000' END USING HINT = format('CALL clip.refresh(%L) embeds them (or the auto-refresh worker will).', c.name);
    END IF;
    h := clip._projection_for(c);
    IF h.id IS NOT NULL THEN
        q := clip._project(h.id, embedding::real[]);
    END IF;
    candidates := CASE
        -- the raw column matches no index expression: a scan of the set and a sort
        WHEN exact AND h.id IS NULL
        THEN format('SELECT e.image_id, e.embedding <=> $1 AS d FROM clip.embedding e
                     WHERE e.collection = %L AND e.model = %L ORDER BY 2 LIMIT $2', c.name, c.model)
        WHEN exact
        THEN format('SELECT p.image_id, p.embedding <=> $1 AS d FROM clip.projection_embedding p
                     WHERE p.reference_set = %L ORDER BY 2 LIMIT $2', c.name)
        WHEN h.id IS NULL
        THEN format('SELECT v.image_id, v.embedding <=> $1 AS d FROM clip.%I v ORDER BY 2 LIMIT $2',
                    clip._derived_name(c.name, 'embeddings'))
        -- (the expression and predicate of the set's head index, clip._index_projection)
        ELSE format('SELECT p.image_id, p.embedding::vector(%s) <=> $1 AS d FROM clip.projection_embedding p
                     WHERE p.reference_set = %L ORDER BY 2 LIMIT $2', h.output_dim, c.name) END;
    IF NOT exact THEN
        -- For this call only. The planner must take the index: pgvector 0.8.0's HNSW cost
        -- estimate rises as ef_search falls (at 10,000 references and ef_search 40 it chose a
        -- 25 ms scan over a 1 ms index search), and a sequential scan's cost leaves out the
        -- detoasting of every vector. With sequential scans off, JIT would be triggered by their
        -- penalty cost, so it goes off too; and bitmap scans, which a small set's primary key
        -- offers the planner instead (a scan of the set and a sort).
        saved := ARRAY[current_setting('hnsw.ef_search', true), current_setting('enable_seqscan'), current_setting('jit'),
                       current_setting('enable_bitmapscan')];
        PERFORM set_config('hnsw.ef_search', ef::text, true), set_config('enable_seqscan', 'off', true),
                set_config('jit', 'off', true), set_config('enable_bitmapscan', 'off', true);
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
        SELECT x.rank, x.image_id, x.label, x.variant, x.score, x.margin, $6 FROM ranked x
        WHERE x.rank <= $3 AND ($4 IS NULL OR x.score >= $4) AND ($5 IS NULL OR x.margin IS NULL OR x.margin >= $5)
        ORDER BY x.rank $q$, candidates, clip._reference_labels_sql(r, c))
        USING q, n, k, min_score, min_margin, h.version;
    IF NOT exact THEN
        PERFORM set_config('hnsw.ef_search', coalesce(saved[1], '40'), true), set_config('enable_seqscan', saved[2], true),
                set_config('jit', saved[3], true), set_config('enable_bitmapscan', saved[4], true);
    END IF;
END $$;

-- As above, from image bytes: one model call (the set's model), then the search.
CREATE OR REPLACE FUNCTION clip.identify(image bytea, reference_set text, k int DEFAULT 1,
                              min_score real DEFAULT NULL, min_margin real DEFAULT NULL)
RETURNS TABLE (rank int, reference_id bigint, label text, variant text, score real, margin real, head int)
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
RETURNS TABLE (frame int, rank int, reference_id bigint, label text, variant text, score real, margin real, head int)
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
-- With a projection head, as clip.identify answers: in the head's space (`head`: its version).
CREATE OR REPLACE FUNCTION clip.verify_reference_set(name text)
RETURNS TABLE (refs bigint, copies bigint, top1_rate real, median_margin real, lowest_margin real,
               verdict text, margin_histogram jsonb, confusable_pairs jsonb, head int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r clip.reference_set := clip._reference_set(name);
    c clip.collection := clip._collection(name);
    h clip.projection := clip._projection_for(c);
    saved text := clip._setting('pg_clip.identify_projection');
    bs int := greatest(clip._setting('pg_clip.batch_size')::int / 4, 1);
    ids bigint[];
    last_id bigint := -9223372036854775808;
    copy_ids bigint[];
    copy_kinds text[];
    copy_images bytea[];
    copy_vectors vector[];
    copy_compared vector[];
BEGIN
    IF h.id IS NULL THEN
        -- (no head, or a stale one, said once above: the identify calls below answer without)
        PERFORM set_config('pg_clip.identify_projection', 'off', true);
    END IF;
    IF to_regclass('pg_temp.pg_clip_verify_ref') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_verify_ref (reference_id bigint PRIMARY KEY, label text, embedding vector,
                                                      compared vector);
        CREATE TEMP TABLE pg_temp.pg_clip_verify_copy (reference_id bigint, kind text, label text, top1 text, margin real);
    END IF;
    TRUNCATE pg_temp.pg_clip_verify_ref, pg_temp.pg_clip_verify_copy;
    -- (`compared`: the reference as identify compares it, through the head when there is one)
    EXECUTE format('INSERT INTO pg_temp.pg_clip_verify_ref
                    SELECT l.reference_id::bigint, l.label, e.embedding, CASE WHEN $3 IS NULL THEN e.embedding ELSE p.embedding END
                    FROM (%s) l
                    JOIN clip.embedding e ON e.collection = $1 AND e.model = $2 AND e.image_id = l.reference_id
                    LEFT JOIN clip.projection_embedding p ON $3 IS NOT NULL AND p.reference_set = $1 AND p.image_id = e.image_id',
                   clip._reference_labels_sql(r, c)) USING c.name, c.model, h.id;
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
            c.id_column, c.source, clip._image_sql(c))
            INTO copy_ids, copy_kinds, copy_images USING ids;
        copy_vectors := clip.embed_images(copy_images, c.model);
        copy_compared := CASE WHEN h.id IS NULL THEN copy_vectors
            ELSE clip._project_rows(h.id, (SELECT array_agg(x::real[] ORDER BY o) FROM unnest(copy_vectors) WITH ORDINALITY u (x, o)),
                                    h.input_dim) END;
        INSERT INTO pg_temp.pg_clip_verify_copy
        SELECT copy_ids[t.ord], copy_kinds[t.ord], v.label, m.top1,
               (greatest(1 - (copy_compared[t.ord] <=> v.compared), m.own) - coalesce(m.other, m.lowest))::real
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
           hist.h, coalesce(pairs.p, '[]'), h.version
    FROM s, hist, pairs;
    PERFORM set_config('pg_clip.identify_projection', saved, true);
END $$;

-- Projection heads: a small network trained on a reference set's embeddings and augmented
-- copies of its references (core/src/learn/projection.rs), through which identify compares
-- when references look alike. The newest version of a set answers.

-- The newest projection head of reference set `name` (NULL: none).
CREATE OR REPLACE FUNCTION clip._newest_projection(name text) RETURNS clip.projection LANGUAGE sql STABLE AS $$
    SELECT p FROM clip.projection p WHERE p.reference_set = _newest_projection.name ORDER BY p.version DESC LIMIT 1
$$;

-- Is head `h` stale for collection `c`: trained for another model than the set's, or for the
-- model as it was registered before (another stamp)?
CREATE OR REPLACE FUNCTION clip._projection_stale(h clip.projection, c clip.collection) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT h.model <> c.model OR h.stamp IS DISTINCT FROM (SELECT m.stamp FROM clip.model m WHERE m.name = c.model)
$$;

-- The head clip.identify answers through for collection `c`: the set's newest, or NULL (none,
-- pg_clip.identify_projection off, or stale, which a NOTICE says).
CREATE OR REPLACE FUNCTION clip._projection_for(c clip.collection) RETURNS clip.projection LANGUAGE plpgsql STABLE AS $$
DECLARE h clip.projection;
BEGIN
    IF NOT clip._setting('pg_clip.identify_projection')::boolean THEN
        RETURN NULL;
    END IF;
    h := clip._newest_projection(c.name);
    IF h.id IS NOT NULL AND clip._projection_stale(h, c) THEN
        RAISE NOTICE 'projection head % of reference set "%" is stale: it was trained for model % as registered then, the set now uses %; answering without it',
            h.version, c.name, h.model, c.model
            USING HINT = format('Train it again: SELECT * FROM clip.train_projection(%L); or drop it: SELECT clip.drop_projection(%L).', c.name, c.name);
        RETURN NULL;
    END IF;
    RETURN h;
END $$;

-- The HNSW index of set `name`'s projected references, for its newest head's output size:
-- made when missing or of another size, dropped when the set has no head. True when the index
-- exists afterwards. SECURITY DEFINER, as clip._index_collection (the index is on a table of
-- the extension's); `name` is a registered reference set's.
CREATE OR REPLACE FUNCTION clip._index_projection(name text) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dim int;
    idx text := clip._derived_name(name, 'head_index');
    vec name := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clip.reference_set r WHERE r.name = _index_projection.name) THEN
        RETURN false;
    END IF;
    dim := (clip._newest_projection(name)).output_dim;
    IF to_regclass(format('clip.%I', idx)) IS NOT NULL
       AND (dim IS NULL OR pg_get_indexdef(to_regclass(format('clip.%I', idx))) NOT LIKE format('%%vector(%s)%%', dim)) THEN
        EXECUTE format('DROP INDEX clip.%I', idx);
    END IF;
    IF dim IS NULL THEN
        RETURN false;
    END IF;
    IF to_regclass(format('clip.%I', idx)) IS NULL THEN
        EXECUTE format('CREATE INDEX %I ON clip.projection_embedding USING hnsw ((embedding::%I.vector(%s)) %I.vector_cosine_ops)
                        WHERE reference_set = %L', idx, vec, dim, vec, name);
    END IF;
    RETURN true;
END $$;

-- Project references `ids` of set `name` (NULL: all of them) through its newest head, when it
-- has one that is not stale, into clip.projection_embedding. Refresh calls it for each batch.
CREATE OR REPLACE FUNCTION clip._project_references(name text, ids bigint[] DEFAULT NULL) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    c clip.collection;
    h clip.projection;
    n bigint;
BEGIN
    h := clip._newest_projection(name);
    IF h.id IS NULL THEN
        RETURN 0;
    END IF;
    SELECT * INTO c FROM clip.collection co WHERE co.name = _project_references.name;
    IF clip._projection_stale(h, c) THEN
        RETURN 0;
    END IF;
    WITH e AS (
        SELECT array_agg(x.image_id ORDER BY x.image_id) AS ids, array_agg(x.embedding::real[] ORDER BY x.image_id) AS vs
        FROM clip.embedding x
        WHERE x.collection = c.name AND x.model = c.model AND (_project_references.ids IS NULL OR x.image_id = ANY (_project_references.ids))
    ),
    put AS (
        INSERT INTO clip.projection_embedding (reference_set, model, image_id, projection, embedding)
        SELECT c.name, c.model, e.ids[t.ord], h.id, t.v
        FROM e, unnest(clip._project_rows(h.id, e.vs, h.input_dim)) WITH ORDINALITY t (v, ord)
        WHERE e.ids IS NOT NULL
        ON CONFLICT (reference_set, image_id) DO UPDATE
            SET model = EXCLUDED.model, projection = EXCLUDED.projection, embedding = EXCLUDED.embedding
        RETURNING 1
    )
    SELECT count(*) INTO n FROM put;
    RETURN n;
END $$;

-- Train a projection head for reference set `reference_set` and keep it as its next version.
-- Embeds `pool_copies` training copies and `eval_copies` stronger held-out copies of every
-- reference (random crop, rotation, perspective, colour, blur, greyscale; seeded by content,
-- so kept in clip.projection_copy and reused by later trainings), trains on the references
-- and their training copies (each label a class), projects every reference, and returns the
-- evaluation on the held-out copies, which the head never saw: for each of `held_out_copies`
-- (copies of every reference) and `held_out_references` (copies of the labels held out of a
-- first training, as references added after training would be), the top-1 rate and the
-- median and lowest margins of the embeddings as they are (`clip`), of the whitening baseline
-- (`whitened`) and through the head (`head`). Options: hidden (512), output (256), temperature
-- (0.1), epochs (12), learning_rate (5e-4), weight_decay (1e-4), classes_per_batch (16),
-- copies_per_class (4), seed (0), pool_copies (8), eval_copies (4), held_out_labels (0.2).
CREATE OR REPLACE FUNCTION clip.train_projection(reference_set text, options jsonb DEFAULT '{}')
RETURNS TABLE (version int, queries text, method text, copies int, top1_rate real, median_margin real, lowest_margin real)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    r clip.reference_set := clip._reference_set(reference_set);
    c clip.collection := clip._collection(reference_set);
    m clip.model;
    o jsonb;
    n_refs int;
    n_labels int;
    bs int := greatest(clip._setting('pg_clip.batch_size')::int, 1);
    todo bigint;
    done bigint := 0;
    part record;
    imgs bytea[];
    vs vector[];
    t0 timestamptz := clock_timestamp();
    t1 timestamptz;
    ref_vs real[];
    ref_labels int[];
    copy_vs real[];
    copy_refs int[];
    copy_held_out boolean[];
    fit record;
    v int;
    ev jsonb;
BEGIN
    SELECT * INTO m FROM clip.model md WHERE md.name = c.model;
    -- one training of a set at a time (the version numbers)
    PERFORM pg_advisory_xact_lock(hashtext('pg_clip.train_projection'), hashtext(c.name));
    IF to_regclass('pg_temp.pg_clip_train_ref') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_train_ref (ord int PRIMARY KEY, reference_id bigint, label int,
                                                     content_sha256 bytea, embedding vector);
    END IF;
    TRUNCATE pg_temp.pg_clip_train_ref;
    EXECUTE format('INSERT INTO pg_temp.pg_clip_train_ref
                    SELECT row_number() OVER (ORDER BY e.image_id), e.image_id, dense_rank() OVER (ORDER BY l.label) - 1,
                           e.content_sha256, e.embedding
                    FROM (%s) l JOIN clip.embedding e ON e.collection = $1 AND e.model = $2 AND e.image_id = l.reference_id
                    WHERE e.stamp = $3 AND l.label IS NOT NULL',
                   clip._reference_labels_sql(r, c)) USING c.name, c.model, m.stamp;
    SELECT count(*), count(DISTINCT t.label) INTO n_refs, n_labels FROM pg_temp.pg_clip_train_ref t;
    IF n_labels < 2 THEN
        RAISE EXCEPTION 'reference set "%" has % embedded references of % labels; a projection head needs at least 2 labels',
            c.name, n_refs, n_labels USING ERRCODE = '55000', HINT = format('CALL clip.refresh(%L) embeds its references.', c.name);
    END IF;
    o := clip._projection_options(options::text, n_refs);
    -- copies embedded under an earlier registration of the model are of no use
    DELETE FROM clip.projection_copy pc WHERE pc.collection = c.name AND pc.model = c.model AND pc.stamp <> m.stamp;
    -- the copies not embedded yet, by content (two references of one picture share theirs)
    IF to_regclass('pg_temp.pg_clip_train_todo') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_train_todo (reference_id bigint, content_sha256 bytea, kind text, copy int);
    END IF;
    TRUNCATE pg_temp.pg_clip_train_todo;
    INSERT INTO pg_temp.pg_clip_train_todo
    SELECT DISTINCT ON (t.content_sha256, k.kind, n.copy) t.reference_id, t.content_sha256, k.kind, n.copy
    FROM pg_temp.pg_clip_train_ref t
    CROSS JOIN (VALUES ('train', (o ->> 'pool_copies')::int), ('held_out', (o ->> 'eval_copies')::int)) k (kind, count)
    CROSS JOIN LATERAL generate_series(0, k.count - 1) n (copy)
    WHERE NOT EXISTS (SELECT 1 FROM clip.projection_copy pc WHERE pc.collection = c.name AND pc.model = c.model
                        AND pc.content_sha256 = t.content_sha256 AND pc.kind = k.kind AND pc.copy = n.copy)
    ORDER BY t.content_sha256, k.kind, n.copy, t.reference_id;
    SELECT count(*) INTO todo FROM pg_temp.pg_clip_train_todo;
    RAISE NOTICE 'reference set "%": % references of % labels; % augmented copies to embed (the rest are kept from earlier trainings)',
        c.name, n_refs, n_labels, todo;
    -- (in batches of pg_clip.batch_size copies; each batch's images are read for it alone)
    FOR part IN
        SELECT x.kind, array_agg(x.reference_id ORDER BY x.i) AS ids, array_agg(x.content_sha256 ORDER BY x.i) AS hashes,
               array_agg(x.copy ORDER BY x.i) AS copies
        FROM (SELECT d.*, row_number() OVER (PARTITION BY d.kind ORDER BY d.content_sha256, d.copy) - 1 AS i
              FROM pg_temp.pg_clip_train_todo d) x
        GROUP BY x.kind, x.i / bs ORDER BY x.kind, min(x.i)
    LOOP
        EXECUTE format('SELECT array_agg(%3$s ORDER BY u.o) FROM unnest($1) WITH ORDINALITY u (id, o)
                        LEFT JOIN %2$s s ON s.%1$I = u.id', c.id_column, c.source, clip._image_sql(c))
            INTO imgs USING part.ids;
        vs := clip._embed_copies(imgs, part.hashes, part.copies, part.kind, c.model);
        INSERT INTO clip.projection_copy (collection, model, stamp, content_sha256, kind, copy, embedding)
        SELECT c.name, c.model, m.stamp, part.hashes[u.ord], part.kind, part.copies[u.ord], u.v
        FROM unnest(vs) WITH ORDINALITY u (v, ord)
        ON CONFLICT DO NOTHING;
        done := done + cardinality(vs);
        RAISE NOTICE 'embedded % of % augmented copies', done, todo;
    END LOOP;
    t1 := clock_timestamp();
    SELECT array_agg(t.embedding::real[] ORDER BY t.ord), array_agg(t.label ORDER BY t.ord) INTO ref_vs, ref_labels
    FROM pg_temp.pg_clip_train_ref t;
    SELECT array_agg(p.embedding::real[] ORDER BY p.ord, p.held_out, p.copy), array_agg(p.ord - 1 ORDER BY p.ord, p.held_out, p.copy),
           array_agg(p.held_out ORDER BY p.ord, p.held_out, p.copy)
    INTO copy_vs, copy_refs, copy_held_out
    FROM (SELECT t.ord, pc.embedding, pc.kind = 'held_out' AS held_out, pc.copy
          FROM pg_temp.pg_clip_train_ref t
          JOIN clip.projection_copy pc ON pc.collection = c.name AND pc.model = c.model AND pc.content_sha256 = t.content_sha256
          WHERE pc.copy < CASE pc.kind WHEN 'train' THEN (o ->> 'pool_copies')::int ELSE (o ->> 'eval_copies')::int END) p;
    SELECT f.* INTO fit FROM clip._fit_projection(ref_vs, ref_labels, copy_vs, copy_refs, copy_held_out, m.embed_dim, o::text) f;
    SELECT coalesce(max(p.version), 0) + 1 INTO v FROM clip.projection p WHERE p.reference_set = c.name;
    INSERT INTO clip.projection (reference_set, version, model, stamp, input_dim, hidden_dim, output_dim, weights, options,
                                 losses, evaluation, refs, labels, copies, embed_seconds, train_seconds)
    VALUES (c.name, v, c.model, m.stamp, fit.input_dim, fit.hidden_dim, fit.output_dim, fit.weights, o, fit.losses,
            fit.evaluation, n_refs, n_labels,
            n_refs * ((o ->> 'pool_copies')::int + (o ->> 'eval_copies')::int),
            extract(epoch FROM t1 - t0), extract(epoch FROM clock_timestamp() - t1));
    -- (the index first: one of another output size would refuse the new head's rows)
    DELETE FROM clip.projection_embedding p WHERE p.reference_set = c.name;
    PERFORM clip._index_projection(c.name);
    PERFORM clip._project_references(c.name);
    ev := fit.evaluation;
    IF (SELECT (h.e ->> 'median_margin')::real <= (b.e ->> 'median_margin')::real OR (h.e ->> 'top1_rate')::real < (b.e ->> 'top1_rate')::real
        FROM jsonb_array_elements(ev) h (e), jsonb_array_elements(ev) b (e)
        WHERE h.e ->> 'queries' = 'held_out_copies' AND b.e ->> 'queries' = 'held_out_copies'
          AND h.e ->> 'method' = 'head' AND b.e ->> 'method' = 'clip') THEN
        RAISE NOTICE 'projection head % of reference set "%" does not help on held-out copies: its median margin or top-1 rate is no better than without it',
            v, c.name USING HINT = format('Compare with SET pg_clip.identify_projection = off, or drop it: SELECT clip.drop_projection(%L).', c.name);
    END IF;
    RETURN QUERY
    SELECT v, x.e ->> 'queries', x.e ->> 'method', (x.e ->> 'copies')::int, (x.e ->> 'top1_rate')::real,
           (x.e ->> 'median_margin')::real, (x.e ->> 'lowest_margin')::real
    FROM jsonb_array_elements(ev) WITH ORDINALITY x (e, i) ORDER BY x.i;
END $$;

-- Drop every projection head of a reference set (identify answers without one again); the
-- number of versions dropped. The embedded augmented copies are kept for a later training.
CREATE OR REPLACE FUNCTION clip.drop_projection(reference_set text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    r clip.reference_set := clip._reference_set(reference_set);
    c clip.collection := clip._collection(reference_set);
    n int;
BEGIN
    WITH d AS (DELETE FROM clip.projection p WHERE p.reference_set = c.name RETURNING 1) SELECT count(*) INTO n FROM d;
    PERFORM clip._index_projection(c.name);
    RETURN n;
END $$;
