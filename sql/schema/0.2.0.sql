-- pg_clip 0.2.0 schema: run once, after schema/0.1.0.sql on a fresh install and alone in the
-- upgrade from 0.1.0. Frozen once 0.2.0 is released.
-- pg_clip run-once schema

-- the queue's sequence goes with its rows, so that entries queued after a restore do not take
-- the numbers of restored ones
SELECT pg_catalog.pg_extension_config_dump('clip.refresh_queue_seq_seq', '');
