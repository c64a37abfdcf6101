-- make run: the demo model (models/demo-clip, a small CLIP trained on generated images) on
-- generated images it never saw: zero-shot descriptions, a vocabulary as columns, a classifier
-- from labels, identification of camera frames against a reference set.
-- The images come from models/synth/generate.py (make run writes them under .run/demo/).
\set QUIET on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
SELECT name AS registered FROM clip.register_model('demo', 'demo-clip') \gset
SET pg_clip.model = 'demo';
DROP TABLE IF EXISTS demo_images, demo_prompts, demo_cards, demo_frames;
RESET client_min_messages;

\ir demo_tables.sql

\echo
\echo 'pg_clip demo: model "demo" (models/demo-clip), on generated images it was not trained on'
SELECT name, embed_dim, image_size, context_length, left(stamp, 12) AS stamp FROM clip.model WHERE name = 'demo';

-- zero-shot: every colour-and-shape description, and which one each image is nearest
CREATE TABLE demo_prompts AS
SELECT format('a picture of %s %s %s', CASE WHEN c ~ '^[aeiou]' THEN 'an' ELSE 'a' END, c, s) AS prompt, c AS colour, s AS shape
FROM unnest(ARRAY['red', 'orange', 'yellow', 'green', 'blue', 'purple', 'pink', 'black']) c,
     unnest(ARRAY['circle', 'square', 'triangle', 'star', 'heart', 'cross', 'hexagon', 'crescent']) s;
ALTER TABLE demo_prompts ADD COLUMN embedding vector;
UPDATE demo_prompts p SET embedding = e.embedding
FROM (SELECT unnest(array_agg(prompt ORDER BY prompt)) AS prompt,
             unnest(clip.embed_texts(array_agg(prompt ORDER BY prompt))) AS embedding FROM demo_prompts) e
WHERE e.prompt = p.prompt;
SET client_min_messages = warning;
SELECT clip.add_collection('demo', 'demo_images', 'id', 'image') \gset
SELECT count(*) AS attributes FROM clip.load_vocabulary_file('demo', 'demo.yaml') \gset
SELECT clip.attach_vocabulary('demo', 'demo') \gset
CALL clip.refresh('demo');
RESET client_min_messages;
\echo 'The best of 64 descriptions ("a picture of a <colour> <shape>") for some images, against what was drawn:'
SELECT i.file, i.colour || ' ' || i.shape || ' x' || i.count AS drawn, i.style, best.prompt AS best_description,
       round((1 - (e.embedding <=> best.embedding))::numeric, 3) AS cosine
FROM demo_images i JOIN clip.demo_embeddings e ON e.image_id = i.id
CROSS JOIN LATERAL (SELECT prompt, embedding FROM demo_prompts ORDER BY embedding <=> e.embedding LIMIT 1) best
WHERE i.card = '' ORDER BY i.id LIMIT 8;
SELECT round(avg((best.colour = i.colour)::int), 3) AS colour_right, round(avg((best.shape = i.shape)::int), 3) AS shape_right,
       count(*) AS images
FROM demo_images i JOIN clip.demo_embeddings e ON e.image_id = i.id
CROSS JOIN LATERAL (SELECT colour, shape FROM demo_prompts ORDER BY embedding <=> e.embedding LIMIT 1) best
WHERE i.card = '';
\echo 'Text search, clip.search(''demo'', ''a picture of a yellow star'', 5):'
SELECT s.image_id, round(s.similarity::numeric, 3) AS similarity, i.colour, i.shape, i.style
FROM clip.search('demo', 'a picture of a yellow star', 5) s JOIN demo_images i ON i.id = s.image_id;

\echo 'Attribute columns from vocab/demo.yaml,' :attributes 'attributes; the first images:'
SELECT i.file, i.packaged AS truth, round(a.packaged::numeric, 2) AS packaged, round(a.loose::numeric, 2) AS loose,
       i.style AS drawn_as, round(a.photo::numeric, 2) AS photo, round(a.illustration::numeric, 2) AS illustration,
       round(a.screenshot::numeric, 2) AS screenshot, i.card, round(a.card::numeric, 2) AS trading_card
FROM clip.demo_attributes a JOIN demo_images i ON i.id = a.image_id ORDER BY i.id LIMIT 8;

-- a classifier from 60 labels (here taken from the generator's truth; in an application, from
-- clip.label calls as a person labels), scored on the images nobody labelled
SET client_min_messages = warning;
SELECT clip.import_labels('demo', 'packaging',
  'SELECT id, packaged FROM demo_images WHERE card = '''' ORDER BY md5(id::text) LIMIT 60') \gset
RESET client_min_messages;
\echo 'A packaged-vs-loose classifier fitted from 60 labels (cross-validated), and on the unlabelled images:'
SELECT version, labels, label_counts, round((metrics->'mean'->>'accuracy')::numeric, 3) AS cv_accuracy,
       round((metrics->'mean'->>'roc_auc')::numeric, 3) AS cv_roc_auc
FROM clip.fit_classifier('demo', 'packaging', '{"class_weight": "balanced"}');
SELECT round(avg((clip.predict('packaging', i.id) = i.packaged)::int), 3) AS classifier_accuracy,
       round(avg(((a.packaged >= 0.5) = (i.packaged = 'packaged'))::int), 3) AS zero_shot_accuracy, count(*) AS unlabelled_images
FROM demo_images i JOIN clip.demo_attributes a ON a.image_id = i.id
WHERE i.card = '' AND i.id NOT IN (SELECT image_id FROM clip.label WHERE collection = 'demo');
\echo 'What to label next (clip.next_to_label: the most uncertain first):'
SELECT n.image_id, n.prediction, round(n.probability::numeric, 3) AS probability, i.packaged AS truth
FROM clip.next_to_label('demo', 'packaging', 5) n JOIN demo_images i ON i.id = n.image_id;

-- identification: the 48 cards as a reference set, camera frames of them identified
SET client_min_messages = warning;
SELECT clip.add_reference_set('demo_cards', 'demo_cards', 'id', 'image', 'card') \gset
CALL clip.refresh('demo_cards');
RESET client_min_messages;
\echo 'Camera frames of cards identified against the 48 cards (clip.identify_many):'
SELECT f.file AS frame, f.card AS truth, r.label AS identified_as, round(r.score::numeric, 3) AS score,
       round(r.margin::numeric, 3) AS margin
FROM (SELECT array_agg(image ORDER BY id) AS images FROM demo_frames) x
CROSS JOIN LATERAL clip.identify_many(x.images, 'demo_cards') r JOIN demo_frames f ON f.id = r.frame
ORDER BY f.id LIMIT 6;
SELECT count(*) AS frames, round(avg((r.label = f.card)::int), 3) AS top1_rate,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.margin)::numeric, 3) AS median_margin
FROM (SELECT array_agg(image ORDER BY id) AS images FROM demo_frames) x
CROSS JOIN LATERAL clip.identify_many(x.images, 'demo_cards') r JOIN demo_frames f ON f.id = r.frame;

SET client_min_messages = warning;
SELECT clip.drop_reference_set('demo_cards') \gset
SELECT clip.drop_collection('demo') \gset
DROP TABLE demo_images, demo_prompts, demo_cards, demo_frames;
\echo
\echo 'The demo model knows only this generated world. For real photos register a real CLIP:'
\echo '  models/fetch_model.py ViT-B-32__openai models/ViT-B-32__openai   (or models/export_open_clip.py)'
\echo '  SELECT clip.register_model(''vit-b-32'', ''ViT-B-32__openai'');   (docs/models.md)'
