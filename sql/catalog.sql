-- pg_clip catalog: registered models.

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

-- everyone may embed with the registered models
GRANT USAGE ON SCHEMA clip TO PUBLIC;
GRANT SELECT ON clip.model TO PUBLIC;
