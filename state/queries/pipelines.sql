-- Pinned pipeline definitions. Parameters are named (:name); see flowmasond/journal/queries.py.

-- name: pin_pipeline
-- Store a definition once; pinning the same content again is a no-op.
INSERT INTO pipelines_pinned (hash, pipeline_id, definition, first_seen_at)
VALUES (:hash, :pipeline_id, :definition, :now)
ON CONFLICT (hash) DO NOTHING;

-- name: pinned_definition
SELECT definition FROM pipelines_pinned WHERE hash = :hash;

-- name: run_definition
-- The exact definition a run is pinned to.
SELECT p.definition
FROM runs AS r JOIN pipelines_pinned AS p ON p.hash = r.pipeline_hash
WHERE r.run_id = :run_id;
