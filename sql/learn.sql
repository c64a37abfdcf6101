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

-- The current (highest) version of a classifier, or ERROR 42704 naming it. (Not clip._classifier:
-- that is the name of the array type of clip.classifier, and a call with a literal would be a cast.)
CREATE OR REPLACE FUNCTION clip._current_classifier(name text) RETURNS clip.classifier LANGUAGE plpgsql STABLE AS $$
DECLARE k clip.classifier;
BEGIN
    SELECT * INTO k FROM clip.classifier WHERE clip.classifier.name = _current_classifier.name ORDER BY version DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'classifier "%" does not exist', name USING ERRCODE = '42704',
            HINT = 'Label images with clip.label(collection, image_id, classifier, label), then SELECT * FROM clip.fit_classifier(collection, classifier).';
    END IF;
    RETURN k;
END $$;

-- A label as a code: lower case, each run of other characters one _, none at either end ('x'
-- when nothing is left), so that 'Cat!' and 'cat' are both cat. How a label matches an
-- attribute's code, and the end of a classifier's column names.
CREATE OR REPLACE FUNCTION clip._label_code(label text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(nullif(trim(BOTH '_' FROM regexp_replace(lower(label), '[^a-z0-9]+', '_', 'g')), ''), 'x')
$$;

-- The attribute code of a classifier's class, <classifier>_<label code>: a column name of the
-- collection's attribute view.
CREATE OR REPLACE FUNCTION clip._class_code(classifier text, label text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT left(classifier || '_' || clip._label_code(label), 63)
$$;

-- The one writer of labels: set the labels of `ids` for `classifier` (a NULL label removes
-- one), recording each change in clip.label_history with the labeller's name (the caller's
-- role when NULL); the last of repeated ids wins, an unchanged label is no change. `undoes`:
-- the history entry this change undoes. Returns how many labels changed.
CREATE OR REPLACE FUNCTION clip._set_labels(collection text, classifier text, ids bigint[], labels text[],
                                            labelled_by text, undoes bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    c clip.collection := clip._collection(collection);
    who text := coalesce(labelled_by, current_user);
    n bigint;
BEGIN
    PERFORM clip._check_name('classifier', classifier);
    IF cardinality(ids) IS DISTINCT FROM cardinality(labels) THEN
        RAISE EXCEPTION '% image ids but % labels', cardinality(ids), cardinality(labels) USING ERRCODE = '22023';
    END IF;
    IF length(who) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a labeller''s name must have 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF '' = ANY (labels) THEN
        RAISE EXCEPTION 'a label must be a non-empty text' USING ERRCODE = '22023';
    END IF;
    WITH input AS (
        SELECT DISTINCT ON (u.id) u.id, u.label FROM unnest(ids, labels) WITH ORDINALITY u (id, label, o)
        WHERE u.id IS NOT NULL ORDER BY u.id, u.o DESC
    ),
    changed AS (
        SELECT i.id, i.label, l.label AS previous FROM input i
        LEFT JOIN clip.label l ON l.collection = c.name AND l.classifier = classifier AND l.image_id = i.id
        WHERE i.label IS DISTINCT FROM l.label
    ),
    put AS (
        INSERT INTO clip.label AS l (collection, classifier, image_id, label, labelled_by)
        SELECT c.name, classifier, ch.id, ch.label, who FROM changed ch WHERE ch.label IS NOT NULL
        ON CONFLICT ON CONSTRAINT label_pkey DO UPDATE
            SET label = EXCLUDED.label, labelled_by = EXCLUDED.labelled_by, labelled_at = EXCLUDED.labelled_at
    ),
    gone AS (
        DELETE FROM clip.label l USING changed ch
        WHERE l.collection = c.name AND l.classifier = classifier AND l.image_id = ch.id AND ch.label IS NULL
    ),
    logged AS (
        INSERT INTO clip.label_history (collection, classifier, image_id, label, previous, labelled_by, undoes)
        SELECT c.name, classifier, ch.id, ch.label, ch.previous, who, undoes FROM changed ch
        RETURNING 1
    )
    SELECT count(*) INTO n FROM logged;
    RETURN n;
END $$;

-- With pg_clip.refit_every > 0, refit `classifier` once that many labels were given since its
-- last fit; the new version, or NULL (not due, or a refit that cannot run yet, too few labels
-- say, which is a NOTICE).
CREATE OR REPLACE FUNCTION clip._refit_if_due(collection text, classifier text) RETURNS int LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    every int := clip._setting('pg_clip.refit_every')::int;
    last clip.classifier;
    fresh bigint;
    refit record;
BEGIN
    IF every = 0 THEN
        RETURN NULL;
    END IF;
    SELECT * INTO last FROM clip.classifier k WHERE k.name = classifier ORDER BY k.version DESC LIMIT 1;
    SELECT count(*) INTO fresh FROM clip.label l
    WHERE l.collection = collection AND l.classifier = classifier AND (last.fitted_at IS NULL OR l.labelled_at > last.fitted_at);
    IF fresh < every THEN
        RETURN NULL;
    END IF;
    BEGIN
        SELECT * INTO refit FROM clip.fit_classifier(name => classifier, collection => collection,
                                                      options => coalesce(last.options, '{}'));
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'clip.label: classifier "%" not refitted: %', classifier, SQLERRM;
        RETURN NULL;
    END;
    RETURN refit.version;
END $$;

-- Record (or change) one label, given by `labelled_by` (the caller's role when NULL). With
-- pg_clip.refit_every > 0, the classifier is refitted once that many labels were given since
-- its last fit. Returns what it did.
CREATE OR REPLACE FUNCTION clip.label(collection text, image_id bigint, classifier text, label text,
                                      labelled_by text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    c clip.collection := clip._collection(collection);
    v int;
BEGIN
    IF label IS NULL OR label = '' THEN
        RAISE EXCEPTION 'a label must be a non-empty text' USING ERRCODE = '22023',
            HINT = 'clip.unlabel(collection, image_id, classifier) removes a label.';
    END IF;
    PERFORM clip._set_labels(c.name, classifier, ARRAY[image_id], ARRAY[label], labelled_by);
    v := clip._refit_if_due(c.name, classifier);
    IF v IS NULL THEN
        RETURN 'labelled';
    END IF;
    RETURN format('labelled; classifier %s refitted as version %s', classifier, v);
END $$;

-- Give many images one label in one call (a review grid's bulk "label as"): how many labels
-- changed, and the classifier's new version when the labels made a refit due (else NULL).
CREATE OR REPLACE FUNCTION clip.label_many(collection text, classifier text, image_ids bigint[], label text,
                                           labelled_by text DEFAULT NULL)
RETURNS TABLE (changed bigint, refitted_version int) LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    c clip.collection := clip._collection(collection);
BEGIN
    IF label IS NULL OR label = '' THEN
        RAISE EXCEPTION 'a label must be a non-empty text' USING ERRCODE = '22023';
    END IF;
    changed := clip._set_labels(c.name, classifier, image_ids, array_fill(label, ARRAY[cardinality(image_ids)]), labelled_by);
    refitted_version := clip._refit_if_due(c.name, classifier);
    RETURN NEXT;
END $$;

-- Remove a label (recorded in the history); whether there was one.
CREATE OR REPLACE FUNCTION clip.unlabel(collection text, image_id bigint, classifier text, labelled_by text DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
    SELECT clip._set_labels(collection, classifier, ARRAY[image_id], ARRAY[NULL::text], labelled_by) > 0
$$;

-- Undo the last change `labelled_by` (the caller's role when NULL) made to `classifier`'s labels
-- that is not undone yet: the label goes back to what it was. Repeated, it walks further back.
-- Nothing to undo: no row. A label someone else changed since is not overwritten (55000).
CREATE OR REPLACE FUNCTION clip.undo_label(collection text, classifier text, labelled_by text DEFAULT NULL)
RETURNS TABLE (image_id bigint, label text, previous text) LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    c clip.collection := clip._collection(collection);
    who text := coalesce(labelled_by, current_user);
    h clip.label_history;
    now_label text;
BEGIN
    SELECT * INTO h FROM clip.label_history x
    WHERE x.collection = c.name AND x.classifier = classifier AND x.labelled_by = who AND x.undoes IS NULL
      AND NOT EXISTS (SELECT 1 FROM clip.label_history u WHERE u.undoes = x.id)
    ORDER BY x.id DESC LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT l.label INTO now_label FROM clip.label l
    WHERE l.collection = c.name AND l.classifier = classifier AND l.image_id = h.image_id FOR UPDATE;
    IF now_label IS DISTINCT FROM h.label THEN
        RAISE EXCEPTION 'the label of image % was changed since (it is now %)', h.image_id, coalesce(quote_literal(now_label), 'removed')
            USING ERRCODE = '55000', HINT = 'Label the image again instead.';
    END IF;
    PERFORM clip._set_labels(c.name, classifier, ARRAY[h.image_id], ARRAY[h.previous], who, h.id);
    image_id := h.image_id;
    label := h.previous;
    previous := h.label;
    RETURN NEXT;
END $$;

-- Labels from any query returning (image id, label), written into clip.label for classifier
-- `classifier` (a label already there is replaced); returns how many. Then fit_classifier,
-- next_to_label and label_stats see them like labels given one by one.
CREATE OR REPLACE FUNCTION clip.import_labels(collection text, classifier text, query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    c clip.collection := clip._collection(collection);
    ids bigint[];
    labels text[];
BEGIN
    PERFORM clip._check_name('classifier', classifier);
    BEGIN
        EXECUTE format($q$
            SELECT coalesce(array_agg(q.id::bigint), '{}'), coalesce(array_agg(q.label::text), '{}')
            FROM (SELECT * FROM (%s) q (id, label)) q WHERE q.label IS NOT NULL AND q.label::text <> '' $q$, query)
        INTO ids, labels;
    EXCEPTION WHEN syntax_error OR undefined_column OR invalid_column_reference OR datatype_mismatch
                   OR invalid_text_representation THEN
        RAISE EXCEPTION 'the labels query must return two columns, an image id and a label: %', SQLERRM
            USING ERRCODE = '22023', HINT = 'For example: SELECT id, category FROM my_labels';
    END;
    PERFORM clip._set_labels(c.name, classifier, ids, labels, NULL);
    RETURN cardinality(ids);
END $$;

-- Fit classifier `name` on the labels of `collection` (clip.label) and the collection's current
-- embeddings: L2-regularised logistic regression on standardised embeddings, binary or
-- multinomial, after stratified k-fold cross-validation. Options: C (1.0), class_weight
-- ("balanced" or null), max_iter (100), folds (5). Too few labels is an ERROR whose hint says
-- how many more of which class. Each fit is stored as a new version; the old ones are kept.
-- Released as fit_classifier(name, collection), while every other function takes the collection
-- first: a call in that order (the first argument a collection, the second none) is read so.
CREATE OR REPLACE FUNCTION clip.fit_classifier(name text, collection text, options jsonb DEFAULT '{}')
RETURNS TABLE (classifier text, version int, labels text[], label_counts int[], metrics jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection;
    m clip.model;
    folds int;
    lab text[];
    cnt int[];
    total int;
    res jsonb;
    v int;
    short record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clip.collection x WHERE x.name = fit_classifier.collection)
       AND EXISTS (SELECT 1 FROM clip.collection x WHERE x.name = fit_classifier.name) THEN
        SELECT fit_classifier.collection, fit_classifier.name INTO name, collection;
    END IF;
    c := clip._collection(collection);
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
            USING ERRCODE = '55000', HINT = format('Refit it: SELECT * FROM clip.fit_classifier(%L, %L).', k.collection, k.name);
    END IF;
    -- The weights as an array: its elements are stored inline. Joined from clip.classifier_weight,
    -- each 512-dim weight (TOASTed, like the embeddings) was fetched again for every image, half
    -- the time of a prediction over 45,000 images (0.42 s, 0.2 s from the array).
    SELECT array_agg(w.weight ORDER BY w.class), array_agg(w.intercept ORDER BY w.class), array_agg(w.class ORDER BY w.class)
    INTO ws, bs, cls
    FROM clip.classifier_weight w WHERE w.name = k.name AND w.version = k.version;
    RETURN QUERY
    WITH z AS (
        SELECT e.image_id, w.class, w.intercept - (e.embedding <#> w.weight) AS z
        FROM clip.embedding e
        CROSS JOIN unnest(ws, bs, cls) w (weight, intercept, class)
        WHERE e.collection = k.collection AND e.model = k.model AND (ids IS NULL OR e.image_id = ANY (ids))
    ),
    multi AS (SELECT z.*, max(z.z) OVER (PARTITION BY z.image_id) AS peak FROM z)
    SELECT z.image_id, 1, k.labels[2], clip._sigmoid(z.z), z.z FROM z WHERE cardinality(k.labels) = 2
    UNION ALL
    SELECT z.image_id, 0, k.labels[1], clip._sigmoid(-z.z), -z.z FROM z WHERE cardinality(k.labels) = 2
    UNION ALL
    SELECT x.image_id, x.class, k.labels[x.class + 1],
           clip._softmax_term(x.z, x.peak) / sum(clip._softmax_term(x.z, x.peak)) OVER (PARTITION BY x.image_id), x.z
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

-- Every embedded image's prediction by the current classifier: the most probable class, its
-- probability, the uncertainty (1 - the margin between the two most probable classes: 1 is a
-- coin toss), and the probability of `class` when one is named. What a review screen sorts and
-- filters by, and what clip.next_to_label ranks.
CREATE OR REPLACE FUNCTION clip.predictions(collection text, classifier text, class text DEFAULT NULL)
RETURNS TABLE (image_id bigint, prediction text, probability real, uncertainty real, class_probability real)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    k clip.classifier := clip._current_classifier(classifier);
BEGIN
    IF k.collection <> c.name THEN
        RAISE EXCEPTION 'classifier "%" is of collection "%", not "%"', k.name, k.collection, c.name USING ERRCODE = '22023';
    END IF;
    IF predictions.class IS NOT NULL AND NOT predictions.class = ANY (k.labels) THEN
        RAISE EXCEPTION 'classifier "%" has no class %', k.name, quote_literal(predictions.class) USING ERRCODE = '22023',
            HINT = format('Its classes: %s.', array_to_string(k.labels, ', '));
    END IF;
    RETURN QUERY
    WITH p AS (
        SELECT q.image_id, q.label, q.probability,
               row_number() OVER (PARTITION BY q.image_id ORDER BY q.probability DESC, q.class) AS r,
               max(q.probability) FILTER (WHERE q.label = predictions.class) OVER (PARTITION BY q.image_id) AS of_class
        FROM clip._probabilities(k) q
    )
    SELECT p1.image_id, p1.label, p1.probability::real, (1 - (p1.probability - p2.probability))::real, p1.of_class::real
    FROM p p1 JOIN p p2 ON p2.image_id = p1.image_id AND p2.r = 2 WHERE p1.r = 1;
END $$;

-- Active learning: `n` unlabelled images, not in `exclude` (a labelling screen's prefetched
-- queue), with the current classifier's prediction and uncertainty (clip.predictions). Modes:
-- uncertain (the classifier is least sure of them first), likely (the most probable `class`
-- first: finding more of a rare class), random (a seeded sample, the same for the same
-- classifier name). Before a classifier is fitted every mode is random, prediction NULL.
CREATE OR REPLACE FUNCTION clip.next_to_label(collection text, classifier text, n int DEFAULT 20,
                                              mode text DEFAULT 'uncertain', class text DEFAULT NULL,
                                              exclude bigint[] DEFAULT '{}')
RETURNS TABLE (image_id bigint, prediction text, probability real, uncertainty real)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    seed int := hashtext(next_to_label.classifier);
BEGIN
    IF mode IS NULL OR mode NOT IN ('uncertain', 'likely', 'random') THEN
        RAISE EXCEPTION 'mode must be uncertain, likely or random, not %', coalesce(quote_literal(mode), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF mode = 'likely' AND class IS NULL THEN
        RAISE EXCEPTION 'mode likely needs a class' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM clip.classifier x WHERE x.name = next_to_label.classifier AND x.collection = c.name) THEN
        RETURN QUERY
        SELECT e.image_id, NULL::text, NULL::real, NULL::real FROM clip.embedding e
        WHERE e.collection = c.name AND e.model = c.model AND e.image_id <> ALL (coalesce(exclude, '{}'))
          AND NOT EXISTS (SELECT 1 FROM clip.label l WHERE l.collection = c.name AND l.classifier = next_to_label.classifier
                              AND l.image_id = e.image_id)
        ORDER BY hashtextextended(e.image_id::text, seed), e.image_id LIMIT n;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT t.image_id, t.prediction, t.probability, t.uncertainty
    FROM clip.predictions(c.name, next_to_label.classifier, CASE WHEN mode = 'likely' THEN next_to_label.class END) t
    WHERE t.image_id <> ALL (coalesce(exclude, '{}'))
      AND NOT EXISTS (SELECT 1 FROM clip.label l WHERE l.collection = c.name AND l.classifier = next_to_label.classifier
                          AND l.image_id = t.image_id)
    ORDER BY CASE mode WHEN 'uncertain' THEN -t.uncertainty WHEN 'likely' THEN -t.class_probability END,
             CASE WHEN mode = 'random' THEN hashtextextended(t.image_id::text, seed) END,
             t.image_id
    LIMIT n;
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
-- every image's cluster and distance (`clustering` is replaced), and returns the size of
-- each cluster with the inertia (sum of squared distances to the centroids).
CREATE OR REPLACE FUNCTION clip.kmeans(collection text, clustering text, k int, options jsonb DEFAULT '{}')
RETURNS TABLE (cluster int, size bigint, inertia real) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c clip.collection := clip._collection(collection);
    dim int;
    r record;
BEGIN
    PERFORM clip._check_name('clustering', kmeans.clustering);
    SELECT m.embed_dim INTO dim FROM clip.model m WHERE m.name = c.model;
    SELECT * INTO r FROM clip._kmeans(c.name, c.model, k, options::text);
    DELETE FROM clip.clustering x WHERE x.name = kmeans.clustering;
    INSERT INTO clip.clustering (name, collection, model, k, options, inertia, iterations)
    VALUES (kmeans.clustering, c.name, c.model, k, options, r.inertia, r.iterations);
    -- (unnest, not ids[i]: subscripting a large array once per row copies it once per row)
    INSERT INTO clip.cluster_assignment (clustering, collection, image_id, cluster, distance)
    SELECT kmeans.clustering, c.name, u.id, u.cl, u.d FROM unnest(r.ids, r.clusters, r.distances) u (id, cl, d);
    INSERT INTO clip.cluster_centroid (clustering, cluster, centroid, size)
    SELECT kmeans.clustering, g, r.centroids[g * dim + 1 : (g + 1) * dim]::vector, coalesce(n.size, 0)
    FROM generate_series(0, k - 1) g
    LEFT JOIN (SELECT u.cl, count(*) AS size FROM unnest(r.clusters) u (cl) GROUP BY u.cl) n ON n.cl = g;
    RETURN QUERY SELECT x.cluster, x.size, r.inertia::real FROM clip.cluster_centroid x
    WHERE x.clustering = kmeans.clustering ORDER BY x.cluster;
END $$;

-- The same in 0.1.0's order, kmeans(collection, k, name), kept for its callers.
CREATE OR REPLACE FUNCTION clip.kmeans(collection text, k int, name text, options jsonb DEFAULT '{}')
RETURNS TABLE (cluster int, size bigint, inertia real) LANGUAGE sql AS $$
    SELECT * FROM clip.kmeans(collection, name, k, options)
$$;

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
         AND (a.code = clip._label_code(u.l) OR lower(a.label) = lower(u.l))
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
            HINT = 'Make one with SELECT * FROM clip.kmeans(collection, clustering, k).';
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
        SELECT t.*, clip._softmax_term(scale * t.cos, scale * t.peak)
                    / sum(clip._softmax_term(scale * t.cos, scale * t.peak)) OVER (PARTITION BY t.cluster) AS conf
        FROM top t
    ),
    best AS (SELECT DISTINCT ON (s.cluster) s.* FROM soft s ORDER BY s.cluster, s.cos DESC, s.code),
    agree AS (
        SELECT a.cluster, count(*) AS n, avg((clip._label_code(l.label) = b.code)::int) AS share
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
-- p = w x classifier + (1 - w) x mean(zero-shot, cluster prior). See clip._blend and docs/learning.md.
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
        -- softmax weights relative to the nearest member
        SELECT p.cluster, array_agg(clip._softmax_term(scale * p.cos, scale * p.peak)::real ORDER BY p.class) AS probs
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
