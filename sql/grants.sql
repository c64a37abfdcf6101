-- Runs last, after every function exists: who may do what (docs/security.md's privilege table).
--
-- Everyone may embed with the registered models and read the collections whose source tables
-- they may read. Writing pg_clip's tables (collections, refreshes, vocabularies, labels, fits,
-- clusterings, reference sets) is for the extension's owner and the roles it makes managers
-- with clip.grant_manager(role). Row security keeps every role, managers included, to the
-- collections whose source tables it may read (superusers and the extension's owner are exempt,
-- as PostgreSQL exempts table owners).

-- Who may read what: the schema and the registered models, everyone; a collection's data, the
-- roles that may read its source table (the row-security policies below).
GRANT USAGE ON SCHEMA clip TO PUBLIC;
GRANT SELECT ON clip.model, clip.collection, clip.embedding, clip.embedding_error, clip.embedding_version,
    clip.refresh_state, clip.refresh_progress, clip.vocabulary, clip.vocabulary_attribute,
    clip.collection_vocabulary, clip.feature_image_attribute, clip.reference_set, clip.label, clip.classifier,
    clip.classifier_weight, clip.clustering, clip.cluster_centroid, clip.cluster_assignment, clip.label_history, clip.thumbnail,
    clip.projection, clip.projection_embedding, clip.projection_copy TO PUBLIC;

-- Row security on every table that holds a collection's data. (Made again by every version's
-- script: a policy has no CREATE OR REPLACE.)
DO $$
DECLARE t text; rule text;
BEGIN
    FOR t, rule IN
        SELECT u, 'collection IN (SELECT r FROM clip._readable_collections() r)'
        FROM unnest(ARRAY['embedding', 'embedding_error', 'embedding_version', 'refresh_queue', 'refresh_state',
                          'feature_image_attribute', 'collection_vocabulary', 'attribute_score_state',
                          'image_score_state', 'label', 'label_history', 'thumbnail', 'classifier', 'classification', 'clustering',
                          'cluster_assignment', 'projection_copy']) u
        UNION ALL VALUES ('reference_set', 'name IN (SELECT r FROM clip._readable_collections() r)'),
                         ('projection', 'reference_set IN (SELECT r FROM clip._readable_collections() r)'),
                         ('projection_embedding', 'reference_set IN (SELECT r FROM clip._readable_collections() r)'),
                         ('classifier_weight', 'name IN (SELECT k.name FROM clip.classifier k)'),
                         ('cluster_centroid', 'clustering IN (SELECT z.name FROM clip.clustering z)')
    LOOP
        EXECUTE format('ALTER TABLE clip.%I ENABLE ROW LEVEL SECURITY', t);
        -- (looked up first: DROP POLICY IF EXISTS would say NOTICE on a fresh install)
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = ('clip.' || t)::regclass AND polname = 'readable') THEN
            EXECUTE format('DROP POLICY readable ON clip.%I', t);
        END IF;
        EXECUTE format('CREATE POLICY readable ON clip.%I USING (%s)', t, rule);
    END LOOP;
    -- the source tables' triggers run as the role that writes the rows: it may queue them
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = 'clip.refresh_queue'::regclass AND polname = 'queue_writes') THEN
        DROP POLICY queue_writes ON clip.refresh_queue;
    END IF;
    CREATE POLICY queue_writes ON clip.refresh_queue FOR INSERT
        WITH CHECK (collection IN (SELECT c.name FROM clip.collection c WHERE clip._may_write_source(c)));
END $$;
-- (the queue's rows a role may see are those of the collections it may read: clip.identify
-- counts a reference set's queued changes)
GRANT SELECT, INSERT ON clip.refresh_queue TO PUBLIC;

-- What a manager holds (clip.grant_manager gives it, clip.revoke_manager takes it back): the
-- rows of clip's tables, and every function and procedure but model registration and these.
CREATE OR REPLACE FUNCTION clip._manager_privileges(role regrole, give boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t regclass;
    verb text := CASE WHEN give THEN 'GRANT' ELSE 'REVOKE' END;
    dir text := CASE WHEN give THEN 'TO' ELSE 'FROM' END;
BEGIN
    FOR t IN SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = 'clip'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('%s SELECT, INSERT, UPDATE, DELETE ON %s %s %s', verb, t, dir, role);
    END LOOP;
    EXECUTE format('%s EXECUTE ON ALL FUNCTIONS IN SCHEMA clip %s %s', verb, dir, role);
    EXECUTE format('%s EXECUTE ON ALL PROCEDURES IN SCHEMA clip %s %s', verb, dir, role);
    IF give THEN
        EXECUTE format('REVOKE EXECUTE ON FUNCTION clip.register_model(text, text, jsonb), clip.grant_manager(regrole),
                        clip.revoke_manager(regrole), clip._manager_privileges(regrole, boolean) FROM %s', role);
    END IF;
END $$;

-- Internal functions are not for PUBLIC: the triggers, the SECURITY DEFINER helpers, the batch
-- embedders and file readers behind clip.refresh. (Triggers fire whoever writes; managers get
-- EXECUTE from clip.grant_manager.) The helpers that public functions call stay callable and
-- are safe with any argument: they read through the row-security policies or compute only
-- (clip._set_labels writes, with the caller's table privileges: a reader's call is refused).
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_clip'
        WHERE (p.proname LIKE '\_%' OR p.proname = 'register_model')
          AND p.proname NOT IN ('_collection', '_may_read', '_readable_collections', '_may_write_source',
                                '_reference_set', '_reference_labels_sql', '_probabilities', '_current_classifier',
                                '_class_code', '_label_code', '_check_name', '_is_name', '_derived_name',
                                '_sigmoid', '_softmax_term', '_calibration', '_clip_calibration', '_setting', '_in_transaction_block',
                                '_read_vocabulary_file', '_vocabulary', '_group_classes', '_blend', '_set_labels',
                                '_projection_for', '_projection_stale', '_newest_projection', '_image_sql', '_project',
                                '_project_rows')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

-- Make `role` a pg_clip manager: it may create and refresh collections, load vocabularies,
-- label, fit and cluster, for the collections whose source tables it may read. Registering
-- models stays with superusers (it reads server files). Run by the extension's owner.
CREATE OR REPLACE FUNCTION clip.grant_manager(role regrole) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clip._manager_privileges(role, true);
END $$;

CREATE OR REPLACE FUNCTION clip.revoke_manager(role regrole) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clip._manager_privileges(role, false);
END $$;
REVOKE ALL ON FUNCTION clip.grant_manager(regrole), clip.revoke_manager(regrole) FROM PUBLIC;

-- Every function runs with a pinned search_path: pg_catalog, clip, pgvector's schema (found
-- now: PostgreSQL 15 has no @extschema:vector@), then pg_temp last, so that no name a function
-- looks up resolves to a user's object (temporary relations are named pg_temp.* where used).
-- A user can neither shadow an operator such as <=> nor a type such as vector from a schema of
-- theirs. (Moving pgvector to another schema later breaks these paths: upgrade scripts must run
-- this block again.)
DO $$
DECLARE
    vec name := (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'vector');
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_clip'
        -- (not CALL clip.refresh: a procedure with SET cannot COMMIT. It runs as its caller and
        -- all it does is call pinned functions and write clip's tables, named in full.)
        WHERE p.prokind <> 'p'
          -- (SECURITY DEFINER functions keep their own, stricter path: pg_catalog, pg_temp)
          AND NOT p.prosecdef
          -- (the SQL functions of the row-security policies stay inlinable, which a SET clause
          -- prevents: the planner folds them into each query instead of calling them per row:
          -- 0.23 ms less per identify for a reader. Their bodies name everything in full.)
          AND p.proname NOT IN ('_may_read', '_readable_collections', '_may_write_source')
          -- (nor the formulas the scoring and prediction queries inline, per row, for the same
          -- reason: clip._sigmoid, clip._softmax_term, clip._calibration; their bodies name
          -- everything in full)
          AND p.proname NOT IN ('_sigmoid', '_softmax_term', '_calibration')
    LOOP
        EXECUTE format('ALTER ROUTINE %s SET search_path = pg_catalog, clip, %I, pg_temp', f, vec);
    END LOOP;
END $$;

-- A manager made before this version's functions existed gets EXECUTE on them too (the roles,
-- other than the owner, that clip.grant_manager gave INSERT on clip.collection).
DO $$
DECLARE r regrole;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee::regrole FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = 'clip.collection'::regclass AND a.privilege_type = 'INSERT' AND a.grantee <> c.relowner
               AND a.grantee <> 0 LOOP
        PERFORM clip._manager_privileges(r, true);
    END LOOP;
END $$;
