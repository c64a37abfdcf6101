-- pg_clip vocabularies: YAML attributes scored, per collection, into clip.feature_image_attribute.
-- The YAML is checked by clip.parse_vocabulary (Rust); storage, diffing and scoring are SQL over
-- the stored embeddings: no image is embedded again to score a new or changed attribute.

-- The logistic function, and a softmax term exp(z - peak) for z at most the peak of its group,
-- with one guard: exp() of less than about -745 is an ERROR in PostgreSQL (not 0), and a real
-- (float4) below 1e-38 too, so the exponent stays within +-80, where the result is 0 or 1 to
-- float8 precision next to the group's peak term of 1. The planner inlines them into the
-- queries that call them (they have no SET search_path, see grants.sql), so their bodies name
-- every function and operator in full.
CREATE OR REPLACE FUNCTION clip._sigmoid(z float8) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 1::pg_catalog.float8 OPERATOR(pg_catalog./)
           (1::pg_catalog.float8 OPERATOR(pg_catalog.+) pg_catalog.exp(least(greatest(OPERATOR(pg_catalog.-) z, -80), 80)))
$$;
CREATE OR REPLACE FUNCTION clip._softmax_term(z float8, peak float8) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.exp(greatest(z OPERATOR(pg_catalog.-) peak, -80))
$$;

-- The calibration a sigmoid attribute is scored with: its own (from the file), else its model's.
-- A SigLIP model with a known bias scores with the sigmoid it was trained with,
-- sigmoid(logit_scale x cosine + logit_bias), that is center = -logit_bias and scale = 1; other
-- models with CLIP's default (clip._clip_calibration(), from the Rust core: center 25.5,
-- scale 1.5). Inlined like clip._sigmoid.
CREATE OR REPLACE FUNCTION clip._calibration(center float8, scale float8, logit_bias real,
                                             OUT center float8, OUT scale float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce($1, OPERATOR(pg_catalog.-) $3::pg_catalog.float8, (clip._clip_calibration())[1]),
           coalesce($2, CASE WHEN $3 IS NULL THEN (clip._clip_calibration())[2] ELSE 1 END)
$$;

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
    PERFORM clip._check_name('vocabulary', vname);
    IF to_regclass('pg_temp.pg_clip_vocab_new') IS NULL THEN
        CREATE TEMP TABLE pg_temp.pg_clip_vocab_new (LIKE clip.vocabulary_attribute);
    END IF;
    TRUNCATE pg_temp.pg_clip_vocab_new;
    -- raises with every problem listed, before anything is written
    INSERT INTO pg_temp.pg_clip_vocab_new
    SELECT vname, p.code, p.position, p.kind, p.label, p.description, p.tag, p.prompts, p.center, p.scale,
           p.grp, p.rule, p.rule_expanded, p.rule_codes, p.threshold
    FROM clip._parse_vocabulary(yaml) p;

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
    RETURN QUERY SELECT * FROM clip.load_vocabulary(name, clip._read_vocabulary_file(path));
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
    IF to_regclass(format('clip.%I', clip._derived_name(collection, 'attributes'))) IS NOT NULL THEN
        EXECUTE format('DROP VIEW clip.%I', clip._derived_name(collection, 'attributes'));
    END IF;
    EXECUTE format('CREATE VIEW clip.%I WITH (security_invoker = true) AS SELECT image_id%s FROM clip.feature_image_attribute
                    WHERE collection = %L GROUP BY image_id', clip._derived_name(collection, 'attributes'),
                   coalesce(', ' || cols, ''), collection);
    EXECUTE format('COMMENT ON VIEW clip.%I IS %L', clip._derived_name(collection, 'attributes'),
                   format('confidences of vocabulary %s and classifiers for collection %s, one column per attribute',
                          coalesce(vocabulary, '(none)'), collection));
    EXECUTE format('GRANT SELECT ON clip.%I TO PUBLIC', clip._derived_name(collection, 'attributes'));
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
    plan record;
    images record;
    rederive text[];
    n bigint;
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

    plan := clip._score_changed_attributes(c, v, m);
    images := clip._score_changed_images(c, m);
    DELETE FROM clip.feature_image_attribute f
    WHERE f.collection = c.name AND f.source IN ('zero_shot', 'derived') AND f.attribute_code = ANY (plan.gone);
    DELETE FROM clip.attribute_score_state s WHERE s.collection = c.name AND s.code = ANY (plan.gone);
    pairs := clip._score_zero_shot(c, v, m, plan.rescore, images.stale);

    -- new calibration: confidences from the stored logits, no model needed
    UPDATE clip.feature_image_attribute f
    SET confidence = clip._sigmoid((f.logit - k.center) / k.scale), scored_at = now()
    FROM clip.vocabulary_attribute a CROSS JOIN LATERAL clip._calibration(a.center, a.scale, m.logit_bias) k
    WHERE a.vocabulary = v AND a.code = ANY (plan.recal)
      AND f.collection = c.name AND f.attribute_code = a.code AND f.source = 'zero_shot';
    GET DIAGNOSTICS n = ROW_COUNT;
    pairs := pairs + n;

    -- derived attributes: everywhere when the rule or what it reads changed, else on stale images
    SELECT array_agg(a.code) INTO rederive
    FROM clip.vocabulary_attribute a LEFT JOIN clip.attribute_score_state s ON s.collection = c.name AND s.code = a.code
    WHERE a.vocabulary = v AND a.kind = 'derived'
      AND (s.code IS NULL OR s.kind <> 'derived' OR s.rule_expanded IS DISTINCT FROM a.rule_expanded
           OR a.rule_codes && (coalesce(plan.rescore, '{}') || coalesce(plan.recal, '{}') || coalesce(plan.gone, '{}')));
    pairs := pairs + clip._score_derived(c, v, m, rederive, images.stale);

    attributes_changed := coalesce(cardinality(plan.gone), 0) + coalesce(cardinality(plan.rescore), 0)
                          + coalesce(cardinality(plan.recal), 0) + coalesce(cardinality(rederive), 0);
    PERFORM clip._score_remember(c, v, m, images.stale, images.emb_version);
    IF pairs > 100000 THEN
        -- after a bulk scoring, fresh statistics for the next incremental one (autovacuum would
        -- get there too, later): the anti-joins above are planned from them
        ANALYZE clip.image_score_state;
        ANALYZE clip.feature_image_attribute;
    END IF;
    IF attributes_changed > 0 OR to_regclass(format('clip.%I', clip._derived_name(c.name, 'attributes'))) IS NULL THEN
        PERFORM clip._attribute_view(c.name, v);
    END IF;
END $$;

-- Scoring, step 1: what changed in vocabulary `v` since collection `c` was last scored: the
-- attributes gone, those to score again for every image (new, other prompts or group or model,
-- and the rest of their softmax groups), those with a new calibration only. An attribute that
-- changed kind (base <-> derived) starts over.
CREATE OR REPLACE FUNCTION clip._score_changed_attributes(c clip.collection, v text, m clip.model, OUT gone text[],
                                                          OUT rescore text[], OUT recal text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
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
    -- (the state holds the calibration used, the model's default included: a model registered
    -- again with another logit_bias recalibrates the attributes that use its default)
    SELECT array_agg(a.code) INTO recal
    FROM clip.vocabulary_attribute a JOIN clip.attribute_score_state s ON s.collection = c.name AND s.code = a.code
    CROSS JOIN LATERAL clip._calibration(a.center, a.scale, m.logit_bias) k
    WHERE a.vocabulary = v AND a.kind = 'base' AND a.grp IS NULL AND a.code <> ALL (coalesce(rescore, '{}'))
      AND (s.center, s.scale) IS DISTINCT FROM (k.center, k.scale);
END $$;

-- Scoring, step 2: images deleted (or embedded under another model) lose their rows; new or
-- re-embedded ones are `stale`. Only when an embedding of the collection changed since the last
-- scoring: the version is read before the images are, so a batch committed meanwhile is seen
-- again next time.
CREATE OR REPLACE FUNCTION clip._score_changed_images(c clip.collection, m clip.model, OUT stale bigint[],
                                                      OUT emb_version bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
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
END $$;

-- Scoring, step 3: zero-shot rows, for every image of the `rescore` attributes and every
-- attribute of the `stale` images. Returns how many rows it wrote.
CREATE OR REPLACE FUNCTION clip._score_zero_shot(c clip.collection, v text, m clip.model, rescore text[], stale bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    grouped boolean;
    n bigint;
    pairs bigint := 0;
BEGIN
    IF rescore IS NULL AND stale IS NULL THEN
        RETURN 0;
    END IF;
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
                SELECT a.code, a.grp, k.center, k.scale, coalesce(a.code = ANY ($6), false) AS everywhere,
                       (ARRAY[t.embedding])[1] AS embedding
                FROM clip.vocabulary_attribute a
                CROSS JOIN LATERAL clip._calibration(a.center, a.scale, $9) k
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
                 -- softmax over the image's group, from its peak
                 THEN 'clip._softmax_term(q.logit, q.peak) / sum(clip._softmax_term(q.logit, q.peak)) OVER (PARTITION BY q.image_id, q.grp)'
                 ELSE 'clip._sigmoid((q.logit - q.center) / q.scale)' END,
            CASE WHEN grouped
                 THEN '(SELECT p.*, max(p.logit) OVER (PARTITION BY p.image_id, p.grp) AS peak FROM pairs p)'
                 ELSE 'pairs' END)
            INTO n USING c.name, v, m.name, m.stamp, m.logit_scale, rescore, stale, grouped, m.logit_bias;
        pairs := pairs + n;
    END LOOP;
    RETURN pairs;
END $$;

-- Scoring, step 4: derived attributes, everywhere for `rederive`, on the `stale` images for the
-- others. Returns how many rows it wrote.
CREATE OR REPLACE FUNCTION clip._score_derived(c clip.collection, v text, m clip.model, rederive text[], stale bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
    n bigint;
    pairs bigint := 0;
BEGIN
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
    RETURN pairs;
END $$;

-- Scoring, step 5: what the rows now come from, so that the next scoring does only what changes.
CREATE OR REPLACE FUNCTION clip._score_remember(c clip.collection, v text, m clip.model, stale bigint[], emb_version bigint)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    INSERT INTO clip.attribute_score_state AS s (collection, code, kind, model, stamp, prompts, center, scale, grp, rule_expanded)
    SELECT c.name, a.code, a.kind, m.name, m.stamp, a.prompts,
           CASE WHEN a.kind = 'base' AND a.grp IS NULL THEN k.center END,
           CASE WHEN a.kind = 'base' AND a.grp IS NULL THEN k.scale END, a.grp, a.rule_expanded
    FROM clip.vocabulary_attribute a CROSS JOIN LATERAL clip._calibration(a.center, a.scale, m.logit_bias) k
    WHERE a.vocabulary = v
    ON CONFLICT (collection, code) DO UPDATE SET kind = EXCLUDED.kind, model = EXCLUDED.model, stamp = EXCLUDED.stamp,
        prompts = EXCLUDED.prompts, center = EXCLUDED.center, scale = EXCLUDED.scale, grp = EXCLUDED.grp,
        rule_expanded = EXCLUDED.rule_expanded;
    INSERT INTO clip.image_score_state (collection, image_id, model, stamp, content_sha256)
    SELECT c.name, e.image_id, e.model, e.stamp, e.content_sha256 FROM clip.embedding e
    WHERE e.collection = c.name AND e.model = m.name AND e.image_id IN (SELECT unnest(stale));
    UPDATE clip.collection_vocabulary cv SET scored_embedding_version = emb_version
    WHERE cv.collection = c.name AND cv.scored_embedding_version IS DISTINCT FROM emb_version;
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
        SELECT a.code, a.position, k.center, k.scale, m.logit_scale * (1 - (s.embedding <=> t.embedding)) AS logit
        FROM clip.vocabulary_attribute a
        CROSS JOIN LATERAL clip._calibration(a.center, a.scale, m.logit_bias) k
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
