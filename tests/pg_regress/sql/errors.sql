-- Bad input: each case is an ERROR with a SQLSTATE, a message naming the problem and a hint,
-- and the backend keeps serving.
SET pg_clip.device = 'cpu';
SET pg_clip.model = 'tiny';

SELECT name, try(format('SELECT clip.embed_image(%L::bytea)', img)) AS result
FROM images
WHERE name IN ('edge/bomb.png', 'edge/cat.ppm', 'edge/random.bin', 'edge/truncated.jpg')
ORDER BY name;

SELECT try($$SELECT clip.embed_image(''::bytea)$$) AS empty_bytes;
SELECT clip.embed_image(NULL) IS NULL AS null_in_null_out;

-- in a batch, the failing element is named
SELECT try(format('SELECT clip.embed_images(ARRAY[%L::bytea, NULL, %L::bytea])',
                  (SELECT img FROM images WHERE name = 'photos/rocket.jpg'),
                  (SELECT img FROM images WHERE name = 'edge/truncated.jpg'))) AS batch_error;

-- a lowered pixel limit refuses the 6000x300 panorama before decoding it
SET pg_clip.max_image_pixels = 1000000;
SELECT try(format('SELECT clip.embed_image(%L::bytea)', (SELECT img FROM images WHERE name = 'edge/panorama.jpg'))) AS over_limit;
RESET pg_clip.max_image_pixels;

-- models
SELECT try($$SELECT clip.embed_text('x', 'nope')$$) AS unregistered;
RESET pg_clip.model;
SELECT try($$SELECT clip.embed_text('x')$$) AS no_default;
SET pg_clip.model = 'tiny';
\getenv root PG_CLIP_ROOT
-- (the checkout's path is masked so the expected output does not depend on it)
SELECT replace(try($$SELECT clip.register_model('gone', 'no-such-folder')$$), :'root', '$ROOT') AS missing_folder;
SELECT try($$SELECT clip.register_model('', 'tiny-clip')$$) AS empty_name;
SELECT replace(try($$SELECT clip.register_model('half', 'tiny-clip/visual')$$), :'root', '$ROOT') AS not_a_model_folder;

-- cuda demanded where the library has no CUDA provider (the CPU build): an ERROR, not a fallback
-- (in a session that runs models itself: the inference service takes the server's device)
SET pg_clip.inference = 'local';
SET pg_clip.device = 'cuda';
SELECT split_part(try($$SELECT clip.embed_text('x')$$), ':', 1) AS sqlstate,
       try($$SELECT clip.embed_text('x')$$) LIKE '%CUDA execution provider could not start%' AS names_cuda;
SET pg_clip.device = 'cpu';
RESET pg_clip.inference;

-- settings are checked and the prefix is reserved
SELECT try($$SET pg_clip.device = 'gpu'$$) AS bad_device;
SELECT try($$SET pg_clip.batch_size = 0$$) AS bad_batch;
SELECT try($$SET pg_clip.no_such_setting = 1$$) AS reserved_prefix;

-- only superusers may register models
CREATE ROLE clip_reader;
SET ROLE clip_reader;
SELECT try($$SELECT clip.register_model('x', 'tiny-clip')$$) AS not_superuser;
SELECT vector_dims(clip.embed_text('still works for everyone')) AS dims;
RESET ROLE;
DROP ROLE clip_reader;

-- and after all of that the backend still embeds
SELECT vector_dims(clip.embed_image((SELECT img FROM images WHERE name = 'photos/chelsea.png'))) AS dims;
