-- Hostile input is normal input: each call below is an ERROR with a SQLSTATE or a bounded answer,
-- and no backend ends (make test-regress then checks the server log for any backend ended by
-- a signal). Last, long calls stop within 2 s of a 1 s statement_timeout.
\set SHOW_CONTEXT never
SET pg_clip.device = 'cpu';
SET pg_clip.model = 'tiny';
\getenv root PG_CLIP_ROOT

-- one line of pixels in every accepted format (1 x 20,000,000 PNG: 39 kB, under the pixel limit)
SELECT f, try(format('SELECT clip.embed_image(%L::bytea)', pg_read_binary_file(:'root' || '/tests/images/edge/' || f))) AS result
FROM unnest(ARRAY['tall.png', 'wide.png', 'tall.jpg', 'wide.webp', 'tall.gif', 'wide.bmp', 'tall.tiff']) f ORDER BY f;
-- in a collection each is recorded as its row's error and the photo is embedded
CREATE TABLE extreme (id int PRIMARY KEY, name text NOT NULL, img bytea NOT NULL);
INSERT INTO extreme
SELECT row_number() OVER (ORDER BY f), f, pg_read_binary_file(:'root' || '/tests/images/' || f)
FROM unnest(ARRAY['edge/tall.png', 'edge/wide.png', 'edge/tall.jpg', 'edge/wide.webp', 'edge/tall.gif',
                  'edge/wide.bmp', 'edge/tall.tiff', 'photos/rocket.jpg']) f;
SELECT clip.add_collection('extreme', 'extreme', 'id', 'img');
SET client_min_messages = warning;
CALL clip.refresh('extreme');
RESET client_min_messages;
SELECT x.name, e.sqlstate, left(e.message, 50) AS message
FROM clip.embedding_error e JOIN extreme x ON x.id = e.image_id WHERE e.collection = 'extreme' ORDER BY x.name;
SELECT count(*) AS embedded FROM clip.embedding WHERE collection = 'extreme';
-- the image limits are the superuser's to raise
CREATE ROLE clip_limits;
SET ROLE clip_limits;
SELECT try($$SET pg_clip.max_image_memory = '100GB'$$) AS raise_memory, try($$SET pg_clip.max_image_pixels = 2000000000$$) AS raise_pixels;
RESET ROLE;
DROP ROLE clip_limits;
-- a lower memory limit refuses the 6000 x 300 panorama that the pixel limit lets through
SET pg_clip.max_image_memory = '16MB';
SELECT try(format('SELECT clip.embed_image(%L::bytea)', (SELECT img FROM images WHERE name = 'edge/panorama.jpg'))) AS over_memory;
RESET pg_clip.max_image_memory;

-- vocabularies: deep, long, wide and self-multiplying (each refused with its problem, shown here)
CREATE FUNCTION pg_temp.problem(yaml text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; detail text;
BEGIN
    PERFORM * FROM clip.parse_vocabulary(yaml);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
    RETURN st || ': ' || left(split_part(detail, E'\n', 1), 170);
END $$;
SELECT pg_temp.problem(E'version: 1\nbase_attributes: ' || repeat('[', 100000) || repeat(']', 100000)) AS deep_flow;
SELECT pg_temp.problem(E'version: 1\nbase_attributes:\n  ' || repeat('- ', 40) || 'x') AS deep_block;
SELECT pg_temp.problem(E'version: 1\n# ' || repeat('x', 2000000) || E'\nbase_attributes: []') AS two_megabytes;
CREATE FUNCTION pg_temp.rule_vocab(rule text) RETURNS text LANGUAGE sql AS $$
    SELECT E'version: 1\nbase_attributes:\n  - {code: a, description: x}\nderived_attributes:\n  - code: d\n    rule: "' || rule || '"'
$$;
SELECT pg_temp.problem(pg_temp.rule_vocab(repeat('NOT ', 2000000) || 'a')) AS two_million_nots;
SELECT pg_temp.problem(pg_temp.rule_vocab(repeat('NOT ', 300) || 'a')) AS deep_rule;
SELECT pg_temp.problem(pg_temp.rule_vocab('a' || repeat(' OR a', 1000))) AS long_rule;
SELECT pg_temp.problem(
    E'version: 1\nbase_attributes:\n  - {code: a, description: x}\nderived_attributes:\n  - {code: d0, rule: a AND a}\n'
    || (SELECT string_agg(format(E'  - {code: d%s, rule: d%s OR d%s}\n', i, i - 1, i - 1), '') FROM generate_series(1, 30) i)) AS doubling_rules;
SELECT pg_temp.problem(
    E'version: 1\nbase_attributes:\n' || (SELECT string_agg(format(E'  - {code: a%s, description: x}\n', i), '') FROM generate_series(1, 1700) i)) AS too_many_columns;
SELECT pg_temp.problem(E'version: 1\nbase_attributes:\n  - &x {code: a, description: x}\n  - *x') AS alias;

-- options of fits and clusterings: finite, whole where they must be, in range
SELECT o, try(format('SELECT clip._fit_logreg(%L, 1, %L, 2, %L)', '{0,1,0,1,0,1}', '{0,1,0,1,0,1}', o)) AS fit
FROM unnest(ARRAY['{"folds": 1e15}', '{"folds": 7}', '{"folds": 2.5}', '{"max_iter": 1e300}', '{"max_iter": 0}', '{"C": -1}',
                  '{"C": 1e400}', '{"C": "NaN"}', '{"class_weight": [1]}', '{"tol": 1}', '[]']) o;
SELECT try($$SELECT clip._fit_logreg('{0,1,0,1}', 1, '{0,1,0,1}', 1000000000, '{}')$$) AS classes_absent,
       try($$SELECT clip._fit_logreg('{0,1,0,1}', 0, '{0,1,0,1}', 2, '{}')$$) AS zero_dim,
       try($$SELECT clip._fit_logreg('{0,1,0,1}', -5, '{0,1,0,1}', 2, '{}')$$) AS negative_dim,
       try($$SELECT clip._fit_logreg('{0,1,NaN,1}', 1, '{0,1,0,1}', 2, '{}')$$) AS nan_value,
       try($$SELECT clip._fit_logreg('{0,1,0,1}', 1, '{0,1,0}', 2, '{}')$$) AS short_labels;
SELECT o, try(format('SELECT * FROM clip._kmeans(%L, %L, %s, %L)', 'extreme', 'tiny', k, o)) AS kmeans
FROM (VALUES (2147483647, '{}'), (0, '{}'), (-1, '{}'), (1, '{"n_init": 1e15}'), (1, '{"max_iter": 1e15}'),
             (1, '{"tol": -1}'), (1, '{"seed": -1}'), (1, '{"seed": 0.5}'), (5, '{}')) v (k, o);
SELECT try($$SELECT * FROM clip._blend('{0.5,0.5}', '{1,0,0}', NULL)$$) AS blend_lengths;

-- texts and arrays: length limits, and bounded answers for huge numbers
SELECT try(format('SELECT clip.embed_text(%L)', repeat('a photo ', 2000))) AS long_text;
SELECT try(format('SELECT clip.label(%L, 8, %L, %L)', 'extreme', 'kind', repeat('x', 1001))) AS long_label;
SELECT try(format('SELECT * FROM clip.label_from_filename(%L)', repeat('a', 5000))) AS long_path;
SELECT try($$SELECT * FROM clip.search('extreme', 'a rocket', -1)$$) AS negative_k;
SELECT count(*) AS huge_k FROM clip.search('extreme', 'a rocket', 2147483647);
SELECT try($$SELECT * FROM clip.logit_histogram('extreme', 'cat', 2000000000)$$) AS huge_bins;
SELECT cardinality(clip.embed_images(array_fill(NULL::bytea, ARRAY[100000]))) AS many_nulls;
SELECT clip.drop_collection('extreme');
DROP TABLE extreme;

-- cancel: a 1 s statement_timeout ends each long call within 2 s
CREATE FUNCTION pg_temp.stops_in_time(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE q;
    RETURN 'finished (the call was meant to run longer than the timeout)';
EXCEPTION WHEN query_canceled THEN
    RETURN CASE WHEN clock_timestamp() - t0 < interval '2 s' THEN 'cancelled within 2 s'
                ELSE format('cancelled after %s', clock_timestamp() - t0) END;
END $$;
-- 100,000 embeddings (generated, no index: k-means reads them as they are)
CREATE TABLE big (id int PRIMARY KEY, img bytea NOT NULL);
SELECT clip.add_collection('big', 'big', 'id', 'img');
SELECT format('DROP INDEX clip.%I', clip._derived_name('big', 'index', 'tiny')) \gexec
INSERT INTO clip.embedding (collection, model, image_id, stamp, content_sha256, embedding)
SELECT 'big', 'tiny', i, (SELECT stamp FROM clip.model WHERE name = 'tiny'), '\x00',
       (SELECT array_agg(sin(i * 0.37 + j * 1.3)::real) FROM generate_series(1, 64) j)::vector
FROM generate_series(1, 100000) i;
SET statement_timeout = '1s';
SELECT pg_temp.stops_in_time($$SELECT * FROM clip.kmeans('big', 1000, 'slow', '{"n_init": 100, "max_iter": 100000}')$$) AS kmeans;
SELECT pg_temp.stops_in_time($$SELECT clip._fit_logreg(array_agg(e.embedding::real[] ORDER BY e.image_id), 64,
    array_agg((e.image_id % 3 = 0)::int ORDER BY e.image_id), 2, '{"C": 1e12, "max_iter": 100000, "folds": 50}')
    FROM clip.embedding e WHERE e.collection = 'big'$$) AS fit;
SELECT pg_temp.stops_in_time(format('SELECT cardinality(clip.embed_images(array_fill(%L::bytea, ARRAY[2000])))',
                                    (SELECT img FROM images WHERE name = 'photos/rocket.jpg'))) AS embed;
RESET statement_timeout;
SELECT clip.drop_collection('big');
DROP TABLE big;
