-- Projection heads: clip.train_projection on look-alike references (24 variants of one
-- generated card that differ in two small shapes and the title), identify through the head,
-- its own index, comparing without it, a stale head after a model change, drop_projection.
\set SHOW_CONTEXT never
SET pg_clip.device = 'cpu';
SET pg_clip.batch_size = 16;
\getenv root PG_CLIP_ROOT
SELECT name AS registered FROM clip.register_model('demo', 'demo-clip');
SET pg_clip.model = 'demo';
CREATE TABLE look (id int PRIMARY KEY, variant text NOT NULL, img bytea);
INSERT INTO look
SELECT row_number() OVER (ORDER BY f), f, pg_read_binary_file(:'root' || '/.run/lookalikes/' || f)
FROM pg_ls_dir(:'root' || '/.run/lookalikes') f WHERE f LIKE '%.png';
SELECT clip.add_reference_set('look', 'look', 'id', 'img', 'variant') IS NULL AS added;
SET client_min_messages = warning;
CALL clip.refresh('look');

-- not before there is something to train on, nor with bad options
CREATE TABLE one_label (id int PRIMARY KEY, img bytea, l text);
INSERT INTO one_label SELECT id, img, 'same' FROM look WHERE id <= 3;
SELECT clip.add_reference_set('one_label', 'one_label', 'id', 'img', 'l') IS NULL AS added;
CALL clip.refresh('one_label');
SELECT try($$SELECT * FROM clip.train_projection('one_label')$$) AS one_label;
SELECT try($$SELECT * FROM clip.train_projection('look', '{"epochs": 0}')$$) AS zero_epochs;
SELECT try($$SELECT * FROM clip.train_projection('look', '{"epoch": 3}')$$) AS unknown_option;
SELECT try($$SELECT clip._projection_options('{"pool_copies": 20}', 10000)$$) AS too_many_copies;
SELECT clip._projection_options('{"seed": 3}', 24) AS complete_options;
SELECT try($$SELECT * FROM clip.train_projection('nope')$$) AS unknown_set;

-- training: the evaluation's six rows, each way on copies it never saw
CREATE TABLE ev AS SELECT * FROM clip.train_projection('look', '{"epochs": 100, "pool_copies": 16, "learning_rate": 1e-3}');
SELECT version, queries, method, copies FROM ev ORDER BY queries, method;
-- the head widens the held-out median margin of these look-alikes and loses no top-1 rate
SELECT h.median_margin > b.median_margin AS wider_median_margin, h.top1_rate >= b.top1_rate AS top1_kept
FROM ev h JOIN ev b USING (queries) WHERE queries = 'held_out_copies' AND h.method = 'head' AND b.method = 'clip';
SELECT version, model, input_dim, hidden_dim, output_dim, refs, labels, copies, cardinality(losses) AS epochs,
       losses[100] < losses[1] AS loss_fell, jsonb_array_length(evaluation) AS evaluated, length(weights) AS weight_bytes
FROM clip.projection;
SELECT count(*) AS copies_kept FROM clip.projection_copy;
SELECT count(*) AS head_index FROM pg_class WHERE relname = 'pg_clip_look_head_hnsw';

-- a second training embeds no copy again, and is the same for the same seed
CREATE TABLE ev2 AS SELECT * FROM clip.train_projection('look', '{"epochs": 100, "pool_copies": 16, "learning_rate": 1e-3}');
SELECT count(*) AS copies_still FROM clip.projection_copy;
SELECT (SELECT weights FROM clip.projection WHERE version = 1) = (SELECT weights FROM clip.projection WHERE version = 2) AS same_head;
SELECT count(*) AS projected, count(DISTINCT projection) AS heads FROM clip.projection_embedding;

-- identify answers through version 2: each reference finds itself, in the head's space
SELECT count(*) FILTER (WHERE i.reference_id = l.id) AS found_itself, count(*) AS refs, min(i.head) AS head
FROM look l CROSS JOIN LATERAL clip.identify(l.img, 'look') i;
-- the score is the cosine of the projected query and the projected reference
SELECT abs(i.score - (1 - (clip._project(p.id, clip.embed_image(l.img)::real[]) <=> e.embedding))) < 1e-5 AS score_in_head_space
FROM look l CROSS JOIN LATERAL clip.identify(l.img, 'look', 1) i
JOIN clip.projection p ON p.reference_set = 'look' AND p.version = 2
JOIN clip.projection_embedding e ON e.reference_set = 'look' AND e.image_id = i.reference_id
WHERE l.id = 5;
-- through the head's HNSW index, the same answers as the exact search in the projected space
CREATE TABLE frames AS SELECT l.id, clip.embed_image(clip.make_thumbnail(l.img, 200)) AS v FROM look l;
CREATE TABLE exact AS SELECT f.id, i.* FROM frames f CROSS JOIN LATERAL clip.identify(f.v, 'look', 3) i;
BEGIN;
SET LOCAL pg_clip.identify_exact_limit = 0;
SELECT count(*) AS same_as_exact FROM frames f CROSS JOIN LATERAL clip.identify(f.v, 'look', 3) i
JOIN exact x ON x.id = f.id AND x.rank = i.rank AND x.reference_id = i.reference_id AND abs(x.score - i.score) < 1e-5;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT p.image_id FROM clip.projection_embedding p WHERE p.reference_set = 'look'
ORDER BY p.embedding::vector(256) <=> (SELECT embedding FROM clip.projection_embedding LIMIT 1) LIMIT 3;
COMMIT;
-- a long training stops at statement_timeout (between batches of copies or of the training)
SET statement_timeout = '500ms';
SELECT try($$SELECT * FROM clip.train_projection('look', '{"epochs": 1000, "pool_copies": 16}')$$) AS cancelled;
RESET statement_timeout;
SELECT count(*) AS heads_still FROM clip.projection;
-- without the head, to compare: raw CLIP similarities, head NULL
SET pg_clip.identify_projection = off;
SELECT i.head IS NULL AS no_head, abs(i.score - (1 - (clip.embed_image(l.img) <=> e.embedding))) < 1e-5 AS raw_score
FROM look l CROSS JOIN LATERAL clip.identify(l.img, 'look', 1) i
JOIN clip.embedding e ON e.collection = 'look' AND e.image_id = i.reference_id WHERE l.id = 5;
SELECT head IS NULL AS verify_without_head FROM clip.verify_reference_set('look');
RESET pg_clip.identify_projection;
SELECT head AS verify_with_head, copies FROM clip.verify_reference_set('look');

-- a new reference is projected by refresh; a deleted one leaves the projected set
INSERT INTO look SELECT 100, 'new', clip.make_thumbnail(img, 180) FROM look WHERE id = 1;
DELETE FROM look WHERE id = 2;
CALL clip.refresh('look');
SELECT count(*) AS projected, bool_or(image_id = 100) AS has_new, bool_or(image_id = 2) AS has_deleted FROM clip.projection_embedding;

-- the model changes: the head is stale, identify says so and answers without it
SELECT clip.set_model('look', 'tiny') IS NOT NULL AS switching;
CALL clip.refresh('look');
SET client_min_messages = notice;
SELECT rank, head FROM clip.identify((SELECT img FROM look WHERE id = 1), 'look');
SET client_min_messages = warning;
SELECT count(*) AS projected_after_switch FROM clip.projection_embedding;

-- drop_projection: every version, and the index
SELECT clip.drop_projection('look') AS dropped;
SELECT count(*) AS heads_left FROM clip.projection;
SELECT count(*) AS head_indexes FROM pg_class WHERE relname = 'pg_clip_look_head_hnsw';
SELECT try($$SELECT clip.drop_projection('nope')$$) AS unknown_set;
SELECT clip.drop_reference_set('look') IS NULL AS dropped, clip.drop_reference_set('one_label') IS NULL AS dropped_too;
SELECT count(*) AS copies_left FROM clip.projection_copy;
RESET client_min_messages;
