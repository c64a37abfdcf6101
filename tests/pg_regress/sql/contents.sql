-- What the extension installs: every member object (\dx+), every table's columns, constraints,
-- indexes, policies and triggers (\d+), and every function's volatility, rights, settings and
-- privileges. The same expected output is checked against a fresh install (make test-regress)
-- and against an upgrade from the last release (tests/upgrade/run.sh): an upgrade script that
-- leaves the catalog different from a fresh install fails one of them.
\dx+ pg_clip
\d+ clip.model
\d+ clip.collection
\d+ clip.embedding
\d+ clip.embedding_version
\d+ clip.embedding_error
\d+ clip.refresh_queue
\d+ clip.refresh_state
\d+ clip.refresh_progress
\d+ clip.vocabulary
\d+ clip.vocabulary_attribute
\d+ clip.collection_vocabulary
\d+ clip.feature_image_attribute
\d+ clip.text_embedding
\d+ clip.attribute_score_state
\d+ clip.image_score_state
\d+ clip.reference_set
\d+ clip.label
\d+ clip.label_history
\d+ clip.thumbnail
\d+ clip.classifier
\d+ clip.classifier_weight
\d+ clip.classification
\d+ clip.clustering
\d+ clip.cluster_centroid
\d+ clip.cluster_assignment
SELECT p.oid::regprocedure AS routine, p.prokind AS kind, p.provolatile AS volatility, p.prosecdef AS definer,
       p.proconfig AS settings, replace(p.proacl::text, p.proowner::regrole::text, 'owner') AS privileges
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
WHERE d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_clip')
ORDER BY p.oid::regprocedure::text;
SELECT c.oid::regclass AS relation, replace(c.relacl::text, c.relowner::regrole::text, 'owner') AS privileges
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
WHERE d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_clip')
ORDER BY c.oid::regclass::text;
