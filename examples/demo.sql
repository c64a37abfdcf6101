-- make run: embed the sample photos and a few prompts with the committed tiny model and show,
-- for each photo, the prompt it is most similar to; then keep the photos as a collection and
-- score them with an example vocabulary, one column per attribute.
-- The tiny model has RANDOM weights: the pipeline is real, the similarities are meaningless.
-- See docs/models.md for real CLIP weights.
\set QUIET on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
SELECT clip.register_model('tiny', 'tiny-clip') \gset
SET pg_clip.model = 'tiny';
DROP TABLE IF EXISTS demo_photos, demo_prompts;
RESET client_min_messages;

\getenv root PG_CLIP_ROOT
CREATE TABLE demo_photos AS
SELECT f AS file, pg_read_binary_file(:'root' || '/tests/images/photos/' || f) AS image
FROM unnest(ARRAY['astronaut.png', 'camera.png', 'chelsea.png', 'coffee.png',
                  'hubble_deep_field.jpg', 'rocket.jpg']) AS f;
CREATE TABLE demo_prompts (prompt text);
INSERT INTO demo_prompts VALUES ('a photo of an astronaut'), ('a photo of a cat'), ('a cup of coffee'),
    ('a rocket launch'), ('a black and white photo of a man with a camera'), ('galaxies in deep space');

-- one model call for all photos, one for all prompts
ALTER TABLE demo_photos ADD COLUMN embedding vector;
UPDATE demo_photos p SET embedding = e.embedding
FROM (SELECT unnest(array_agg(file ORDER BY file)) AS file,
             unnest(clip.embed_images(array_agg(image ORDER BY file))) AS embedding FROM demo_photos) e
WHERE e.file = p.file;
ALTER TABLE demo_prompts ADD COLUMN embedding vector;
UPDATE demo_prompts SET embedding = clip.embed_text(prompt);

\echo
\echo 'pg_clip demo: model "tiny" (random weights: the similarities below are meaningless)'
SELECT name, embed_dim, image_size, left(stamp, 12) AS stamp FROM clip.model WHERE name = 'tiny';
\echo 'For each sample photo, its most similar prompt (cosine similarity):'
SELECT p.file AS photo, pg_size_pretty(length(p.image)::bigint) AS size, best.prompt AS most_similar_prompt,
       round((1 - (p.embedding <=> best.embedding))::numeric, 3) AS cosine
FROM demo_photos p
CROSS JOIN LATERAL (SELECT prompt, embedding FROM demo_prompts
                    ORDER BY embedding <=> p.embedding LIMIT 1) best
ORDER BY p.file;

-- the main job: a table of images kept embedded by clip.refresh, and a vocabulary as columns
CREATE TABLE demo_library (id int PRIMARY KEY, file text, image bytea);
INSERT INTO demo_library SELECT row_number() OVER (ORDER BY file), file, image FROM demo_photos;
SET client_min_messages = warning;
SELECT clip.add_collection('demo', 'demo_library', 'id', 'image') \gset
SELECT count(*) AS attributes FROM clip.load_vocabulary_file('photo_library', 'photo_library.yaml') \gset
SELECT clip.attach_vocabulary('demo', 'photo_library') \gset
CALL clip.refresh('demo');
RESET client_min_messages;
\echo 'The same photos as a collection, scored with vocab/photo_library.yaml,' :attributes 'attributes (random weights: meaningless values):'
SELECT l.file, round(a.photograph::numeric, 2) AS photograph, round(a.screenshot::numeric, 2) AS screenshot,
       round(a.people::numeric, 2) AS people, round(a.pet::numeric, 2) AS pet,
       round(a.keep_candidate::numeric, 2) AS keep_candidate
FROM clip.demo_attributes a JOIN demo_library l ON l.id = a.image_id ORDER BY l.file;
SELECT clip.drop_collection('demo') \gset

-- identification: the photos as a reference set (one per label), then "camera frames" (the
-- blurred and rotated copies clip.augmented_copies makes) identified against it
CREATE TABLE demo_refs (id int PRIMARY KEY, label text, image bytea);
INSERT INTO demo_refs SELECT row_number() OVER (ORDER BY file), split_part(file, '.', 1), image FROM demo_photos;
SET client_min_messages = warning;
SELECT clip.add_reference_set('demo_refs', 'demo_refs', 'id', 'image', 'label') \gset
CALL clip.refresh('demo_refs');
RESET client_min_messages;
\echo 'Camera frames identified against the photos as a reference set (clip.identify):'
SELECT r.label AS frame_of, a.kind AS frame, i.label AS identified_as, round(i.score::numeric, 3) AS score,
       round(i.margin::numeric, 3) AS margin
FROM demo_refs r CROSS JOIN LATERAL clip.augmented_copies(r.image) a
CROSS JOIN LATERAL clip.identify(a.image, 'demo_refs') i
WHERE a.kind IN ('blur', 'rotate') ORDER BY r.label, a.kind;
SELECT clip.drop_reference_set('demo_refs') \gset
DROP TABLE demo_photos, demo_prompts, demo_library, demo_refs;
