-- Retention and upkeep.

-- name: prune_runs
-- Finished runs whose last activity is older than :cutoff, starting from top-level runs (or runs
-- whose parent is already gone) and taking their finished descendants with them, so a child is
-- never pruned from under a parent that is still kept. Records, attempts and events go by cascade.
-- RETURNING: Python's rowcount is -1 for a statement that starts with WITH.
WITH RECURSIVE doomed (run_id) AS (
    SELECT r.run_id FROM runs AS r
    WHERE r.finished_at < :cutoff
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
-- Definitions no remaining run is pinned to.
DELETE FROM pipelines_pinned
WHERE NOT EXISTS (SELECT 1 FROM runs WHERE runs.pipeline_hash = pipelines_pinned.hash);

-- name: prune_fires
-- Old fires, except each schedule's latest: the scheduler computes misfires from it.
DELETE FROM schedule_fires
WHERE fire_time < :cutoff
  AND fire_time < (SELECT max(f.fire_time) FROM schedule_fires AS f
                   WHERE f.pipeline_id = schedule_fires.pipeline_id
                     AND f.schedule_id = schedule_fires.schedule_id);

-- name: reclaim_space
-- Run with executescript, outside a transaction: it frees one page per step.
PRAGMA incremental_vacuum;

-- name: checkpoint_truncate
PRAGMA wal_checkpoint(TRUNCATE);

-- name: checkpoint_passive
-- The writer's periodic checkpoint: copies what it can without waiting for readers.
PRAGMA wal_checkpoint(PASSIVE);

-- name: auto_checkpoint_off
-- The writer runs its own checkpoints on its thread instead (flowmasond.journal.writer).
PRAGMA wal_autocheckpoint = 0;

-- name: integrity_check
PRAGMA integrity_check;

-- name: free_pages
PRAGMA freelist_count;

-- name: page_count
PRAGMA page_count;

-- name: page_size
PRAGMA page_size;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :now);

-- name: schema_version
PRAGMA user_version;
