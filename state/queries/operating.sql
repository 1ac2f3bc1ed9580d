-- Operating runs: breakpoints and the paused state, stage logs, deleting and pruning by date.

-- name: set_paused
-- Only a running (or already paused) run pauses: a run cancelled meanwhile stays cancelled.
UPDATE runs SET status = 'paused', paused_at = :paused_at
WHERE run_id = :run_id AND status IN ('running', 'paused')
RETURNING status;

-- name: set_unpaused
UPDATE runs SET status = 'running', paused_at = NULL
WHERE run_id = :run_id AND status = 'paused'
RETURNING status;

-- name: set_breakpoints
UPDATE runs SET breakpoints = :breakpoints, stepping = :stepping
WHERE run_id = :run_id
RETURNING run_id;

-- name: insert_log
INSERT INTO run_logs (run_id, path, stream, ts, text) VALUES (:run_id, :path, :stream, :ts, :text);

-- name: run_logs_after
-- :path NULL: every stage; otherwise the stage path and everything nested under it.
SELECT id, run_id, path, stream, ts, text FROM run_logs
WHERE run_id = :run_id AND id > :after_id
  AND (:path IS NULL OR path = :path OR path LIKE :path || '/%' OR path LIKE '%/' || :path)
ORDER BY id
LIMIT :limit;

-- name: run_log_stages
SELECT path, count(*) AS chunks, sum(length(text)) AS chars FROM run_logs
WHERE run_id = :run_id GROUP BY path ORDER BY min(id);

-- name: prune_candidates
-- What prune --before would delete: finished top-level runs (or orphans) created before :before,
-- optionally only in :statuses (JSON array), and their finished descendants. Oldest first.
WITH RECURSIVE doomed (run_id) AS (
    SELECT r.run_id FROM runs AS r
    WHERE r.created_at < :before
      AND r.status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
      AND (:statuses IS NULL OR r.status IN (SELECT value FROM json_each(:statuses)))
      AND (r.parent_run_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM runs AS p WHERE p.run_id = r.parent_run_id))
    UNION
    SELECT c.run_id FROM runs AS c JOIN doomed AS d ON c.parent_run_id = d.run_id
    WHERE c.status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
)
SELECT run_id, pipeline_id, status, created_at, parent_run_id FROM runs
WHERE run_id IN (SELECT run_id FROM doomed)
ORDER BY created_at, run_id;

-- name: delete_runs
-- :run_ids is a JSON array; records, attempts, events and logs go by cascade.
DELETE FROM runs WHERE run_id IN (SELECT value FROM json_each(:run_ids))
  AND status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
RETURNING run_id;
