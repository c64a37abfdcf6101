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
    candidates := CASE WHEN exact
        -- the raw column matches no index expression: a scan of the set and a sort
        THEN format('SELECT e.image_id, e.embedding <=> $1 AS d FROM clip.embedding e
                     WHERE e.collection = %L AND e.model = %L ORDER BY 2 LIMIT $2', c.name, c.model)
        ELSE format('SELECT v.image_id, v.embedding <=> $1 AS d FROM clip.%I v ORDER BY 2 LIMIT $2',
                    clip._derived_name(c.name, 'embeddings')) END;
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
    bs int := greatest(clip._setting('pg_clip.batch_size')::int / 4, 1);
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
