-- A database as a user of the last release has it: collections embedded by CALL clip.refresh,
-- a vocabulary attached and scored, labels and a classifier, a clustering, a reference set.
-- Written with that release's functions only; run by tests/upgrade/run.sh before the upgrade.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET pg_clip.device = 'cpu';
SELECT name FROM clip.register_model('tiny', 'tiny-clip');
\getenv root PG_CLIP_ROOT
CREATE TABLE photos (id bigint PRIMARY KEY, name text NOT NULL, img bytea);
INSERT INTO photos
SELECT i, f, pg_read_binary_file(:'root' || '/tests/images/' || f)
FROM unnest(ARRAY['photos/astronaut.png', 'photos/camera.png', 'photos/chelsea.png', 'photos/coffee.png',
                  'photos/hubble_deep_field.jpg', 'photos/rocket.jpg', 'edge/cat.webp', 'edge/grey.jpg',
                  'edge/cat.bmp', 'edge/cat.gif', 'edge/cmyk.jpg', 'edge/palette.png', 'edge/alpha.png',
                  'edge/exif_rotate90.jpg', 'edge/random.bin']) WITH ORDINALITY AS u (f, i);
SELECT clip.add_collection('photos', 'photos', 'id', 'img', 'tiny');
SELECT count(*) > 0 AS loaded FROM clip.load_vocabulary_file('space', 'space.yaml');
SELECT clip.attach_vocabulary('photos', 'space');
CALL clip.refresh('photos');
SELECT count(*) AS labelled FROM (
    SELECT clip.label('photos', id, 'kind', CASE WHEN id IN (1, 5, 6) THEN 'space' ELSE 'earth' END)
    FROM photos WHERE id <= 14) l;
SELECT classifier, version FROM clip.fit_classifier('kind', 'photos', '{"folds": 2}');
SELECT count(*) AS classified FROM clip.classify('photos', 'kind');
SELECT count(*) AS clusters FROM clip.kmeans('photos', 2, 'groups', '{"seed": 1}');
CREATE TABLE cards (id bigint PRIMARY KEY, name text NOT NULL, img bytea);
INSERT INTO cards
SELECT i, f, pg_read_binary_file(:'root' || '/tests/images/references/' || f)
FROM unnest(ARRAY['LOB-EN001_astronaut_ur.png', 'MRD-EN045_chelsea_the_cat_ur.webp', 'SDK-001_camera.png',
                  'coffee_mug.png', 'rocket_launch_sr.jpg']) WITH ORDINALITY AS u (f, i);
SELECT clip.add_reference_set('cards', 'cards', 'id', 'img', 'name', 'tiny');
CALL clip.refresh('cards');
-- a manager made under the release (roles are the cluster's: made once, kept)
SELECT format('CREATE ROLE clip_test_manager') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clip_test_manager') \gexec
SELECT clip.grant_manager('clip_test_manager');
GRANT SELECT, INSERT, DELETE ON photos TO clip_test_manager;
