-- pg_clip 0.2.0 schema: run once, after schema/0.1.0.sql on a fresh install and alone in the
-- upgrade from 0.1.0. Frozen once 0.2.0 is released.
-- pg_clip run-once schema

-- the queue's sequence goes with its rows, so that entries queued after a restore do not take
-- the numbers of restored ones
SELECT pg_catalog.pg_extension_config_dump('clip.refresh_queue_seq_seq', '');

-- The rule for the names pg_clip makes object and column names from (collections,
-- vocabularies, classifiers, clusterings): lower-case letters, digits and _, starting with a
-- letter, at most 40 characters, so that the longest derived name (pg_clip_<name>_<8>_hnsw)
-- stays within PostgreSQL's 63. Its one home: the tables' name checks call it, and
-- clip._check_name turns it into an ERROR with a hint. (Not a domain: a name of that type
-- passed to clip._collection(text) would be taken for a cast to the array type _collection.)
CREATE FUNCTION clip._is_name(name text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT name ~ '^[a-z][a-z0-9_]{0,39}$'
$$;
ALTER TABLE clip.collection DROP CONSTRAINT collection_name_check, ADD CONSTRAINT collection_name_check CHECK (clip._is_name(name));
ALTER TABLE clip.vocabulary DROP CONSTRAINT vocabulary_name_check, ADD CONSTRAINT vocabulary_name_check CHECK (clip._is_name(name));
ALTER TABLE clip.label DROP CONSTRAINT label_classifier_check, ADD CONSTRAINT label_classifier_check CHECK (clip._is_name(classifier));
ALTER TABLE clip.classifier DROP CONSTRAINT classifier_name_check, ADD CONSTRAINT classifier_name_check CHECK (clip._is_name(name));
ALTER TABLE clip.clustering DROP CONSTRAINT clustering_name_check, ADD CONSTRAINT clustering_name_check CHECK (clip._is_name(name));

-- 0.1.0 routines that 0.2.0 removed or renamed (the internal ones now start with _); none of
-- them exist on a fresh install
DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['clip._index_name(text, text)', 'clip.register_model(text, text)', 'clip.try_embed_images(bytea[], text)',
                             'clip.try_embed_files(text[], text)', 'clip.file_sha256(text)',
                             'clip.in_transaction_block()', 'clip.read_vocabulary_file(text)',
                             -- (these two gained arguments: the labeller's name; a mode and an exclude list)
                             'clip.label(text, bigint, text, text)', 'clip.next_to_label(text, text, integer)'] LOOP
        IF pg_catalog.to_regprocedure(f) IS NOT NULL THEN
            EXECUTE format('DROP FUNCTION %s', f);
        END IF;
    END LOOP;
END $$;

-- What a model is and how its graphs are called, read at registration: its family (how scores
-- are read), SigLIP's trained bias (probability = sigmoid(logit_scale x cosine + logit_bias)),
-- the graphs' fixed batch sizes (NULL: any), and the registration options (preprocessing
-- flavour, language) that the loader applies each time it opens the folder
ALTER TABLE clip.model
    ADD COLUMN family text NOT NULL DEFAULT 'clip' CHECK (family IN ('clip', 'siglip', 'mclip', 'nllb')),
    ADD COLUMN logit_bias real CHECK (logit_bias BETWEEN -10000 AND 10000),
    ADD COLUMN image_batch integer CHECK (image_batch > 0),
    ADD COLUMN text_batch integer CHECK (text_batch > 0),
    ADD COLUMN options jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object');
COMMENT ON TABLE clip.model IS 'CLIP models registered with clip.register_model(name, folder, options)';

-- 0.1.0 ran a graph with a fixed batch of 1 (immich's exports since 2025) on whole batches and
-- recorded the model's refusal (38000) against each row as if its image were bad; such rows are
-- put back in line (raised, not recorded, since 0.2.0)
DELETE FROM clip.embedding_error WHERE sqlstate = '38000';

-- Every change of a label, for a labelling screen's history and undo: the new label (NULL:
-- removed), the one it replaced (NULL: none), who gave it (the name the caller passes: a web
-- server connects as one role for many people; the caller's role when none) and as which role.
-- An undo is a change too, naming the change it undid.
CREATE TABLE clip.label_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection  text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    classifier  text NOT NULL,
    image_id    bigint NOT NULL,
    label       text,
    previous    text,
    labelled_by text NOT NULL CHECK (length(labelled_by) BETWEEN 1 AND 200),
    role        text NOT NULL DEFAULT current_user,
    labelled_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    undoes      bigint  -- (no foreign key: pg_dump warns of a table referencing itself)
);
CREATE INDEX label_history_image ON clip.label_history (collection, classifier, image_id);
CREATE INDEX label_history_labeller ON clip.label_history (collection, classifier, labelled_by, id);
CREATE INDEX label_history_undoes ON clip.label_history (undoes) WHERE undoes IS NOT NULL;
COMMENT ON TABLE clip.label_history IS 'every change of a label: clip.label, clip.label_many, clip.unlabel, clip.undo_label, clip.import_labels';
SELECT pg_catalog.pg_extension_config_dump('clip.label_history', '');
SELECT pg_catalog.pg_extension_config_dump('clip.label_history_id_seq', '');
ALTER TABLE clip.label ADD CONSTRAINT label_labelled_by_check CHECK (length(labelled_by) BETWEEN 1 AND 200);

-- Thumbnails refresh makes where it decodes each image (pg_clip.thumbnail_size > 0), by
-- content: an unchanged image keeps its thumbnail, and a browsing application its cached URL
CREATE TABLE clip.thumbnail (
    collection     text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    content_sha256 bytea NOT NULL,
    size           integer NOT NULL CHECK (size BETWEEN 16 AND 1024),
    jpeg           bytea NOT NULL,
    made_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, content_sha256, size)
);
COMMENT ON TABLE clip.thumbnail IS 'JPEG thumbnails by content, made by refresh when pg_clip.thumbnail_size > 0';
SELECT pg_catalog.pg_extension_config_dump('clip.thumbnail', '');
