-- Real export layouts (the fixtures of models/gen_fixtures.py, in $PG_CLIP_FIXTURES): each
-- family registers with what pg_clip read from it, a fixed-batch model refreshes a collection
-- without recording any row as failed, a model's own failure leaves the rows queued, and a
-- SigLIP model scores with its own sigmoid.
SET pg_clip.device = 'cpu';
\getenv fixtures PG_CLIP_FIXTURES
\getenv root PG_CLIP_ROOT
SET client_min_messages = warning;
\set SHOW_CONTEXT never

-- every family (immich's __openai graphs with exact GELU draw a WARNING)
SELECT name, family, embed_dim, image_size, context_length, image_batch, text_batch
FROM clip.register_model('fx_static', :'fixtures' || '/immich-static/ViT-B-32__openai', '{"preprocess": "immich"}');
SELECT name, family, image_batch, text_batch FROM clip.register_model('fx_dynamic', :'fixtures' || '/immich-dynamic', '{"preprocess": "immich"}');
SELECT name, family, image_batch FROM clip.register_model('fx_external', :'fixtures' || '/external');
SELECT name, family, image_size, context_length FROM clip.register_model('fx_siglip', :'fixtures' || '/siglip');
SELECT name, family, context_length FROM clip.register_model('fx_mclip', :'fixtures' || '/mclip');
-- nllb-clip is SigLIP-trained: without its trained logit values it says so
SELECT name, family FROM clip.register_model('fx_nllb', :'fixtures' || '/nllb');
SELECT name, family FROM clip.register_model('fx_nllb', :'fixtures' || '/nllb',
                                             '{"language": "fra_Latn", "logit_scale": 50, "logit_bias": -5}');
SELECT name, family, logit_scale, logit_bias, image_batch, text_batch, options
FROM clip.model WHERE name LIKE 'fx\_%' ORDER BY name;

-- the stamp covers the options that change vectors and the external data files
SELECT (SELECT stamp FROM clip.model WHERE name = 'fx_dynamic')
       <> (SELECT stamp FROM clip.register_model('fx_dynamic_openclip', :'fixtures' || '/immich-dynamic')) AS flavour_in_stamp;

-- bad options and folders, each named
SELECT try($$SELECT clip.register_model('x', 'tiny-clip', '{"preprocess": "pil"}')$$) AS unknown_flavour;
SELECT try($$SELECT clip.register_model('x', 'tiny-clip', '{"colour": 1}')$$) AS unknown_option;
SELECT try($$SELECT clip.register_model('x', 'tiny-clip', '{"logit_bias": "high"}')$$) AS not_a_number;
SELECT try($$SELECT clip.register_model('x', 'tiny-clip', '{"language": "french"}')$$) AS not_a_code;
SELECT replace(try($$SELECT clip.register_model('x', 'tiny-clip', '{"language": "fra_Latn"}')$$), :'root', '$ROOT') AS language_for_clip;
SELECT replace(try(format('SELECT clip.register_model(%L, %L, %L)', 'x', :'fixtures' || '/nllb', '{"language": "spa_Latn"}')),
               :'fixtures', '$FIXTURES') AS language_not_in_vocabulary;
SELECT replace(try(format('SELECT clip.register_model(%L, %L)', 'x', :'fixtures' || '/external-missing')),
               :'fixtures', '$FIXTURES') AS missing_external_data;

-- the same texts and images through every layout: unit vectors of the model's width
SELECT m.name, vector_dims(clip.embed_text('A DOG''s toy_box!', m.name)) AS text_dims,
       round(vector_norm(clip.embed_image((SELECT img FROM images WHERE name = 'photos/rocket.jpg'), m.name))::numeric, 4) AS image_norm
FROM clip.model m WHERE m.name LIKE 'fx\_%' ORDER BY 1;
-- a fixed batch of 1 runs arrays one by one: equal to single calls
SELECT bool_and(round((a.e <=> clip.embed_image(i.img, 'fx_static'))::numeric, 5) = 0) AS batch_equals_single
FROM (SELECT unnest(clip.embed_images(array_agg(img ORDER BY name), 'fx_static')) AS e,
             unnest(array_agg(img ORDER BY name)) AS img
      FROM images WHERE name LIKE 'photos/%') a JOIN images i ON i.img = a.img;

-- a collection on the fixed-batch model: every row embedded, none recorded as failed
CREATE TABLE fx_photos (id int PRIMARY KEY, img bytea);
INSERT INTO fx_photos SELECT row_number() OVER (ORDER BY name), img FROM images WHERE name LIKE 'photos/%';
INSERT INTO fx_photos SELECT 100 + row_number() OVER (ORDER BY name), img FROM images WHERE name LIKE 'photos/%';
SELECT clip.add_collection('fx_static_photos', 'fx_photos', 'id', 'img', model => 'fx_static');
CALL clip.refresh('fx_static_photos');
SELECT (SELECT count(*) FROM clip.embedding WHERE collection = 'fx_static_photos') AS embedded,
       (SELECT count(*) FROM clip.embedding_error WHERE collection = 'fx_static_photos') AS failed;

-- a model that fails on its own is an ERROR of the refresh; no row is blamed, all stay queued
SELECT name FROM clip.register_model('fx_refuses', :'fixtures' || '/refuses-batches');
SELECT clip.add_collection('fx_refused', 'fx_photos', 'id', 'img', model => 'fx_refuses');
CALL clip.refresh('fx_refused');
SELECT (SELECT count(*) FROM clip.embedding WHERE collection = 'fx_refused') AS embedded,
       (SELECT count(*) FROM clip.embedding_error WHERE collection = 'fx_refused') AS failed;
-- the auto-refresh worker's path: rows whose batch the model refused stay queued, however often
INSERT INTO fx_photos SELECT 200 + row_number() OVER (ORDER BY name), img FROM images WHERE name LIKE 'photos/c%';
SELECT clip.refresh_queued('fx_refused') AS handled;
SELECT clip.refresh_queued('fx_refused') AS handled;
SELECT (SELECT count(*) FROM clip.embedding_error WHERE collection = 'fx_refused') AS failed,
       (SELECT count(DISTINCT image_id) FROM clip.refresh_queue WHERE collection = 'fx_refused') AS still_queued;
-- one image at a time, the same model works
SET pg_clip.batch_size = 1;
CALL clip.refresh('fx_refused');
RESET pg_clip.batch_size;
SELECT (SELECT count(*) FROM clip.embedding WHERE collection = 'fx_refused') AS embedded,
       (SELECT count(*) FROM clip.embedding_error WHERE collection = 'fx_refused') AS failed;

-- SigLIP: an attribute without a calibration of its own scores with the model's sigmoid,
-- sigmoid(logit_scale x cosine + logit_bias); one with its own keeps it
SELECT clip.add_collection('fx_siglip_photos', 'fx_photos', 'id', 'img', model => 'fx_siglip');
SELECT count(*) FROM clip.load_vocabulary('fx_vocab', $y$
version: 1
template: "a photo of {description}"
base_attributes:
  - code: cat
    description: a cat
  - code: rocket
    description: a rocket
    calibration: {center: 20, scale: 2}
$y$);
SELECT clip.attach_vocabulary('fx_siglip_photos', 'fx_vocab');
CALL clip.refresh('fx_siglip_photos');
SELECT f.attribute_code, count(*) AS images,
       bool_and(abs(f.confidence - 1 / (1 + exp(-(f.logit + m.logit_bias)))) < 1e-6) AS model_sigmoid,
       bool_and(abs(f.confidence - 1 / (1 + exp(-(f.logit - 20) / 2))) < 1e-6) AS own_calibration,
       bool_and(abs(f.logit - m.logit_scale * (1 - (e.embedding <=> t.embedding))) < 1e-3) AS logit_is_scale_x_cosine
FROM clip.feature_image_attribute f
JOIN clip.model m ON m.name = f.model
JOIN clip.embedding e ON e.collection = f.collection AND e.image_id = f.image_id
JOIN clip.vocabulary_attribute a ON a.vocabulary = f.vocabulary AND a.code = f.attribute_code
JOIN clip.text_embedding t ON t.model = m.name AND t.prompts = a.prompts
WHERE f.collection = 'fx_siglip_photos'
GROUP BY 1 ORDER BY 1;

-- every family scores the vocabulary: each confidence is its sigmoid of logit_scale x cosine
-- (the model's own for sigmoid-trained models with known logit values, else the file's or CLIP's
-- default), each logit recomputed here from the stored embeddings
SELECT clip.add_collection('fx_' || replace(m, 'fx_', '') || '_s', 'fx_photos', 'id', 'img', model => m),
       clip.attach_vocabulary('fx_' || replace(m, 'fx_', '') || '_s', 'fx_vocab')
FROM unnest(ARRAY['fx_dynamic', 'fx_external', 'fx_mclip', 'fx_nllb', 'fx_static']) m;
CALL clip.refresh('fx_dynamic_s');
CALL clip.refresh('fx_external_s');
CALL clip.refresh('fx_mclip_s');
CALL clip.refresh('fx_nllb_s');
CALL clip.refresh('fx_static_s');
SELECT m.name AS model, m.family, count(*) AS scores,
       bool_and(abs(f.confidence - 1 / (1 + exp(-(f.logit - k.center) / k.scale))) < 1e-6) AS sigmoid_of_logit,
       bool_and(abs(f.logit - m.logit_scale * (1 - (e.embedding <=> t.embedding))) < 1e-3) AS logit_is_scale_x_cosine,
       min(k.center) AS center, min(k.scale) AS scale
FROM clip.feature_image_attribute f
JOIN clip.model m ON m.name = f.model
JOIN clip.embedding e ON e.collection = f.collection AND e.image_id = f.image_id
JOIN clip.vocabulary_attribute a ON a.vocabulary = f.vocabulary AND a.code = f.attribute_code
CROSS JOIN LATERAL clip._calibration(a.center, a.scale, m.logit_bias) k
JOIN clip.text_embedding t ON t.model = m.name AND t.prompts = a.prompts
WHERE f.collection LIKE 'fx\_%' AND f.attribute_code = 'cat'
GROUP BY 1, 2 ORDER BY 1;

-- registered again with another bias, the model recalibrates from the stored logits
SELECT name FROM clip.register_model('fx_nllb', :'fixtures' || '/nllb', '{"language": "fra_Latn", "logit_scale": 50, "logit_bias": -7}');
CALL clip.refresh('fx_nllb_s');
SELECT count(*) AS scores, bool_and(abs(f.confidence - 1 / (1 + exp(-(f.logit - 7)))) < 1e-6) AS new_bias
FROM clip.feature_image_attribute f WHERE f.collection = 'fx_nllb_s' AND f.attribute_code = 'cat';

SELECT clip.drop_collection(c.name) FROM clip.collection c WHERE c.name LIKE 'fx\_%';
DELETE FROM clip.vocabulary WHERE name = 'fx_vocab';
DROP TABLE fx_photos;
DELETE FROM clip.text_embedding WHERE model LIKE 'fx\_%';
DELETE FROM clip.model WHERE name LIKE 'fx\_%';
RESET client_min_messages;
