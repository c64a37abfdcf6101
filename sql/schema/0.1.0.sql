-- pg_clip 0.1.0 schema: run once. The tables as version 0.1.0 made them, with what pg_dump
-- keeps. This file is frozen: a later version changes its tables in a file of its own
-- (schema/<version>.sql), which a fresh install runs after this one and the upgrade script runs
-- alone. Functions, views, triggers and privileges live in the re-runnable files of sql/.
-- pg_clip run-once schema

-- registered models

CREATE TABLE clip.model (
    name           text PRIMARY KEY CHECK (name <> ''),
    folder         text NOT NULL,
    embed_dim      integer NOT NULL CHECK (embed_dim > 0),
    image_size     integer NOT NULL CHECK (image_size > 0),
    context_length integer NOT NULL CHECK (context_length > 1),
    -- CLIP's temperature: zero-shot logit = logit_scale x cosine (100 unless config.json says)
    logit_scale    real NOT NULL DEFAULT 100 CHECK (logit_scale > 0),
    -- SHA-256 over the model's files: embeddings made under another stamp are stale
    stamp          text NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    registered_by  name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE clip.model IS 'CLIP models registered with clip.register_model(name, folder)';

-- registered models are user data: pg_dump keeps them
SELECT pg_catalog.pg_extension_config_dump('clip.model', '');

-- collections and their embeddings

CREATE TABLE clip.collection (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    source       regclass NOT NULL,
    id_column    name NOT NULL,
    image_column name NOT NULL,
    -- bytea: the column holds the bytes; path: a text path under pg_clip.image_root
    image_kind   text NOT NULL CHECK (image_kind IN ('bytea', 'path')),
    model        text NOT NULL REFERENCES clip.model (name),
    -- set by clip.set_model: the model being built; the collection switches when it is complete
    next_model   text REFERENCES clip.model (name),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- the role that created it: the auto-refresh worker does the collection's work as this role
    owner        regrole NOT NULL DEFAULT current_user::text::regrole
);
COMMENT ON TABLE clip.collection IS 'image tables that clip.refresh keeps embedded';

CREATE TABLE clip.embedding (
    collection     text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    model          text NOT NULL,
    image_id       bigint NOT NULL,
    -- the model stamp at embedding time: a re-registered model makes these stale
    stamp          text NOT NULL,
    content_sha256 bytea NOT NULL,
    embedding      vector NOT NULL,
    embedded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, model, image_id)
);

-- A counter per collection, raised by every statement that inserts, updates or deletes its
-- embeddings (clip._embeddings_changed). Scoring compares it with the value it last scored, and
-- skips its two anti-joins over all the collection's images when nothing was embedded since.
CREATE TABLE clip.embedding_version (
    collection text PRIMARY KEY REFERENCES clip.collection (name) ON DELETE CASCADE,
    version    bigint NOT NULL DEFAULT 0
);

CREATE TABLE clip.embedding_error (
    collection     text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    image_id       bigint NOT NULL,
    content_sha256 bytea,
    sqlstate       text NOT NULL,
    message        text NOT NULL,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, image_id)
);
COMMENT ON TABLE clip.embedding_error IS
    'rows clip.refresh could not embed; retried when their image changes or after clip.retry_failed()';

-- ids whose image changed or that were deleted, written by the source table's triggers.
-- Append-only: a trigger only ever INSERTs (an id changed twice has two entries), so a user's
-- statement never locks an existing entry, and pg_clip, which deletes entries by `seq` under the
-- collection's advisory lock, never waits on a user's transaction nor deadlocks with it. An
-- entry committed after a batch's snapshot has a `seq` that batch did not see and stays queued.
CREATE TABLE clip.refresh_queue (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    -- NULL: the source was truncated; the next pass checks every embedding of the collection
    image_id   bigint,
    queued_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ON clip.refresh_queue (collection, image_id);

-- one row per collection, committed after each batch so that other sessions see progress
CREATE TABLE clip.refresh_state (
    collection  text PRIMARY KEY REFERENCES clip.collection (name) ON DELETE CASCADE,
    pid         integer,
    started_at  timestamptz,
    updated_at  timestamptz,
    finished_at timestamptz,
    total       bigint NOT NULL DEFAULT 0,
    done        bigint NOT NULL DEFAULT 0,
    embedded    bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    removed     bigint NOT NULL DEFAULT 0,
    unchanged   bigint NOT NULL DEFAULT 0,
    -- the auto-refresh worker's batches that failed as a whole, in a row, and the last error
    failed_batches   int NOT NULL DEFAULT 0,
    last_batch_error text
);

-- collections, embeddings and their errors are user data: pg_dump keeps them
SELECT pg_catalog.pg_extension_config_dump('clip.collection', '');
SELECT pg_catalog.pg_extension_config_dump('clip.embedding', '');
SELECT pg_catalog.pg_extension_config_dump('clip.embedding_error', '');
SELECT pg_catalog.pg_extension_config_dump('clip.embedding_version', '');
SELECT pg_catalog.pg_extension_config_dump('clip.refresh_queue', '');

-- vocabularies and zero-shot scores

CREATE TABLE clip.vocabulary (
    name      text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    source    text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE clip.vocabulary IS 'vocabularies loaded with clip.load_vocabulary(name, yaml)';

-- one row per attribute, with the file's defaults applied (prompts built from the template,
-- calibration and threshold inherited)
CREATE TABLE clip.vocabulary_attribute (
    vocabulary  text NOT NULL REFERENCES clip.vocabulary (name) ON DELETE CASCADE,
    code        text NOT NULL,
    position    int NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('base', 'derived')),
    label       text NOT NULL,
    description text,
    tag         text,
    prompts     text[],
    center      float8,
    scale       float8,
    grp         text,
    rule        text,
    -- the rule with derived codes replaced by their rules (base codes only), and those codes;
    -- scoring parses it again into SQL (clip._rule_sql): no stored text is executed
    rule_expanded text,
    rule_codes  text[],
    threshold   float8 NOT NULL,
    PRIMARY KEY (vocabulary, code)
);

-- the vocabulary each collection is scored with (one per collection)
CREATE TABLE clip.collection_vocabulary (
    collection text PRIMARY KEY REFERENCES clip.collection (name) ON DELETE CASCADE,
    vocabulary text NOT NULL REFERENCES clip.vocabulary (name),
    -- clip.embedding_version.version when the images were last scored (NULL: never)
    scored_embedding_version bigint
);

-- One row per (image, attribute). No foreign key: millions of rows are written in bulk, and
-- clip.drop_collection / clip.detach_vocabulary delete them.
CREATE TABLE clip.feature_image_attribute (
    collection     text NOT NULL,
    image_id       bigint NOT NULL,
    attribute_code text NOT NULL,
    confidence     real NOT NULL,
    -- logit_scale x cosine(image, prompts); NULL for derived rows
    logit          real,
    source         text NOT NULL CHECK (source IN ('zero_shot', 'derived', 'classifier')),
    vocabulary     text,
    model          text,
    scored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, image_id, attribute_code)
);
CREATE INDEX feature_image_attribute_code ON clip.feature_image_attribute (collection, attribute_code, confidence);

-- the text embedding of a prompt list (mean of the prompts' embeddings, renormalised), per model
CREATE TABLE clip.text_embedding (
    model     text NOT NULL REFERENCES clip.model (name) ON DELETE CASCADE,
    stamp     text NOT NULL,
    prompts   text[] NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (model, stamp, prompts)
);

-- what each attribute's rows of a collection were computed from, to score only what changed
CREATE TABLE clip.attribute_score_state (
    collection text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    code       text NOT NULL,
    kind       text NOT NULL,
    model      text,
    stamp      text,
    prompts    text[],
    center     float8,
    scale      float8,
    grp        text,
    rule_expanded text,
    PRIMARY KEY (collection, code)
);

-- which embedding each image's rows were computed from
CREATE TABLE clip.image_score_state (
    collection     text NOT NULL,
    image_id       bigint NOT NULL,
    model          text NOT NULL,
    stamp          text NOT NULL,
    content_sha256 bytea NOT NULL,
    PRIMARY KEY (collection, image_id)
);

SELECT pg_catalog.pg_extension_config_dump('clip.vocabulary', '');
SELECT pg_catalog.pg_extension_config_dump('clip.vocabulary_attribute', '');
SELECT pg_catalog.pg_extension_config_dump('clip.collection_vocabulary', '');
SELECT pg_catalog.pg_extension_config_dump('clip.feature_image_attribute', '');
SELECT pg_catalog.pg_extension_config_dump('clip.text_embedding', '');
SELECT pg_catalog.pg_extension_config_dump('clip.attribute_score_state', '');
SELECT pg_catalog.pg_extension_config_dump('clip.image_score_state', '');

-- reference sets

CREATE TABLE clip.reference_set (
    name         text PRIMARY KEY REFERENCES clip.collection (name) ON DELETE CASCADE,
    -- a column of the source table holding the label; NULL: from the image's file name
    label_column name,
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE clip.reference_set IS 'collections of reference images that clip.identify matches against';

SELECT pg_catalog.pg_extension_config_dump('clip.reference_set', '');

-- labels, classifiers, clusterings

CREATE TABLE clip.label (
    collection  text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    classifier  text NOT NULL CHECK (classifier ~ '^[a-z][a-z0-9_]{0,39}$'),
    image_id    bigint NOT NULL,
    label       text NOT NULL CHECK (label <> '' AND length(label) <= 1000),
    labelled_by text NOT NULL DEFAULT current_user,
    labelled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, classifier, image_id)
);
COMMENT ON TABLE clip.label IS 'labels for classifiers, written by clip.label(collection, image_id, classifier, label)';

-- Every fit is kept: the current classifier is its highest version.
CREATE TABLE clip.classifier (
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    version      int NOT NULL,
    collection   text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    model        text NOT NULL,
    model_stamp  text NOT NULL,
    -- the classes, in weight order; with two, the second is the positive class
    labels       text[] NOT NULL,
    label_counts int[] NOT NULL,
    options      jsonb NOT NULL,
    -- cross-validated: {"folds", "mean": {accuracy, precision, recall, f1, roc_auc, log_loss}, "std": {...}}
    metrics      jsonb NOT NULL,
    iterations   int NOT NULL,
    -- the standardisation fitted on the labelled embeddings (folded into clip.classifier_weight)
    scaler_mean  vector NOT NULL,
    scaler_scale vector NOT NULL,
    fitted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- score = weight . embedding + intercept on raw embeddings; one row (class 1) for two classes
CREATE TABLE clip.classifier_weight (
    name      text NOT NULL,
    version   int NOT NULL,
    class     int NOT NULL,
    weight    vector NOT NULL,
    intercept float8 NOT NULL,
    PRIMARY KEY (name, version, class),
    FOREIGN KEY (name, version) REFERENCES clip.classifier (name, version) ON DELETE CASCADE
);

-- which classifier wrote which attribute codes into clip.feature_image_attribute
CREATE TABLE clip.classification (
    collection    text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    classifier    text NOT NULL,
    version       int NOT NULL,
    codes         text[] NOT NULL,
    classified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, classifier)
);

CREATE TABLE clip.clustering (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    collection text NOT NULL REFERENCES clip.collection (name) ON DELETE CASCADE,
    model      text NOT NULL,
    k          int NOT NULL,
    options    jsonb NOT NULL,
    inertia    float8 NOT NULL,
    iterations int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clip.cluster_centroid (
    clustering text NOT NULL REFERENCES clip.clustering (name) ON DELETE CASCADE,
    cluster    int NOT NULL,
    centroid   vector NOT NULL,
    size       bigint NOT NULL,
    PRIMARY KEY (clustering, cluster)
);

-- distance: squared Euclidean distance to the centroid (2 - 2 cos for unit embeddings).
-- No foreign key to clip.clustering: its check, one per row, cost 0.3-0.4 s of writing a
-- 45,000-image clustering (0.12-0.17 s without). A clustering's delete trigger removes its rows.
CREATE TABLE clip.cluster_assignment (
    clustering text NOT NULL,
    collection text NOT NULL,
    image_id   bigint NOT NULL,
    cluster    int NOT NULL,
    distance   real NOT NULL,
    PRIMARY KEY (clustering, image_id)
);

SELECT pg_catalog.pg_extension_config_dump('clip.label', '');
SELECT pg_catalog.pg_extension_config_dump('clip.classifier', '');
SELECT pg_catalog.pg_extension_config_dump('clip.classifier_weight', '');
SELECT pg_catalog.pg_extension_config_dump('clip.classification', '');
SELECT pg_catalog.pg_extension_config_dump('clip.clustering', '');
SELECT pg_catalog.pg_extension_config_dump('clip.cluster_centroid', '');
SELECT pg_catalog.pg_extension_config_dump('clip.cluster_assignment', '');

