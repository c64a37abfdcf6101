-- The generated images make run and make web write under .run/demo/ (images, cards, frames),
-- as tables demo_images, demo_cards and demo_frames, with the generator's labels (labels.csv)
-- and the image files' bytes. Included by demo.sql and web.sql.
\getenv root PG_CLIP_ROOT
\set dir :root '/.run/demo/'
SET demo.dir = :'dir';
DO $$
DECLARE
  kind text;
BEGIN
  FOREACH kind IN ARRAY ARRAY['images', 'cards', 'frames'] LOOP
    EXECUTE format('CREATE TABLE %I (id serial PRIMARY KEY, file text, caption text, shape text, colour text,
                    count int, background text, style text, packaged text, card text, image bytea)', 'demo_' || kind);
    EXECUTE format('COPY %I (file, caption, shape, colour, count, background, style, packaged, card) FROM %L
                    WITH (FORMAT csv, HEADER, FORCE_NOT_NULL (card))', 'demo_' || kind,
                   current_setting('demo.dir') || kind || '/labels.csv');
    EXECUTE format('UPDATE %I SET image = pg_read_binary_file(%L || file)', 'demo_' || kind,
                   current_setting('demo.dir') || kind || '/');
  END LOOP;
END $$;

