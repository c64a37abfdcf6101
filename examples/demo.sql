-- make run: embed the sample photos and a few prompts with the committed tiny model and show,
-- for each photo, the prompt it is most similar to.
-- The tiny model has RANDOM weights: the pipeline is real, the similarities are meaningless.
-- See README "Using a real model" for real CLIP weights.
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
DROP TABLE demo_photos, demo_prompts;
