-- Operating runs: the paused state, breakpoints, deleting and pruning (PostgreSQL).

-- name: set_paused
UPDATE runs SET status = 'paused', paused_at = %(paused_at)s::jsonb
WHERE run_id = %(run_id)s AND status IN ('running', 'paused')
RETURNING status;

-- name: set_unpaused
UPDATE runs SET status = 'running', paused_at = NULL
WHERE run_id = %(run_id)s AND status = 'paused'
RETURNING status;

-- name: set_breakpoints
UPDATE runs SET breakpoints = %(breakpoints)s::jsonb, stepping = %(stepping)s
WHERE run_id = %(run_id)s
RETURNING run_id;

-- name: prune_candidates
-- What prune --before would delete: finished top-level runs (or orphans) created before
-- %(before)s, optionally only in %(statuses)s, and their finished descendants. Oldest first.
WITH RECURSIVE doomed (run_id) AS (
    SELECT r.run_id FROM runs AS r
    WHERE r.created_at < %(before)s
      AND r.status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
      AND (%(statuses)s::text[] IS NULL OR r.status = ANY(%(statuses)s::text[]))
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
DELETE FROM runs WHERE run_id = ANY(%(run_ids)s::text[])
  AND status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
RETURNING run_id;

-- name: prune_runs
-- Finished runs whose last activity is older than %(cutoff)s, from top-level runs (or orphans)
-- down through their finished descendants.
WITH RECURSIVE doomed (run_id) AS (
    SELECT r.run_id FROM runs AS r
    WHERE r.finished_at < %(cutoff)s
      AND r.status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
      AND (r.parent_run_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM runs AS p WHERE p.run_id = r.parent_run_id))
    UNION
    SELECT c.run_id FROM runs AS c JOIN doomed AS d ON c.parent_run_id = d.run_id
    WHERE c.status IN ('succeeded', 'failed', 'cancelled', 'interrupted')
)
DELETE FROM runs WHERE run_id IN (SELECT run_id FROM doomed)
RETURNING run_id;

-- name: prune_pinned
DELETE FROM pipelines_pinned
WHERE NOT EXISTS (SELECT 1 FROM runs WHERE runs.pipeline_hash = pipelines_pinned.hash)
RETURNING hash;

-- name: prune_fires
-- Old fires, except each schedule's latest: the scheduler computes misfires from it.
DELETE FROM schedule_fires
WHERE fire_time < %(cutoff)s
  AND fire_time < (SELECT max(f.fire_time) FROM schedule_fires AS f
                   WHERE f.pipeline_id = schedule_fires.pipeline_id
                     AND f.schedule_id = schedule_fires.schedule_id)
RETURNING fire_time;
