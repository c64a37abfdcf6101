-- make web: a database to label and identify in from the browser: the demo model on the
-- generated images (collection "demo", the vocabulary attached, two of them imported twice)
-- and the 48 cards (reference set "demo_cards"). The images come from models/synth/generate.py under .run/demo/.
\set QUIET on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
SELECT name AS registered FROM clip.register_model('demo', 'demo-clip') \gset
SET pg_clip.model = 'demo';
\ir demo_tables.sql
-- two images imported twice, for the duplicates page: the same file again, and a smaller
-- re-encoded copy
INSERT INTO demo_images (file, caption, shape, colour, count, background, style, packaged, card, image)
SELECT 'copy of ' || file, caption, shape, colour, count, background, style, packaged, card,
       CASE WHEN id = 5 THEN image ELSE clip.make_thumbnail(image, 128) END
FROM demo_images WHERE id IN (5, 7) ORDER BY id;
-- refresh stores a 256 px thumbnail of each image (here and in the auto-refresh worker)
SELECT format('ALTER DATABASE %I SET pg_clip.thumbnail_size = 256', current_database()) \gexec
SET pg_clip.thumbnail_size = 256;
SELECT clip.add_collection('demo', 'demo_images', 'id', 'image') \gset
SELECT count(*) AS attributes FROM clip.load_vocabulary_file('demo', 'demo.yaml') \gset
SELECT clip.attach_vocabulary('demo', 'demo') \gset
CALL clip.refresh('demo');
SELECT clip.add_reference_set('demo_cards', 'demo_cards', 'id', 'image', 'card') \gset
CALL clip.refresh('demo_cards');
