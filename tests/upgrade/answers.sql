-- What a user's queries answer, printed to compare before and after an upgrade, and after a
-- dump and restore (tests/upgrade/run.sh): search, scores, predictions, clusters,
-- identification, the HNSW index, and a refresh of a new row through the source's triggers.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET pg_clip.device = 'cpu';
SELECT extversion <> '' AS installed FROM pg_extension WHERE extname = 'pg_clip';
SELECT count(*) AS embedded FROM clip.photos_embeddings;
SELECT image_id, sqlstate FROM clip.embedding_error WHERE collection = 'photos' ORDER BY 1;
SELECT image_id, round(similarity::numeric, 4) AS similarity FROM clip.search('photos', 'a rocket launch', 3);
SELECT image_id, round(similarity::numeric, 4) AS similarity FROM clip.similar('photos', 3, 2);
SELECT image_id, attribute_code, round(confidence::numeric, 4) AS confidence, source
FROM clip.feature_image_attribute WHERE collection = 'photos' ORDER BY 1, 2;
SELECT p.id, x.label, round(x.probability::numeric, 4) AS probability
FROM photos p CROSS JOIN LATERAL clip.predict_proba('kind', p.id) x
WHERE EXISTS (SELECT 1 FROM clip.photos_embeddings e WHERE e.image_id = p.id) ORDER BY 1, 2;
SELECT image_id, cluster, round(distance::numeric, 4) AS distance
FROM clip.cluster_assignment WHERE clustering = 'groups' ORDER BY 1;
SELECT p.id, i.label, round(i.score::numeric, 4) AS score
FROM photos p CROSS JOIN LATERAL clip.identify(p.img, 'cards', 1) i WHERE p.id <= 6 ORDER BY 1;
-- the collections' searches go through their HNSW indexes
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT image_id FROM clip.photos_embeddings ORDER BY embedding <=> (SELECT embedding FROM clip.photos_embeddings WHERE image_id = 1) LIMIT 2;
RESET enable_seqscan;
-- a new row is queued by the source's triggers, embedded and scored by the next refresh
INSERT INTO photos SELECT 100, 'copy', img FROM photos WHERE id = 6;
SELECT count(*) AS queued FROM clip.refresh_queue WHERE collection = 'photos';
CALL clip.refresh('photos');
SELECT count(*) AS embedded, count(*) FILTER (WHERE image_id = 100) AS new_one FROM clip.photos_embeddings;
SELECT count(*) AS new_scores FROM clip.feature_image_attribute WHERE collection = 'photos' AND image_id = 100;
SELECT image_id, round(similarity::numeric, 4) AS similarity FROM clip.similar('photos', 100, 1);
DELETE FROM photos WHERE id = 100;
CALL clip.refresh('photos');
SELECT count(*) AS embedded FROM clip.photos_embeddings;
