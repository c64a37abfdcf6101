-- Embeddings from SQL against the reference (Python onnxruntime on PIL preprocessing).
SET pg_clip.device = 'cpu';
SET pg_clip.model = 'tiny';

-- every accepted format and odd shape gives a unit vector of the model's dimension
SELECT name, vector_dims(e) AS dims, round(vector_norm(e)::numeric, 4) AS norm
FROM (SELECT name, clip.embed_image(img) AS e FROM images
      WHERE name NOT IN ('edge/bomb.png', 'edge/cat.ppm', 'edge/random.bin', 'edge/truncated.jpg')) s
ORDER BY name;

-- cosine to the reference embedding of the same file (golden/embeddings.json)
SELECT i.name, round((1 - (clip.embed_image(i.img) <=> (g.j -> 'images' ->> i.name)::vector))::numeric, 4) AS cosine_to_reference
FROM images i, golden g
WHERE g.j -> 'images' ? i.name
ORDER BY i.name;

SELECT left(t, 30) AS text, round((1 - (clip.embed_text(t) <=> (g.j -> 'texts' ->> t)::vector))::numeric, 4) AS cosine_to_reference
FROM golden g, jsonb_object_keys(g.j -> 'texts') AS t
ORDER BY t;

-- a batch equals single calls, NULL elements stay NULL, order is kept
SET pg_clip.batch_size = 4;
WITH a AS (
    SELECT array_agg(img ORDER BY name) || NULL::bytea AS imgs, array_agg(name ORDER BY name) || 'null'::text AS names
    FROM images WHERE name LIKE 'photos/%'
)
SELECT u.name, u.e IS NULL AS is_null,
       round(coalesce((u.e <=> clip.embed_image(i.img))::numeric, -1), 5) AS distance_to_single
FROM a, unnest(a.names, clip.embed_images(a.imgs)) AS u(name, e)
LEFT JOIN images i ON i.name = u.name
ORDER BY u.name;
RESET pg_clip.batch_size;

SELECT array_length(clip.embed_texts(ARRAY['a cat', NULL, 'a dog']), 1) AS n,
       (clip.embed_texts(ARRAY['a cat', NULL, 'a dog']))[2] IS NULL AS middle_is_null,
       round(((clip.embed_texts(ARRAY['a cat', NULL, 'a dog']))[3] <=> clip.embed_text('a dog'))::numeric, 5) AS distance;

-- the model can be named per call; text over 77 tokens is truncated, not an error
SELECT vector_dims(clip.embed_text(repeat('very ', 200) || 'long', 'tiny')) AS long_text_dims;

-- text-to-image search over stored embeddings with pgvector's operators
CREATE TABLE emb AS SELECT name, clip.embed_image(img) AS e FROM images WHERE name LIKE 'photos/%';
SELECT count(*) AS ranked FROM (SELECT name FROM emb ORDER BY e <=> clip.embed_text('a photo of a cat') LIMIT 3) s;
