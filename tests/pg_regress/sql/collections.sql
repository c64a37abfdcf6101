-- Collections: a user's table kept embedded by CALL clip.refresh, incrementally.
\set SHOW_CONTEXT never
SET pg_clip.device = 'cpu';
SET pg_clip.model = 'tiny';
SET pg_clip.batch_size = 4;

CREATE TABLE photos (id int PRIMARY KEY, title text, img bytea);
INSERT INTO photos
SELECT row_number() OVER (ORDER BY name), name, img FROM images
WHERE name LIKE 'photos/%' OR name IN ('edge/truncated.jpg', 'edge/random.bin', 'edge/cat.webp');

-- bad definitions are refused with a reason
SELECT try($$SELECT clip.add_collection('Bad Name', 'photos', 'id', 'img')$$) AS bad_name;
SELECT try($$SELECT clip.add_collection('p', 'photos', 'title', 'img')$$) AS text_id;
SELECT try($$SELECT clip.add_collection('p', 'photos', 'nope', 'img')$$) AS missing_column;
SELECT try($$SELECT clip.add_collection('p', 'photos', 'id', 'title')$$) AS paths_without_root;
SELECT try($$SELECT clip.add_collection('p', 'photos', 'id', 'img', 'nope')$$) AS unknown_model;
CALL clip.refresh('nope');
-- refresh commits per batch, so it refuses to start inside a transaction block
BEGIN;
CALL clip.refresh('photos');
ROLLBACK;

SELECT clip.add_collection('photos', 'photos', 'id', 'img');
SELECT name, source, id_column, image_column, image_kind, model FROM clip.collection;

-- first refresh: every good row embedded, bad rows recorded and skipped (the summary NOTICE
-- carries timings, so it is silenced here and the progress view is read instead)
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT total, done, embedded, failed, removed, unchanged, running FROM clip.refresh_progress;
SELECT p.title, x.sqlstate, x.message, x.content_sha256 = sha256(p.img) AS hash_ok
FROM clip.embedding_error x JOIN photos p ON p.id = x.image_id ORDER BY p.title;
SELECT count(*) AS embedded,
       bool_and((e.embedding <=> clip.embed_image(p.img)) < 1e-5) AS equal_to_embed_image,
       bool_and(e.content_sha256 = sha256(p.img)) AS hashes_match,
       bool_and(e.stamp = m.stamp) AS current_stamp
FROM clip.embedding e JOIN photos p ON p.id = e.image_id JOIN clip.model m ON m.name = e.model;

-- nothing changed: nothing to do
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT total, embedded, failed, removed, unchanged FROM clip.refresh_progress;

-- an update of another column queues nothing; a new image queues its row only
UPDATE photos SET title = title || ' (edited)' WHERE id = 1;
SELECT count(*) AS queued_after_title_edit FROM clip.refresh_queue;
UPDATE photos SET img = (SELECT img FROM images WHERE name = 'photos/chelsea.png') WHERE title LIKE 'photos/rocket%';
-- a failed row whose bytes are fixed is retried
UPDATE photos SET img = (SELECT img FROM images WHERE name = 'photos/coffee.png') WHERE title = 'edge/truncated.jpg';
SELECT count(*) AS queued_after_image_edits FROM clip.refresh_queue;
DELETE FROM photos WHERE title = 'photos/camera.png';
INSERT INTO photos SELECT 100, name, img FROM images WHERE name = 'edge/cat.gif';
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT total, embedded, failed, removed, unchanged FROM clip.refresh_progress;
SELECT p.title, round((e.embedding <=> clip.embed_image(p.img))::numeric, 5) AS distance_to_current_image
FROM clip.embedding e JOIN photos p ON p.id = e.image_id ORDER BY p.title;
SELECT count(*) AS errors_left, min(message) AS message FROM clip.embedding_error;
SELECT count(*) AS queue_left FROM clip.refresh_queue;

-- failed rows are retried on request
SELECT clip.retry_failed('photos') AS retried;
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT total, embedded, failed FROM clip.refresh_progress;

-- text-to-image and image-to-image search: the HNSW index answers, and agrees with exact search
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT image_id FROM clip.photos_embeddings
ORDER BY embedding <=> clip.embed_text('a photo of a cat') LIMIT 3;
RESET enable_seqscan;
-- (similarities, not ids: two rows hold the same image, so ids may tie)
SELECT array_agg(round(similarity::numeric, 4) ORDER BY similarity DESC) = (
           SELECT array_agg(round((1 - d)::real::numeric, 4) ORDER BY d) FROM (
               SELECT e.embedding <=> clip.embed_text('a photo of a cat') AS d FROM clip.embedding e
               WHERE e.collection = 'photos' ORDER BY 1 LIMIT 3) x) AS search_equals_exact,
       count(*) AS hits
FROM clip.search('photos', 'a photo of a cat', 3);
SELECT count(*) AS neighbours, bool_and(image_id <> 1) AS self_excluded, bool_and(similarity <= 1.0001) AS cosines
FROM clip.similar('photos', 1, 5);
SELECT try($$SELECT * FROM clip.similar('photos', 9999)$$) AS no_embedding;

-- duplicates: after the edits above some rows share bytes (exact groups); re-encoded copies of
-- the same cat (WebP, GIF of the PNG) are near-duplicates, found through the index
INSERT INTO photos SELECT 200, 'edge/cat.webp again', img FROM images WHERE name = 'edge/cat.webp';
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT kind, (SELECT array_agg(title ORDER BY title) FROM photos WHERE id = ANY (d.image_ids)) AS titles,
       round(similarity::numeric, 3) AS similarity
FROM clip.duplicates('photos', 0.99) d ORDER BY kind, titles;
-- the triggers see every change of bytes: there are no files to recheck
SELECT try($$SELECT clip.recheck_files('photos')$$) AS bytes_collection;

-- the auto-refresh worker's step, callable by hand: queued rows only, in the caller's transaction
INSERT INTO photos SELECT 300, 'photos/astronaut.png again', img FROM images WHERE name = 'photos/astronaut.png';
DELETE FROM photos WHERE id = 200;
SELECT count(*) AS queued FROM clip.refresh_queue;
BEGIN;
SELECT clip.refresh_queued('photos', 100) AS handled;
COMMIT;
SELECT count(*) AS queued_after FROM clip.refresh_queue;
SELECT (SELECT count(*) FROM clip.embedding WHERE collection = 'photos' AND image_id = 300) AS new_row_embedded,
       (SELECT count(*) FROM clip.embedding WHERE collection = 'photos' AND image_id = 200) AS deleted_row_gone;

-- changing the model: the new set is built next to the old one, which serves until the switch
SELECT name FROM clip.register_model('tiny_b', 'tiny-clip');
SELECT clip.set_model('photos', 'tiny_b');
SELECT model, next_model FROM clip.collection WHERE name = 'photos';
SELECT count(*) AS served_by_old_set FROM clip.photos_embeddings;
-- set_model built the new model's index (while it had no rows) beside the current one
SELECT relname = clip._derived_name('photos', 'index', 'tiny') AS current_model, relname = clip._derived_name('photos', 'index', 'tiny_b') AS next_model
FROM pg_class WHERE relname ~ '^pg_clip_photos_' ORDER BY relname;
-- the switch never waits on the shared clip.embedding: while another session reads it (here
-- through dblink, in an open transaction), the old model's index stays for a later refresh
CREATE EXTENSION dblink;
\getenv pghost PGHOST
\getenv pgport PGPORT
SELECT dblink_connect('reader', format('host=%s port=%s dbname=%s', :'pghost', :'pgport', current_database()));
SELECT dblink_exec('reader', 'BEGIN');
SELECT * FROM dblink('reader', 'SELECT count(*) FROM clip.embedding') AS t (rows bigint);
-- (were the switch to wait for the reader's lock, this makes it an ERROR rather than a hang)
SET lock_timeout = '10s';
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT relname = clip._derived_name('photos', 'index', 'tiny') AS old_model FROM pg_class WHERE relname ~ '^pg_clip_photos_' ORDER BY relname;
RESET lock_timeout;
SELECT dblink_exec('reader', 'COMMIT'), dblink_disconnect('reader');
DROP EXTENSION dblink;
SET client_min_messages = warning;
CALL clip.refresh('photos');
RESET client_min_messages;
SELECT relname = clip._derived_name('photos', 'index', 'tiny_b') AS new_model FROM pg_class WHERE relname ~ '^pg_clip_photos_' ORDER BY relname;
SELECT model, next_model FROM clip.collection WHERE name = 'photos';
SELECT model, count(*) FROM clip.embedding WHERE collection = 'photos' GROUP BY model;
SELECT count(*) AS served_by_new_set FROM clip.photos_embeddings;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT image_id FROM clip.photos_embeddings ORDER BY embedding <=> clip.embed_text('a cat') LIMIT 3;
RESET enable_seqscan;
SELECT clip.set_model('photos', 'tiny_b');

-- dropping the collection removes its triggers and rows, not the user's table
SELECT clip.drop_collection('photos');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'pg_clip_photos%';
SELECT count(*) AS views_and_indexes_left FROM pg_class WHERE relname = 'photos_embeddings' OR relname ~ '^pg_clip_photos_';
SELECT (SELECT count(*) FROM clip.embedding) AS embeddings_left, (SELECT count(*) FROM photos) AS photos_left;

-- image paths in a text column, confined to pg_clip.image_root
\getenv root PG_CLIP_ROOT
SELECT set_config('pg_clip.image_root', :'root' || '/tests/images', false) IS NOT NULL AS root_set;
CREATE TABLE files (id bigint PRIMARY KEY, path text);
INSERT INTO files VALUES (1, 'photos/chelsea.png'), (2, 'links/inside.png'), (3, 'links/outside.png'),
    (4, '../README.md'), (5, '/etc/passwd'), (6, 'photos/missing.png'), (7, 'edge/truncated.jpg'), (8, NULL);
SELECT clip.add_collection('files', 'files', 'id', 'path');
SET client_min_messages = warning;
CALL clip.refresh('files');
RESET client_min_messages;
SELECT total, embedded, failed FROM clip.refresh_progress WHERE collection = 'files';
SELECT f.path, x.sqlstate, replace(x.message, :'root', '$ROOT') AS message
FROM clip.embedding_error x JOIN files f ON f.id = x.image_id ORDER BY f.id;
SELECT f.path, round((e.embedding <=> clip.embed_image(pg_read_binary_file(:'root' || '/tests/images/photos/chelsea.png')))::numeric, 5) AS distance_to_bytes,
       e.content_sha256 = sha256(pg_read_binary_file(:'root' || '/tests/images/photos/chelsea.png')) AS hash_of_file
FROM clip.embedding e JOIN files f ON f.id = e.image_id ORDER BY f.id;
-- a row's image and its thumbnail, by id: the file under the root, the same bytes as reading it
SELECT clip.image('files', 1) = pg_read_binary_file(:'root' || '/tests/images/photos/chelsea.png') AS image_is_file,
       substr(clip.thumbnail('files', 1, 64), 1, 3) = '\xffd8ff'::bytea AS thumbnail_is_jpeg;
SELECT try($$SELECT clip.image('files', 3)$$) AS outside_root, try($$SELECT clip.image('files', 8)$$) AS null_path,
       try($$SELECT clip.image('files', 99)$$) AS no_row, try($$SELECT clip.thumbnail('files', 7)$$) AS truncated,
       try($$SELECT clip.thumbnail('files', 1, 4096)$$) AS too_big;
-- thumbnails stored by refresh where it decodes: one per content, equal to one made on demand,
-- gone with the content
CREATE TABLE thumbs (id bigint PRIMARY KEY, img bytea);
INSERT INTO thumbs SELECT i, clip.image('files', 1) FROM generate_series(1, 2) i;
INSERT INTO thumbs VALUES (3, pg_read_binary_file(:'root' || '/tests/images/photos/rocket.jpg'));
SELECT clip.add_collection('thumbs', 'thumbs', 'id', 'img');
SET pg_clip.thumbnail_size = 64;
SET client_min_messages = warning;
CALL clip.refresh('thumbs');
RESET client_min_messages;
SELECT count(*) AS thumbnails, bool_and(t.size = 64) AS size_64,
       bool_and(t.jpeg = (SELECT clip.make_thumbnail(s.img, 64) FROM thumbs s
                          JOIN clip.embedding e ON e.collection = 'thumbs' AND e.image_id = s.id
                          WHERE e.content_sha256 = t.content_sha256 LIMIT 1)) AS same_as_on_demand
FROM clip.thumbnail t WHERE t.collection = 'thumbs';
DELETE FROM thumbs WHERE id = 3;
SET client_min_messages = warning;
CALL clip.refresh('thumbs');
RESET client_min_messages;
RESET pg_clip.thumbnail_size;
SELECT count(*) AS thumbnails_left FROM clip.thumbnail WHERE collection = 'thumbs';
SELECT clip.drop_collection('thumbs');
DROP TABLE thumbs;
-- files that did not change on disk are not queued again (changed ones: see the client tests)
SELECT clip.recheck_files('files') AS requeued;
-- reading files is for roles granted pg_read_server_files; the batch helpers are internal
CREATE ROLE clip_user;
SET ROLE clip_user;
SELECT try($$SELECT clip.read_image_file('photos/chelsea.png')$$) AS not_granted;
SELECT try($$SELECT clip.image('files', 1)$$) AS image_not_granted;
SELECT try($$SELECT * FROM clip._try_embed_files(ARRAY['photos/chelsea.png'], 'tiny')$$) AS internal;
SELECT try($$SELECT clip._file_sha256('photos/chelsea.png')$$) AS hash_internal;
RESET ROLE;
DROP ROLE clip_user;
SELECT clip.drop_collection('files');
