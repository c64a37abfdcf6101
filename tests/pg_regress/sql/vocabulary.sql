-- Vocabularies: YAML attributes scored into clip.feature_image_attribute and a view per collection,
-- incrementally. Expected values are computed here, independently, from the stored embeddings.
\set SHOW_CONTEXT never
SET pg_clip.device = 'cpu';
SET pg_clip.model = 'tiny';

CREATE TABLE shots (id int PRIMARY KEY, img bytea);
INSERT INTO shots SELECT row_number() OVER (ORDER BY name), img FROM images WHERE name LIKE 'photos/%';
SELECT clip.add_collection('shots', 'shots', 'id', 'img');

-- a file with problems: one ERROR listing every problem with its line and column; nothing stored
SELECT * FROM clip.load_vocabulary('space', $y$
version: 1
base_attributes:
  - code: earth
    description: Earth
  - code: earth
    description: Earth again
  - code: Moon
    description: the Moon
  - code: star
    calibration: {center: high, scale: 1}
    colour: white
derived_attributes:
  - code: both
    rule: earth AND mars
  - code: loop_a
    rule: loop_b OR earth
  - code: loop_b
    rule: NOT loop_a
$y$);
SELECT count(*) AS vocabularies FROM clip.vocabulary;
SELECT * FROM clip.load_vocabulary('Bad Name', 'version: 1');

-- the tiny model's random weights give logits of a few units: centres are set near them
\set space_v1 'version: 1\ncalibration: {center: 2.0, scale: 2.0}\nbase_attributes:\n  - code: earth\n    description: the Earth seen from space\n  - code: moon\n    prompts: ["the Moon", "a photo of the surface of the Moon"]\n    calibration: {center: 1.0, scale: 1.5}\n  - code: packaged\n    prompts: ["a product in its box"]\n    group: packaging\n  - code: unpackaged\n    prompts: ["a product without packaging"]\n    group: packaging\nderived_attributes:\n  - code: earth_and_moon\n    rule: earth AND moon\n  - code: no_moon\n    rule: NOT moon\n  - code: earthish\n    rule: earth OR (earth_and_moon AND NOT packaged)\n'
SELECT * FROM clip.load_vocabulary('space', :'space_v1');
-- the same file again: nothing changed, nothing written
SELECT * FROM clip.load_vocabulary('space', :'space_v1');
SELECT code, kind, label, prompts, center, scale, grp, rule, rule_expanded, clip._rule_sql(rule_expanded) AS rule_sql, threshold
FROM clip.vocabulary_attribute ORDER BY position;

SELECT try($$SELECT clip.attach_vocabulary('shots', 'nope')$$) AS unknown_vocabulary;
SELECT clip.attach_vocabulary('shots', 'space');
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT attribute_code, source, count(*) AS images, count(DISTINCT vocabulary) AS vocabularies
FROM clip.feature_image_attribute GROUP BY 1, 2 ORDER BY 1;

-- sigmoid attributes: logit = 100 x cosine(image, mean of the prompts' embeddings), and
-- confidence = 1 / (1 + exp(-(logit - center) / scale)), recomputed here from the stored vectors
CREATE FUNCTION expected_scores(coll text) RETURNS TABLE (code text, image_id bigint, logit float8, confidence float8)
LANGUAGE sql AS $$
    WITH t AS (
        SELECT a.code, a.center, a.scale, a.grp, l2_normalize(avg(x)) AS q
        FROM clip.vocabulary_attribute a, unnest(clip.embed_texts(a.prompts, 'tiny')) x
        WHERE a.vocabulary = 'space' AND a.kind = 'base' GROUP BY 1, 2, 3, 4
    ),
    l AS (
        SELECT t.code, t.grp, t.center, t.scale, e.image_id, 100 * (1 - (e.embedding <=> t.q)) AS logit
        FROM t, clip.embedding e WHERE e.collection = coll
    )
    SELECT code, image_id, logit,
           CASE WHEN grp IS NULL THEN 1 / (1 + exp(-(logit - center) / scale))
                ELSE exp(logit) / sum(exp(logit)) OVER (PARTITION BY image_id, grp) END
    FROM l
$$;
SELECT x.code, count(*) AS rows, max(abs(f.logit - x.logit)) < 1e-3 AS logits_match,
       max(abs(f.confidence - x.confidence)) < 1e-5 AS confidences_match,
       min(f.confidence) > 0 AND max(f.confidence) < 1 AS in_0_1
FROM expected_scores('shots') x
JOIN clip.feature_image_attribute f ON f.collection = 'shots' AND f.attribute_code = x.code AND f.image_id = x.image_id
GROUP BY 1 ORDER BY 1;
-- a softmax group sums to 1 on every image
SELECT count(*) AS images, bool_and(abs(s - 1) < 1e-6) AS sums_to_1
FROM (SELECT image_id, sum(confidence) AS s FROM clip.feature_image_attribute
      WHERE attribute_code IN ('packaged', 'unpackaged') GROUP BY 1) g;

-- derived: min for AND, max for OR, 1 - x for NOT, on the view (one column per attribute)
SELECT count(*) AS images,
       bool_and(earth_and_moon = least(earth, moon)) AS and_is_min,
       bool_and(abs(no_moon - (1 - moon)) < 1e-6) AS not_is_1_minus,
       bool_and(abs(earthish - greatest(earth, least(earth_and_moon, 1 - packaged))) < 1e-6) AS nested
FROM clip.shots_attributes;
SELECT attname FROM pg_attribute WHERE attrelid = 'clip.shots_attributes'::regclass AND attnum > 0 ORDER BY attnum;
-- hand-checked: the stored rules, evaluated on earth 0.9, moon 0.2, packaged 0.7, give
-- earth AND moon = 0.2, NOT moon = 0.8, earth OR (earth_and_moon AND NOT packaged) = 0.9
CREATE FUNCTION eval_rule(rule_code text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE r numeric;
BEGIN
    EXECUTE format('SELECT round((%s)::numeric, 4) FROM (SELECT 0.9 AS earth, 0.2 AS moon, 0.7 AS packaged) x',
                   (SELECT clip._rule_sql(rule_expanded) FROM clip.vocabulary_attribute WHERE vocabulary = 'space' AND code = rule_code))
        INTO r;
    RETURN r;
END $$;
SELECT eval_rule('earth_and_moon') AS and_, eval_rule('no_moon') AS not_, eval_rule('earthish') AS nested;
DROP FUNCTION eval_rule(text);
-- the view answers queries on attributes and joins to the user's table
SELECT (SELECT count(*) FROM clip.shots_attributes a JOIN shots s ON s.id = a.image_id WHERE a.earth > 0.5 AND NOT a.moon > 0.5)
     = (SELECT count(*) FROM clip.feature_image_attribute e JOIN clip.feature_image_attribute m USING (collection, image_id)
        WHERE e.collection = 'shots' AND e.attribute_code = 'earth' AND m.attribute_code = 'moon'
          AND e.confidence > 0.5 AND NOT m.confidence > 0.5) AS view_agrees;

-- incremental: adding an attribute writes its rows (and nothing else)
CREATE TABLE before AS SELECT * FROM clip.feature_image_attribute;
SELECT * FROM clip.load_vocabulary('space', :'space_v1' || E'  - code: star_field\n    rule: NOT earth\n');
SELECT * FROM clip.load_vocabulary('space', replace(:'space_v1', 'base_attributes:', E'base_attributes:\n  - code: rocket\n    description: a rocket on the launch pad'));
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT (SELECT count(*) FROM clip.feature_image_attribute WHERE attribute_code = 'rocket') AS rocket_rows,
       (SELECT count(*) FROM before b JOIN clip.feature_image_attribute f USING (collection, image_id, attribute_code)
        WHERE (b.*) IS NOT DISTINCT FROM (f.*)) = (SELECT count(*) FROM before) AS others_untouched,
       (SELECT count(*) FROM clip.feature_image_attribute WHERE attribute_code = 'star_field') AS removed_rows;

-- a new calibration recomputes confidences from the stored logits; other attributes and the
-- logits stay as they were; derived attributes reading it follow
TRUNCATE before;
INSERT INTO before SELECT * FROM clip.feature_image_attribute;
SELECT * FROM clip.load_vocabulary('space', replace(replace(:'space_v1', 'base_attributes:', E'base_attributes:\n  - code: rocket\n    description: a rocket on the launch pad'),
    '{center: 1.0, scale: 1.5}', '{center: 3.0, scale: 0.5}'));
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT f.attribute_code, bool_and(f.logit IS NOT DISTINCT FROM b.logit) AS same_logits,
       bool_and(f.confidence = b.confidence) AS same_confidences,
       bool_and(f.scored_at = b.scored_at) AS not_rewritten
FROM clip.feature_image_attribute f JOIN before b USING (collection, image_id, attribute_code)
GROUP BY 1 ORDER BY 1;
SELECT max(abs(f.confidence - 1 / (1 + exp(-(f.logit - 3.0) / 0.5)))) < 1e-6 AS moon_recalibrated
FROM clip.feature_image_attribute f WHERE attribute_code = 'moon';

-- changed images are rescored, deleted ones lose their rows
UPDATE shots SET img = (SELECT img FROM images WHERE name = 'edge/cat.webp') WHERE id = 1;
DELETE FROM shots WHERE id = 2;
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT x.code, count(*) AS rows, max(abs(f.confidence - x.confidence)) < 1e-5 AS confidences_match
FROM expected_scores('shots') x
JOIN clip.feature_image_attribute f ON f.collection = 'shots' AND f.attribute_code = x.code AND f.image_id = x.image_id
GROUP BY 1 ORDER BY 1;
SELECT count(*) AS rows_of_deleted_image FROM clip.feature_image_attribute WHERE image_id = 2;
SELECT count(*) AS images, bool_and(earth_and_moon = least(earth, moon)) AS derived_follow
FROM clip.shots_attributes;

-- a vocabulary with problems changes nothing, even for an existing vocabulary
CREATE TABLE attrs_before AS SELECT * FROM clip.vocabulary_attribute;
SELECT * FROM clip.load_vocabulary('space', :'space_v1' || E'  - code: broken\n    rule: earth AND AND moon\n');
SELECT (SELECT count(*) FROM attrs_before) = (SELECT count(*) FROM clip.vocabulary_attribute a JOIN attrs_before b
        USING (vocabulary, code) WHERE (a.*) IS NOT DISTINCT FROM (b.*)) AS unchanged;

-- detaching removes the scores and the view; dropping the collection removes everything
SELECT clip.detach_vocabulary('shots');
SELECT count(*) AS scores_left, to_regclass('clip.shots_attributes') AS view_left FROM clip.feature_image_attribute;

-- the example vocabularies in vocab/ load and score every image with every attribute
\getenv root PG_CLIP_ROOT
SELECT v AS vocabulary, (SELECT count(*) FROM clip.load_vocabulary(v, pg_read_file(:'root' || '/vocab/' || v || '.yaml'))) AS added
FROM unnest(ARRAY['space', 'packaging', 'photo_library', 'demo']) v;
SELECT clip.attach_vocabulary('shots', 'packaging');
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT count(DISTINCT image_id) AS images, count(DISTINCT attribute_code) AS attributes, count(*) AS rows
FROM clip.feature_image_attribute WHERE collection = 'shots';
SELECT clip.attach_vocabulary('shots', 'photo_library');
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT count(DISTINCT image_id) AS images, count(DISTINCT attribute_code) AS attributes, count(*) AS rows,
       count(DISTINCT vocabulary) AS vocabularies
FROM clip.feature_image_attribute WHERE collection = 'shots';
SELECT clip.attach_vocabulary('shots', 'space');
SET client_min_messages = warning;
CALL clip.refresh('shots');
RESET client_min_messages;
SELECT count(DISTINCT image_id) AS images, count(DISTINCT attribute_code) AS attributes, count(*) AS rows
FROM clip.feature_image_attribute WHERE collection = 'shots';

SELECT clip.drop_collection('shots');
SELECT count(*) AS scores_left FROM clip.feature_image_attribute;
DROP TABLE shots, before, attrs_before;
DROP FUNCTION expected_scores(text);

-- the examples are installed with the extension: load them by file name
SELECT count(*) AS reloaded_unchanged FROM clip.load_vocabulary_file('packaging', 'packaging.yaml');
SELECT try($$SELECT * FROM clip.load_vocabulary_file('x', 'nope.yaml')$$) AS unknown_file;
-- your own files: paths under pg_clip.image_root, confined to it
SELECT set_config('pg_clip.image_root', :'root', false) IS NOT NULL AS root_set;
SELECT count(*) AS reloaded_from_root FROM clip.load_vocabulary_file('photo_library', 'vocab/photo_library.yaml');
SELECT try($$SELECT * FROM clip.load_vocabulary_file('x', '../etc/passwd')$$) AS escape;
RESET pg_clip.image_root;

-- calibration without labels: logits of the collection's images per sigmoid attribute and a
-- suggested sigmoid (median image -> 0.05, 99th percentile -> 0.95), applied on request
CREATE TABLE cal (id int PRIMARY KEY, img bytea);
INSERT INTO cal SELECT row_number() OVER (ORDER BY name), img FROM images WHERE name LIKE 'photos/%';
SELECT clip.add_collection('cal', 'cal', 'id', 'img');
SELECT clip.attach_vocabulary('cal', 'space');
SET client_min_messages = warning;
CALL clip.refresh('cal');
RESET client_min_messages;
SELECT count(*) AS sigmoid_attributes, bool_and(n = 6) AS all_images,
       bool_and(logit_min <= p05 AND p05 <= p25 AND p25 <= p50 AND p50 <= p75 AND p75 <= p95 AND p95 <= p99 AND p99 <= logit_max) AS ordered,
       bool_and(abs(suggested_center - (p50 + p99) / 2) < 1e-4) AS center_rule,
       bool_and(abs(1 / (1 + exp(-(p50 - suggested_center) / suggested_scale)) - 0.05) < 1e-3
                AND abs(1 / (1 + exp(-(p99 - suggested_center) / suggested_scale)) - 0.95) < 1e-3) AS maps_p50_p99
FROM clip.calibrate('cal', 'space');
-- the calibration's logits are the stored ones
SELECT bool_and(abs(k.logit_mean - f.mean) < 1e-3) AS same_logits
FROM clip.calibrate('cal', 'space') k
JOIN (SELECT attribute_code, avg(logit) AS mean FROM clip.feature_image_attribute
      WHERE collection = 'cal' AND source = 'zero_shot' GROUP BY 1) f ON f.attribute_code = k.attribute;
SELECT try($$SELECT * FROM clip.apply_calibration('cal', 'space', ARRAY['photograph'])$$) AS group_member;
SELECT attribute, new_center = (SELECT suggested_center FROM clip.calibrate('cal', 'space') WHERE attribute = 'earth') AS applied
FROM clip.apply_calibration('cal', 'space', ARRAY['earth']);
SET client_min_messages = warning;
CALL clip.refresh('cal');
RESET client_min_messages;
SELECT max(abs(f.confidence - 1 / (1 + exp(-(f.logit - a.center) / a.scale)))) < 1e-5 AS earth_uses_new_calibration
FROM clip.feature_image_attribute f JOIN clip.vocabulary_attribute a ON a.vocabulary = 'space' AND a.code = f.attribute_code
WHERE f.collection = 'cal' AND f.attribute_code = 'earth';
-- loading the file again brings its own calibration back
SELECT * FROM clip.load_vocabulary_file('space', 'space.yaml');
SELECT bin, images FROM clip.logit_histogram('cal', 'earth', 4);
SELECT sum(images) AS binned FROM clip.logit_histogram('cal', 'moon');
SELECT try($$SELECT * FROM clip.logit_histogram('cal', 'nope')$$) AS unknown_attribute;
SELECT clip.drop_collection('cal');
DROP TABLE cal;
