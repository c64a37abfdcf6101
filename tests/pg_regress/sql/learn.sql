-- Learning: labels, classifiers (fit, predict, classify, active learning), k-means.
-- The embeddings are generated (three noisy clusters of 64-dim unit vectors, seeded): fitting
-- and clustering read only stored embeddings. The core's agreement with scikit-learn is
-- checked in core/tests/learn.rs; this checks the SQL around it.
\set SHOW_CONTEXT never
SET pg_clip.device = 'cpu';
SET pg_clip.refit_every = 0;
SET client_min_messages = warning;
CREATE TABLE things (id bigint PRIMARY KEY, img bytea);
INSERT INTO things SELECT g, '\x00' FROM generate_series(1, 300) g;
SELECT clip.add_collection('things', 'things', 'id', 'img', 'tiny');
RESET client_min_messages;
SELECT setseed(0.25);
CREATE TEMP TABLE centres AS
SELECT c, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 64) WHERE c >= 0) AS v FROM generate_series(0, 2) c;
-- class of thing id: id % 3 ('a', 'b', 'c'); each row its class centre plus noise
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT 'things', 'tiny', t.id, m.stamp, '\x00',
       l2_normalize((SELECT array_agg(x + (random() - 0.5) * 1.4 ORDER BY i) FROM unnest(ce.v) WITH ORDINALITY u (x, i)
                     WHERE t.id > 0)::vector)
FROM things t JOIN centres ce ON ce.c = t.id % 3 CROSS JOIN clip.model m WHERE m.name = 'tiny';
-- (embeddings written here, so the rows' queue entries are not for refresh to embed)
DELETE FROM clip.refresh_queue WHERE collection = 'things';
CREATE VIEW truth AS SELECT id, (ARRAY['a', 'b', 'c'])[id % 3 + 1] AS label FROM things;

-- guardrails: each says what is missing
SELECT try($$SELECT * FROM clip.fit_classifier('kind', 'things')$$) AS no_labels;
SELECT count(*) FROM (SELECT clip.label('things', id, 'kind', 'a') FROM things WHERE id % 3 = 0 AND id <= 36) x;
SELECT try($$SELECT * FROM clip.fit_classifier('kind', 'things')$$) AS one_class;
SELECT count(*) FROM (SELECT clip.label('things', id, 'kind', 'b') FROM things WHERE id % 3 = 1 AND id <= 9) x;
SELECT try($$SELECT * FROM clip.fit_classifier('kind', 'things')$$) AS class_too_small;
SELECT try($$SELECT * FROM clip.fit_classifier('kind', 'things', '{"folds": 3, "penalty": "l1"}')$$) AS unknown_option;
SELECT try($$SELECT clip.label('things', 1, 'Kind', 'a')$$) AS bad_name;
SELECT try($$SELECT clip.label('nope', 1, 'kind', 'a')$$) AS unknown_collection;
SELECT try($$SELECT * FROM clip.predict_proba('nope', 1)$$) AS unknown_classifier;

-- binary: 3 folds work with 3 labels of b; then more labels, 5 folds, balanced weights. (The
-- collection comes first, as everywhere; 0.1.0's order, above, is still read right.)
SELECT classifier, version, labels, label_counts, (metrics ->> 'folds')::int AS folds
FROM clip.fit_classifier('things', 'kind', '{"folds": 3}');
SELECT count(*) FROM (SELECT clip.label('things', id, 'kind', 'b') FROM things WHERE id % 3 = 1 AND id <= 60) x;
SELECT classifier, version, labels, label_counts,
       (metrics -> 'mean' ->> 'accuracy')::float8 >= 0.9 AS accurate,
       (metrics -> 'mean' ->> 'roc_auc')::float8 >= 0.9 AS auc_high,
       (metrics -> 'mean' ->> 'log_loss')::float8 < 0.5 AS log_loss_low,
       metrics -> 'mean' ?& ARRAY['accuracy', 'precision', 'recall', 'f1', 'roc_auc', 'log_loss'] AS all_metrics,
       metrics -> 'std' ? 'accuracy' AS has_spread
FROM clip.fit_classifier('things', 'kind', '{"C": 0.5, "class_weight": "balanced"}');
-- every fit is kept
SELECT name, version, labels, label_counts, options FROM clip.classifier ORDER BY version;

-- probabilities: two classes summing to 1, equal to the logistic function of the stored
-- weights computed here without pgvector's operator
SELECT label, round(probability::numeric, 3) AS probability FROM clip.predict_proba('kind', 3) ORDER BY label;
WITH w AS (SELECT weight::real[] AS w, intercept FROM clip.classifier_weight WHERE name = 'kind' AND version = 2),
mine AS (
    SELECT e.image_id, 1 / (1 + exp(-((SELECT sum(a * b) FROM unnest(e.embedding::real[], w.w) u (a, b)) + w.intercept))) AS p
    FROM clip.embedding e, w WHERE e.collection = 'things' AND e.image_id <= 30
)
SELECT count(*) AS images,
       max(abs(m.p - (SELECT p.probability FROM clip.predict_proba('kind', m.image_id) p WHERE p.label = 'b'))) < 1e-5 AS same_as_mine,
       bool_and((SELECT sum(p.probability) FROM clip.predict_proba('kind', m.image_id) p) BETWEEN 0.9999 AND 1.0001) AS sum_to_one
FROM mine m;
-- predictions on the a/b things it was not trained on agree with the truth
SELECT count(*) AS held_out, avg((clip.predict('kind', t.id) = t.label)::int) >= 0.9 AS accurate
FROM truth t WHERE t.label IN ('a', 'b') AND t.id > 60;
SELECT try($$SELECT * FROM clip.predict_proba('kind', 100000)$$) AS no_embedding;

-- classify: one attribute per class in clip.feature_image_attribute and the attribute view
SELECT clip.classify('things', 'kind') AS rows_written;
SELECT attribute_code, source, count(*), round(avg(confidence)::numeric, 1) >= 0 AS has_confidence
FROM clip.feature_image_attribute WHERE collection = 'things' GROUP BY 1, 2 ORDER BY 1;
SELECT count(*) AS images, bool_and(abs(kind_a + kind_b - 1) < 1e-5) AS sum_to_one FROM clip.things_attributes;
SELECT avg(((a.kind_b > 0.5) = (t.label = 'b'))::int) >= 0.9 AS columns_follow_truth
FROM clip.things_attributes a JOIN truth t ON t.id = a.image_id WHERE t.label IN ('a', 'b');

-- active learning: unlabelled images, least certain first
SELECT count(*) AS n, bool_and(NOT EXISTS (SELECT 1 FROM clip.label l WHERE l.classifier = 'kind' AND l.image_id = x.image_id))
       AS all_unlabelled,
       bool_and(x.uncertainty BETWEEN 0 AND 1) AS in_range
FROM clip.next_to_label('things', 'kind', 10) x;
WITH x AS (SELECT row_number() OVER () AS r, * FROM clip.next_to_label('things', 'kind', 10))
SELECT bool_and(x.uncertainty >= y.uncertainty) AS most_uncertain_first
FROM x JOIN x y ON y.r = x.r + 1;
-- with no classifier yet: a seeded sample, the same every time
SELECT image_id, prediction FROM clip.next_to_label('things', 'newcomer', 5);
SELECT array_agg(image_id) = (SELECT array_agg(image_id) FROM clip.next_to_label('things', 'newcomer', 5)) AS repeatable
FROM clip.next_to_label('things', 'newcomer', 5);
SELECT label, labelled, predicted, round(predicted_share::numeric, 2) AS share, confident_share > 0.5 AS mostly_confident
FROM clip.label_stats('things', 'kind');
SELECT round(sum(predicted_share)::numeric, 4) AS shares FROM clip.label_stats('things', 'kind');

-- the standardisation is kept with the weights
SELECT vector_dims(scaler_mean) AS dims, vector_dims(scaler_scale) AS scale_dims FROM clip.classifier WHERE name = 'kind' AND version = 2;

-- multinomial: three classes, softmax probabilities, labels from a query
SELECT clip.import_labels('things', 'kind3', 'SELECT id, label FROM truth WHERE id <= 90') AS imported;
SELECT try($$SELECT clip.import_labels('things', 'kind3', 'SELECT id FROM truth')$$) AS one_column;
SELECT classifier, version, labels, label_counts, (metrics -> 'mean' ->> 'accuracy')::float8 >= 0.9 AS accurate,
       metrics -> 'mean' -> 'roc_auc' AS roc_auc
FROM clip.fit_classifier(collection => 'things', name => 'kind3');
SELECT count(*) AS weights FROM clip.classifier_weight WHERE name = 'kind3';
SELECT count(*) AS images, avg((clip.predict('kind3', t.id) = t.label)::int) >= 0.9 AS accurate,
       bool_and(abs((SELECT sum(p.probability) FROM clip.predict_proba('kind3', t.id) p) - 1) < 1e-5) AS sum_to_one
FROM truth t WHERE t.id > 90;
WITH x AS (SELECT * FROM clip.next_to_label('things', 'kind3', 5))
SELECT count(*) AS n, bool_and(x.prediction IN ('a', 'b', 'c')) AS predicted FROM x;

-- automatic refit after pg_clip.refit_every new labels
SET pg_clip.refit_every = 3;
SELECT clip.label('things', 91, 'kind3', 'b');
SELECT clip.label('things', 92, 'kind3', 'c');
SELECT clip.label('things', 93, 'kind3', 'a');
SELECT max(version) AS kind3_versions FROM clip.classifier WHERE name = 'kind3';
RESET pg_clip.refit_every;

-- labelling from a screen: the labeller's name, the history, undo, many at once, the queue's modes
SELECT clip.label('things', 201, 'screen', 'a', 'alice'), clip.label('things', 202, 'screen', 'b', 'alice'),
       clip.label('things', 203, 'screen', 'c', 'bob');
SELECT clip.label('things', 201, 'screen', 'b', 'alice') AS relabel, clip.label('things', 201, 'screen', 'b', 'alice') AS same;
SELECT image_id, label, previous, labelled_by, role = current_user AS by_caller, undoes IS NULL AS plain
FROM clip.label_history WHERE classifier = 'screen' ORDER BY id;
-- undo walks back alice's own changes only; bob's stays
SELECT * FROM clip.undo_label('things', 'screen', 'alice');
SELECT * FROM clip.undo_label('things', 'screen', 'alice');
SELECT image_id, label, labelled_by FROM clip.label WHERE classifier = 'screen' ORDER BY image_id;
-- a label someone else changed since is not overwritten by an undo
SELECT clip.label('things', 201, 'screen', 'c', 'bob');
SELECT try($$SELECT * FROM clip.undo_label('things', 'screen', 'alice')$$) AS changed_since;
SELECT count(*) AS nothing_left FROM (SELECT * FROM clip.undo_label('things', 'screen', 'carol')) x;
SELECT clip.unlabel('things', 203, 'screen', 'bob') AS removed, clip.unlabel('things', 203, 'screen', 'bob') AS again;
SELECT try($$SELECT clip.label('things', 1, 'screen', 'a', '')$$) AS empty_labeller,
       try($$SELECT clip.label('things', 1, 'screen', 'a', repeat('x', 201))$$) AS long_labeller,
       try($$SELECT clip.label('things', 1, 'screen', NULL)$$) AS null_label;
-- many at once (repeated ids once), with the refit they make due
SET pg_clip.refit_every = 50;
SELECT * FROM clip.label_many('things', 'screen', (SELECT array_agg(id) FROM truth WHERE label = 'a' AND id <= 60), 'a', 'alice');
SELECT * FROM clip.label_many('things', 'screen', ARRAY[2, 2, 5, 8, 11, 14, 17, 20], 'b', 'alice');
SELECT changed, refitted_version FROM clip.label_many('things', 'screen',
    (SELECT array_agg(id) FROM truth WHERE label <> 'a' AND id BETWEEN 21 AND 120), 'c', 'alice');
RESET pg_clip.refit_every;
SELECT label, count(*) FROM clip.label WHERE classifier = 'screen' GROUP BY 1 ORDER BY 1;
-- the modes: likely gives the most probable of a class first, random is seeded, exclude is kept out
WITH x AS (SELECT row_number() OVER () AS r, image_id FROM clip.next_to_label('things', 'screen', 20, 'likely', 'a')),
p AS (SELECT x.r, (SELECT q.probability FROM clip.predict_proba('screen', x.image_id) q WHERE q.label = 'a') AS pa FROM x)
SELECT count(*) AS n, bool_and(p.pa >= coalesce(n.pa, 0)) AS descending, min(p.pa) > 0.5 AS likely
FROM p LEFT JOIN p n ON n.r = p.r + 1;
SELECT (SELECT array_agg(image_id) FROM clip.next_to_label('things', 'screen', 5, 'random'))
     = (SELECT array_agg(image_id) FROM clip.next_to_label('things', 'screen', 5, 'random')) AS random_repeats,
       (SELECT array_agg(image_id) FROM clip.next_to_label('things', 'screen', 5, 'random'))
    <> (SELECT array_agg(image_id) FROM clip.next_to_label('things', 'screen', 5)) AS not_uncertain;
WITH first AS (SELECT array_agg(image_id) AS ids FROM clip.next_to_label('things', 'screen', 5))
SELECT bool_and(x.image_id <> ALL (first.ids)) AS excluded, count(*) AS n
FROM first, clip.next_to_label('things', 'screen', 5, exclude => first.ids) x;
-- every image's prediction, as predict_proba gives it
WITH p AS (SELECT * FROM clip.predictions('things', 'screen', 'b')),
q AS (SELECT p.image_id, array_agg(x.probability ORDER BY x.probability DESC) AS ps,
             max(x.probability) FILTER (WHERE x.label = 'b') AS pb,
             (array_agg(x.label ORDER BY x.probability DESC))[1] AS top
      FROM p CROSS JOIN LATERAL clip.predict_proba('screen', p.image_id) x GROUP BY p.image_id)
SELECT count(*) AS images, bool_and(p.prediction = q.top) AS same_prediction,
       bool_and(abs(p.probability - q.ps[1]) < 1e-5) AS same_probability,
       bool_and(abs(p.uncertainty - (1 - (q.ps[1] - q.ps[2]))) < 1e-5) AS uncertainty_is_margin,
       bool_and(abs(p.class_probability - q.pb) < 1e-5) AS class_probability
FROM p JOIN q ON q.image_id = p.image_id;
SELECT try($$SELECT * FROM clip.predictions('things', 'screen', 'zebra')$$) AS unknown_class,
       try($$SELECT * FROM clip.predictions('things', 'nope')$$) AS unknown_classifier;
SELECT try($$SELECT * FROM clip.next_to_label('things', 'screen', 5, 'sideways')$$) AS bad_mode,
       try($$SELECT * FROM clip.next_to_label('things', 'screen', 5, 'likely')$$) AS likely_without_class,
       try($$SELECT * FROM clip.next_to_label('things', 'screen', 5, 'likely', 'zebra')$$) AS unknown_class;

-- k-means: sizes add up, each image's cluster is its nearest centroid, the clusters find the
-- three generating centres, and the same seed gives the same clustering
SELECT cluster, size > 0 AS non_empty, inertia > 0 AS has_inertia FROM clip.kmeans('things', 'blobs', 3);
SELECT sum(size) AS clustered FROM clip.cluster_centroid WHERE clustering = 'blobs';
SELECT count(*) AS nearer_elsewhere
FROM clip.cluster_assignment a JOIN clip.embedding e ON e.collection = 'things' AND e.image_id = a.image_id
JOIN clip.cluster_centroid mine ON mine.clustering = 'blobs' AND mine.cluster = a.cluster
WHERE EXISTS (SELECT 1 FROM clip.cluster_centroid o WHERE o.clustering = 'blobs'
              AND (e.embedding <-> o.centroid) < (e.embedding <-> mine.centroid) - 1e-4);
SELECT abs(sum(a.distance) - (SELECT inertia FROM clip.clustering WHERE name = 'blobs')) < 1e-3 AS inertia_is_sum,
       bool_and(abs(a.distance - (e.embedding <-> c.centroid) ^ 2) < 1e-4) AS distances_squared
FROM clip.cluster_assignment a JOIN clip.embedding e ON e.collection = 'things' AND e.image_id = a.image_id
JOIN clip.cluster_centroid c ON c.clustering = 'blobs' AND c.cluster = a.cluster WHERE a.clustering = 'blobs';
WITH purity AS (
    SELECT a.cluster, max(n)::float8 / sum(n) AS p
    FROM (SELECT a.cluster, t.label, count(*) AS n FROM clip.cluster_assignment a JOIN truth t ON t.id = a.image_id
          WHERE a.clustering = 'blobs' GROUP BY 1, 2) a GROUP BY 1
)
SELECT min(p) >= 0.9 AS clusters_follow_centres FROM purity;
CREATE TEMP TABLE first_run AS SELECT image_id, cluster FROM clip.cluster_assignment WHERE clustering = 'blobs';
-- (0.1.0's order: collection, k, name)
SELECT count(*) FROM clip.kmeans('things', 3, 'blobs', '{"n_init": 4, "seed": 0}');
SELECT count(*) AS moved FROM first_run f JOIN clip.cluster_assignment a ON a.clustering = 'blobs' AND a.image_id = f.image_id
WHERE a.cluster <> f.cluster;
SELECT try($$SELECT * FROM clip.kmeans('things', 301, 'too_many')$$) AS k_too_large;
SELECT try($$SELECT * FROM clip.kmeans('things', 3, 'x', '{"init": "random"}')$$) AS unknown_option;

-- a vocabulary with a softmax group whose members match the classifier's classes, scored
SELECT count(*) FROM clip.load_vocabulary('kinds', $$
version: 1
base_attributes:
  - {code: a, description: "a red square", group: kind}
  - {code: b, description: "a blue circle", group: kind}
  - {code: shiny, description: "something shiny"}
$$);
SELECT clip.attach_vocabulary('things', 'kinds');
SET client_min_messages = warning;
CALL clip.refresh('things');
RESET client_min_messages;
-- the view has the vocabulary's columns, then the classifier's
SELECT attname FROM pg_attribute WHERE attrelid = 'clip.things_attributes'::regclass AND attnum > 0 ORDER BY attnum;

-- cluster priors: each cluster's nearest member of the group (recomputed here), and agreement
-- with the labels of the classifier named like the group
CREATE TEMP TABLE priors AS SELECT * FROM clip.cluster_prior('things', 'blobs', 'kind');
SELECT count(*) AS clusters, bool_and(prior IN ('a', 'b')) AS priors_named,
       bool_and(prior_confidence BETWEEN 0.5 AND 1) AS confidence_in_range,
       sum(labelled) = (SELECT count(*) FROM clip.label WHERE classifier = 'kind') AS labels_counted,
       bool_and(trustworthy IS NOT DISTINCT FROM (agreement >= 0.7)) AS verdict_follows_agreement
FROM priors;
SELECT bool_and(p.prior = (SELECT a.code FROM clip.vocabulary_attribute a
                           JOIN clip.text_embedding t ON t.model = 'tiny' AND t.prompts = a.prompts
                           WHERE a.vocabulary = 'kinds' AND a.grp = 'kind'
                           ORDER BY z.centroid <=> t.embedding LIMIT 1)) AS nearest_member
FROM priors p JOIN clip.cluster_centroid z ON z.clustering = 'blobs' AND z.cluster = p.cluster;
SELECT try($$SELECT * FROM clip.cluster_prior('things', 'blobs', 'nope')$$) AS unknown_group;

-- decisions: the blend of the classifier, the zero-shot group and the cluster prior, checked
-- against the formula on every image (the formula's own cases are in the core's unit tests)
CREATE TEMP TABLE decided AS SELECT * FROM clip.decide('things', 'kind', 'kind', 'blobs');
SELECT count(*) AS images, bool_and(decision IN ('a', 'b')) AS decided,
       bool_and(abs(classifier_weight - (2 * classifier_probability - 1)) < 1e-4) AS weight_is_certainty,
       bool_and(abs(confidence - (classifier_weight * CASE WHEN decision = classifier_label THEN classifier_probability
                                                           ELSE 1 - classifier_probability END
                                  + (1 - classifier_weight) * (zero_shot + cluster_prior) / 2)) < 1e-4) AS formula,
       bool_and(confidence >= 0.5) AS decision_is_the_larger,
       count(*) FILTER (WHERE decision <> classifier_label) < count(*) / 2 AS classifier_mostly_kept
FROM decided;
SELECT count(*) AS without_clusters FROM clip.decide('things', 'kind', 'kind') WHERE cluster_prior IS NULL;
SELECT try($$SELECT * FROM clip.decide('things', 'kind3', 'kind')$$) AS classes_unmatched;

-- an image deleted from the source loses its classifier rows and cluster assignment at the next
-- refresh; one re-embedded with other content loses them at once (classify again to predict it)
DELETE FROM things WHERE id = 299;
SET client_min_messages = warning;
CALL clip.refresh('things');
RESET client_min_messages;
UPDATE clip.embedding SET content_sha256 = '\x01' WHERE collection = 'things' AND image_id = 298;
UPDATE clip.embedding SET embedded_at = now() WHERE collection = 'things' AND image_id = 297;
SELECT i.id,
       (SELECT count(*) FROM clip.feature_image_attribute f
        WHERE f.collection = 'things' AND f.image_id = i.id AND f.source = 'classifier') AS classifier_rows,
       (SELECT count(*) FROM clip.cluster_assignment a WHERE a.image_id = i.id) AS assignments
FROM (VALUES (297), (298), (299)) i (id);
SELECT count(*) AS classifier_rows FROM clip.feature_image_attribute WHERE collection = 'things' AND source = 'classifier';

-- dropping the collection removes labels, classifiers and clusterings
SELECT clip.drop_collection('things');
SELECT (SELECT count(*) FROM clip.label) AS labels, (SELECT count(*) FROM clip.classifier) AS classifiers,
       (SELECT count(*) FROM clip.clustering) AS clusterings, (SELECT count(*) FROM clip.cluster_assignment) AS assignments;
