-- Shared setup for the golden SQL tests: the extension, the tiny test model, a helper that
-- turns an ERROR into one line "SQLSTATE: message / HINT" so error cases stay in the output.
CREATE EXTENSION pg_clip CASCADE;
SET pg_clip.device = 'cpu';
SELECT name, embed_dim, image_size, context_length, length(stamp) AS stamp_chars, device
FROM clip.register_model('tiny', 'tiny-clip');
SELECT name, embed_dim, folder LIKE '%/models/tiny-clip' AS folder_ok FROM clip.model;

CREATE FUNCTION public.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' / HINT: ' || nullif(hint, ''), '');
END $$;

\getenv root PG_CLIP_ROOT
CREATE TABLE public.images AS
SELECT f AS name, pg_read_binary_file(:'root' || '/tests/images/' || f) AS img
FROM unnest(ARRAY[
    'photos/astronaut.png', 'photos/camera.png', 'photos/chelsea.png', 'photos/coffee.png',
    'photos/hubble_deep_field.jpg', 'photos/rocket.jpg',
    'edge/alpha.png', 'edge/bomb.png', 'edge/cat.bmp', 'edge/cat.gif', 'edge/cat.ppm', 'edge/cat.tiff',
    'edge/cat.webp', 'edge/cmyk.jpg', 'edge/exif_rotate90.jpg', 'edge/grey.jpg', 'edge/one_pixel.png',
    'edge/palette.png', 'edge/panorama.jpg', 'edge/random.bin', 'edge/rgb16.png', 'edge/truncated.jpg'
]) AS f;
CREATE TABLE public.golden AS
SELECT pg_read_file(:'root' || '/tests/golden/embeddings.json')::jsonb AS j;
SELECT count(*) AS images, sum(length(img)) > 0 AS has_bytes FROM images;
