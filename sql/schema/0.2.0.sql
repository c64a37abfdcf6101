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
                             'clip.label(text, bigint, text, text)', 'clip.next_to_label(text, text, integer)',
                             -- (these say which projection head answered: a column more)
                             'clip.identify(vector, text, integer, real, real)', 'clip.identify(bytea, text, integer, real, real)',
                             'clip.identify_many(bytea[], text, integer, real, real)', 'clip.verify_reference_set(text)'] LOOP
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

-- Projection heads (clip.train_projection): a small network trained on a reference set's
-- embeddings and augmented copies of its references, through which clip.identify compares.
-- Each training is a new version; the newest answers. `stamp`: the model stamp it was trained
-- for (another model, or the model registered again, makes it stale). `weights`: f32,
-- little-endian, w1 (hidden x input), b1, w2 (output x hidden), b2; stored uncompressed, read
-- once per session.
CREATE TABLE clip.projection (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference_set text NOT NULL REFERENCES clip.reference_set (name) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version > 0),
    model         text NOT NULL,
    stamp         text NOT NULL,
    input_dim     integer NOT NULL CHECK (input_dim > 0),
    hidden_dim    integer NOT NULL CHECK (hidden_dim > 0),
    output_dim    integer NOT NULL CHECK (output_dim BETWEEN 1 AND 16000),
    weights       bytea NOT NULL,
    options       jsonb NOT NULL,
    losses        double precision[] NOT NULL,
    evaluation    jsonb NOT NULL,
    refs          integer NOT NULL,
    labels        integer NOT NULL,
    copies        integer NOT NULL,
    embed_seconds real NOT NULL,
    train_seconds real NOT NULL,
    trained_at    timestamptz NOT NULL DEFAULT now(),
    trained_by    text NOT NULL DEFAULT current_user,
    UNIQUE (reference_set, version)
);
ALTER TABLE clip.projection ALTER COLUMN weights SET STORAGE EXTERNAL;
COMMENT ON TABLE clip.projection IS 'projection heads of reference sets, a version per clip.train_projection';

-- The references through the set's newest head, searched by clip.identify (an HNSW index per
-- set, made at run time like a collection's). Gone with the reference's embedding.
CREATE TABLE clip.projection_embedding (
    reference_set text NOT NULL,
    model         text NOT NULL,
    image_id      bigint NOT NULL,
    projection    bigint NOT NULL REFERENCES clip.projection (id) ON DELETE CASCADE,
    embedding     vector NOT NULL,
    PRIMARY KEY (reference_set, image_id),
    FOREIGN KEY (reference_set, model, image_id) REFERENCES clip.embedding (collection, model, image_id) ON DELETE CASCADE
);
CREATE INDEX projection_embedding_projection ON clip.projection_embedding (projection);
COMMENT ON TABLE clip.projection_embedding IS 'references of a reference set through its newest projection head';

-- Embedded augmented copies of references, by content: a retraining, or a training after new
-- references came, embeds only the copies it has not embedded before. (A release that changes
-- how copies are made must empty this table in its schema file.)
CREATE TABLE clip.projection_copy (
    collection     text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    model          text NOT NULL,
    stamp          text NOT NULL,
    content_sha256 bytea NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('train', 'held_out')),
    copy           integer NOT NULL CHECK (copy >= 0),
    embedding      vector NOT NULL,
    PRIMARY KEY (collection, model, content_sha256, kind, copy)
);
COMMENT ON TABLE clip.projection_copy IS 'embedded augmented copies of references, made by clip.train_projection';

SELECT pg_catalog.pg_extension_config_dump('clip.projection', '');
SELECT pg_catalog.pg_extension_config_dump('clip.projection_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('clip.projection_embedding', '');
SELECT pg_catalog.pg_extension_config_dump('clip.projection_copy', '');
