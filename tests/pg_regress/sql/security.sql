-- A shared server: an ordinary role (mallory: PUBLIC's rights and a schema of her own) against a
-- manager's collection (alice). Every route below must fail, leave mallory unprivileged, and
-- show her nothing of a collection whose source table she may not read.
\set SHOW_CONTEXT never
SET pg_clip.device = 'cpu';
SET pg_clip.model = 'tiny';
SET client_min_messages = warning;
DROP ROLE IF EXISTS alice;
DROP ROLE IF EXISTS mallory;
RESET client_min_messages;
CREATE ROLE alice;
CREATE ROLE mallory;
SELECT clip.grant_manager('alice');
CREATE SCHEMA mallory AUTHORIZATION mallory;
-- (the test images are not the collection's source; everyone may read them)
GRANT SELECT ON images TO PUBLIC;

-- every function runs with a pinned search_path (excepted: CALL clip.refresh, as a procedure
-- with one could not commit, and the fully qualified SQL functions that the row-security
-- policies and the scoring queries inline); the SECURITY DEFINER ones with pg_catalog and
-- pg_temp alone; and which internal helpers PUBLIC may call
CREATE TEMP VIEW clip_functions AS
SELECT p.oid::regprocedure AS f, p.proname, p.prosecdef, p.proconfig, p.proacl
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_clip';
SELECT f AS without_pinned_path FROM clip_functions
WHERE NOT EXISTS (SELECT 1 FROM unnest(proconfig) c WHERE c LIKE 'search\_path=pg\_catalog,%') ORDER BY 1;
SELECT f AS security_definer, proconfig FROM clip_functions WHERE prosecdef ORDER BY 1;
SELECT string_agg(proname, ', ' ORDER BY proname) AS internal_public FROM clip_functions
WHERE proname LIKE '\_%' AND has_function_privilege('public', f, 'EXECUTE');
SELECT string_agg(proname, ', ' ORDER BY proname) AS internal_revoked FROM clip_functions
WHERE proname LIKE '\_%'
  AND NOT has_function_privilege('public', f, 'EXECUTE');
DROP VIEW clip_functions;

-- alice's table, collection, labels, vocabulary scores and reference set
CREATE TABLE alice_photos (id int PRIMARY KEY, img bytea NOT NULL, label text);
INSERT INTO alice_photos
SELECT row_number() OVER (ORDER BY name), img, split_part(name, '/', 2) FROM images WHERE name LIKE 'photos/%';
ALTER TABLE alice_photos OWNER TO alice;
SET ROLE alice;
SELECT clip.add_collection('private', 'alice_photos', 'id', 'img');
SELECT clip.add_reference_set('private_refs', 'alice_photos', 'id', 'img', 'label');
SELECT count(*) AS attributes FROM clip.load_vocabulary('alice_vocab', $$
version: 1
base_attributes:
  - {code: cat, description: a cat}
  - {code: rocket, description: a rocket}
derived_attributes:
  - {code: both, rule: cat AND rocket}
$$);
SELECT clip.attach_vocabulary('private', 'alice_vocab');
SET client_min_messages = warning;
CALL clip.refresh('private');
CALL clip.refresh('private_refs');
RESET client_min_messages;
SELECT clip.label('private', 1, 'kind', 'cat'), clip.label('private', 2, 'kind', 'other');
SELECT count(*) AS alice_sees FROM clip.private_embeddings;
-- a manager may execute the queueing trigger function, but it runs only as a collection's own
-- trigger: attached elsewhere, without transition tables, it refuses
CREATE TEMP TABLE alice_bait (id int, img bytea);
CREATE TRIGGER bait AFTER INSERT ON alice_bait FOR EACH STATEMENT EXECUTE FUNCTION clip._queue_changes('private', 'id', 'img');
SELECT try($$INSERT INTO alice_bait VALUES (1, NULL)$$) AS misplaced_trigger;
DROP TABLE alice_bait;
RESET ROLE;

-- 1. escalation routes, as mallory
SET ROLE mallory;
SET search_path = mallory, public;
CREATE TABLE mallory.log (what text);
CREATE FUNCTION mallory.escalate() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mallory.log VALUES (current_user);
    EXECUTE 'ALTER ROLE mallory SUPERUSER';
    RETURN 1;
END $$;
-- a look-alike of the transition table, and the queueing trigger attached without one
CREATE TEMP TABLE bait (id int, img bytea);
CREATE TEMP VIEW pg_clip_new AS SELECT mallory.escalate() AS id, NULL::bytea AS img;
SELECT try($$CREATE TRIGGER t AFTER INSERT ON bait FOR EACH STATEMENT
             EXECUTE FUNCTION clip._queue_changes('private', 'id', 'img')$$) AS attach_queue_trigger;
SELECT try($$INSERT INTO bait VALUES (1, NULL)$$) AS write_bait;
-- the queue takes entries only for collections whose source the role may write
SELECT try($$INSERT INTO clip.refresh_queue (collection, image_id) VALUES ('private', 1)$$) AS queue_foreign;
-- internal and SECURITY DEFINER helpers are not PUBLIC's
SELECT try($$SELECT clip._index_collection('private')$$) AS index_helper;
SELECT try($$SELECT clip._drop_collection_objects('private')$$) AS drop_helper;
SELECT try($$SELECT clip._attribute_view('private', NULL)$$) AS view_helper;
SELECT try($$SELECT clip._fit_logreg('{0,0}', 1, '{0,1}', 2, '{"folds": 1e15}')$$) AS fit_helper;
SELECT try($$SELECT clip.grant_manager('mallory')$$) AS grant_self;
-- the writing API needs a manager
CALL clip.refresh('private');
SELECT try($$SELECT clip.label('private', 1, 'kind', 'other')$$) AS label;
SELECT try($$SELECT clip.drop_collection('private')$$) AS drop_collection;
SELECT try($$DELETE FROM clip.embedding$$) AS delete_embeddings;
-- a cast on the id column's type is not hers to make
SELECT try($$CREATE CAST (integer AS bigint) WITH INOUT$$) AS id_cast;
-- shadowing pgvector's operator and type from her schema, first on her search_path
CREATE FUNCTION mallory.fake_distance(a vector, b vector) RETURNS float8 LANGUAGE sql AS
    'SELECT mallory.escalate()::float8';
CREATE OPERATOR mallory.<=> (LEFTARG = vector, RIGHTARG = vector, FUNCTION = mallory.fake_distance);
CREATE TYPE mallory.vector AS (x int);
-- and the functions and operators the inlined formulas use
CREATE FUNCTION mallory.exp(float8) RETURNS float8 LANGUAGE sql AS 'SELECT mallory.escalate()::float8';
CREATE FUNCTION mallory.fake_minus(float8, float8) RETURNS float8 LANGUAGE sql AS 'SELECT mallory.escalate()::float8';
CREATE OPERATOR mallory.- (LEFTARG = float8, RIGHTARG = float8, FUNCTION = mallory.fake_minus);
CREATE TABLE mallory.photos (id int PRIMARY KEY, img bytea NOT NULL);
RESET ROLE;

-- alice and the superuser work with mallory's schema first on their path: nothing of hers runs
GRANT USAGE ON SCHEMA mallory TO alice;
SET ROLE alice;
SET search_path = mallory, public;
SELECT count(*) AS alice_search FROM clip.search('private', 'a cat', 3);
SELECT count(*) AS alice_identify FROM clip.identify(clip.embed_image((SELECT img FROM alice_photos WHERE id = 3)), 'private_refs');
INSERT INTO alice_photos SELECT 100, img, 'copy' FROM alice_photos WHERE id = 1;
SET client_min_messages = warning;
CALL clip.refresh('private');
RESET client_min_messages;
RESET ROLE;
SELECT count(*) AS superuser_similar FROM clip.similar('private', 1, 3);
SELECT count(*) AS superuser_duplicates FROM clip.duplicates('private');
SELECT clip._sigmoid(0) AS sigmoid, clip._softmax_term(1, 1) AS softmax_term;
RESET search_path;
SELECT rolsuper AS mallory_is_superuser, (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) AS memberships
FROM pg_roles r WHERE rolname = 'mallory';
SELECT count(*) AS escalate_ran FROM mallory.log;

-- a manager who writes SQL where a derived rule is kept gets no SQL run by whoever scores next:
-- scoring parses the stored rule again and renders only its shape
SET ROLE alice;
UPDATE clip.vocabulary_attribute SET rule_expanded = '(SELECT mallory.escalate())'
WHERE vocabulary = 'alice_vocab' AND code = 'both';
RESET ROLE;
SET client_min_messages = warning;
CALL clip.refresh('private');
RESET client_min_messages;
SELECT count(*) AS escalate_ran FROM mallory.log;
SELECT try($$SELECT clip._rule_sql('cat) + (SELECT 1')$$) AS rule_sql_of_sql;
SET ROLE alice;
SELECT count(*) AS attributes FROM clip.load_vocabulary('alice_vocab', (SELECT source FROM clip.vocabulary WHERE name = 'alice_vocab'));
RESET ROLE;

-- 2. reading alice's collection: every function raises, every table and view shows nothing
SET ROLE mallory;
SET search_path = public;
SELECT try($$SELECT * FROM clip.search('private', 'a cat')$$) AS search;
SELECT try($$SELECT * FROM clip.similar('private', 1)$$) AS similar;
SELECT try($$SELECT * FROM clip.duplicates('private')$$) AS duplicates;
SELECT try(format('SELECT * FROM clip.identify(%L::bytea, %L)', (SELECT img FROM images WHERE name = 'photos/rocket.jpg'), 'private_refs')) AS identify;
SELECT try($$SELECT * FROM clip.identify(array_fill(0.1::real, ARRAY[64])::vector, 'private_refs')$$) AS identify_vector;
SELECT try($$SELECT * FROM clip.reference_labels('private_refs')$$) AS reference_labels;
SELECT try($$SELECT * FROM clip.logit_histogram('private', 'cat')$$) AS histogram;
SELECT try($$SELECT * FROM clip.label_stats('private', 'kind')$$) AS label_stats;
SELECT try($$SELECT * FROM clip.next_to_label('private', 'kind')$$) AS next_to_label;
SELECT try($$SELECT * FROM clip.verify_reference_set('private_refs')$$) AS verify;
SELECT (SELECT count(*) FROM clip.embedding) AS embedding, (SELECT count(*) FROM clip.embedding_error) AS errors,
       (SELECT count(*) FROM clip.feature_image_attribute) AS attributes, (SELECT count(*) FROM clip.label) AS labels,
       (SELECT count(*) FROM clip.refresh_progress) AS progress, (SELECT count(*) FROM clip.reference_set) AS reference_sets;
SELECT (SELECT count(*) FROM clip.private_embeddings) AS embeddings_view,
       (SELECT count(*) FROM clip.private_attributes) AS attributes_view;
RESET ROLE;

-- 3. once alice lets her read the table, she reads the collection
SET ROLE alice;
GRANT SELECT ON alice_photos TO mallory;
RESET ROLE;
SET ROLE mallory;
SELECT count(*) AS search_rows FROM clip.search('private', 'a cat', 3);
SELECT (SELECT count(*) FROM clip.private_embeddings) AS embeddings_view, (SELECT count(*) FROM clip.label) AS labels;
-- and identifies against the reference set made from it (a reader, not a manager)
SELECT count(*) AS identify_rows FROM clip.identify(array_fill(0.1::real, ARRAY[64])::vector, 'private_refs', 2);
-- reading is not writing
SELECT try($$SELECT clip.label('private', 1, 'kind', 'other')$$) AS label_after_grant;
RESET ROLE;

-- 4. a role that may write the source queues its rows; its writes never fail because of pg_clip
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON alice_photos TO mallory;
SET ROLE mallory;
INSERT INTO alice_photos SELECT 200, img, 'new' FROM alice_photos WHERE id = 2;
RESET ROLE;
SELECT collection, image_id FROM clip.refresh_queue WHERE collection = 'private' ORDER BY seq;
-- a renamed id column breaks the collection, not the user's write (a WARNING says so)
ALTER TABLE alice_photos RENAME COLUMN id TO photo_id;
SET ROLE mallory;
UPDATE alice_photos SET label = 'renamed' WHERE photo_id = 200;
RESET ROLE;
CALL clip.refresh('private');
ALTER TABLE alice_photos RENAME COLUMN photo_id TO id;
-- TRUNCATE is queued: the next pass removes every embedding
SET ROLE mallory;
TRUNCATE alice_photos;
RESET ROLE;
SELECT count(*) AS truncate_entries FROM clip.refresh_queue WHERE collection = 'private' AND image_id IS NULL;
SELECT clip.refresh_queued('private') > 0 AS handled;
SELECT count(*) AS embeddings_left FROM clip.embedding WHERE collection = 'private';

-- 5. a dropped source: the collection reports it and still drops
DROP TABLE alice_photos;
CALL clip.refresh('private');
SELECT clip.drop_collection('private'), clip.drop_collection('private_refs');
SELECT count(*) AS collections FROM clip.collection WHERE name IN ('private', 'private_refs');

-- a partitioned source: writes through the parent and straight into a partition are queued,
-- and a partition attached later gets its triggers at the next refresh
CREATE TABLE parted (id int PRIMARY KEY, img bytea NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200);
SELECT clip.add_collection('parted', 'parted', 'id', 'img');
INSERT INTO parted SELECT 1, img FROM images WHERE name = 'photos/rocket.jpg';
INSERT INTO parted_2 SELECT 150, img FROM images WHERE name = 'photos/coffee.png';
SELECT image_id FROM clip.refresh_queue WHERE collection = 'parted' ORDER BY seq;
CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (200) TO (300);
SET client_min_messages = warning;
CALL clip.refresh('parted');
RESET client_min_messages;
INSERT INTO parted_3 SELECT 250, img FROM images WHERE name = 'photos/chelsea.png';
UPDATE parted_1 SET img = (SELECT img FROM images WHERE name = 'photos/camera.png') WHERE id = 1;
SELECT image_id FROM clip.refresh_queue WHERE collection = 'parted' ORDER BY seq;
SELECT clip.refresh_queued('parted') AS handled;
SELECT image_id FROM clip.embedding WHERE collection = 'parted' ORDER BY 1;
SELECT clip.drop_collection('parted');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'pg_clip_parted_%';
DROP TABLE parted;

-- a collection's source is a table with a NOT NULL, unique id
CREATE TABLE loose (id int, img bytea);
CREATE VIEW loose_view AS SELECT * FROM loose;
SELECT try($$SELECT clip.add_collection('loose', 'loose', 'id', 'img')$$) AS id_not_unique;
SELECT try($$SELECT clip.add_collection('loose', 'loose_view', 'id', 'img')$$) AS a_view;
DROP VIEW loose_view;
DROP TABLE loose;

SELECT clip.revoke_manager('alice');
DROP SCHEMA mallory CASCADE;
DROP OWNED BY alice, mallory;
DROP ROLE alice;
DROP ROLE mallory;
