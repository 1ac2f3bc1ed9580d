-- Run lifecycle. Rows are read by column name, so SELECT * stays correct as columns are added.

-- name: insert_run
-- :started_at is set for a run created already running (Journal.create_run(start=True)).
INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, created_at, started_at,
                  parent_run_id, parent_path, schedule_id, fire_time,
                  forked_from, from_stage, breakpoints)
VALUES (:run_id, :pipeline_id, :pipeline_hash, :inputs, :status, :now, :started_at,
        :parent_run_id, :parent_path, :schedule_id, :fire_time,
        :forked_from, :from_stage, :breakpoints);

-- name: get_run
SELECT * FROM runs WHERE run_id = :run_id;

-- name: run_status
SELECT status, pipeline_hash FROM runs WHERE run_id = :run_id;

-- name: update_run_status
-- A conditional update: only from a status in :expected (a JSON array). Of two racing changes
-- (two resumes, a cancel and a recovery...) exactly one matches; the other gets no row back.
-- started_at keeps the first start; finished_at is cleared when a run is resumed.
UPDATE runs
SET status      = :status,
    output      = :output,
    error       = :error,
    started_at  = CASE WHEN :status = 'running' THEN coalesce(started_at, :now) ELSE started_at END,
    finished_at = CASE WHEN :finished THEN :now ELSE NULL END,
    -- The waiting stages are kept only while the run stays paused (a stop while paused keeps them).
    paused_at   = CASE WHEN :status = 'paused' THEN paused_at ELSE NULL END,
    -- Stage durations are summed here rather than on every commit (see add_run_usage).
    duration_ms = coalesce((SELECT sum(duration_ms) FROM run_records
                            WHERE run_id = :run_id AND kind = 'result'), 0)
WHERE run_id = :run_id
  AND status IN (SELECT value FROM json_each(:expected))
RETURNING status;

-- name: add_run_usage
-- Only for commits that carry tokens, cost, provider or model; durations are summed by
-- update_run_status. Provider and model merge like UsageMetrics.__add__: NULL is neutral,
-- different names give :mixed.
UPDATE runs
SET input_tokens  = input_tokens + :input_tokens,
    output_tokens = output_tokens + :output_tokens,
    cost_usd      = cost_usd + :cost_usd,
    duration_ms   = duration_ms + :duration_ms,
    provider      = CASE WHEN :provider IS NULL THEN provider
                         WHEN provider IS NULL OR provider = :provider THEN :provider
                         ELSE :mixed END,
    model         = CASE WHEN :model IS NULL THEN model
                         WHEN model IS NULL OR model = :model THEN :model
                         ELSE :mixed END
WHERE run_id = :run_id;

-- name: increment_recovery_attempts
UPDATE runs SET recovery_attempts = recovery_attempts + 1
WHERE run_id = :run_id
RETURNING recovery_attempts;

-- name: record_resume
-- Claims the run for a resume: back to 'pending', only from a status in :expected (a JSON array),
-- so of two racing resumes exactly one gets a row back. Counts the resume and, when asked to,
-- re-pins the run to another definition.
UPDATE runs
SET status        = 'pending',
    finished_at   = NULL,
    resumed_count = resumed_count + 1,
    pipeline_hash = coalesce(:pipeline_hash, pipeline_hash)
WHERE run_id = :run_id
  AND status IN (SELECT value FROM json_each(:expected))
RETURNING resumed_count;

-- name: list_runs
-- Newest first. :statuses is a JSON array of status names, or NULL for all. A page continues
-- after the cursor (:cursor_at, :cursor_id: the last run of the previous page), every NULL
-- filter matches all.
SELECT * FROM runs
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:pipeline_id IS NULL OR pipeline_id = :pipeline_id)
  AND (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
  AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
  AND (:parent_run_id IS NULL OR parent_run_id = :parent_run_id)
  AND (:cursor_at IS NULL OR created_at < :cursor_at OR (created_at = :cursor_at AND run_id < :cursor_id))
ORDER BY created_at DESC, run_id DESC
LIMIT :limit OFFSET :offset;

-- name: count_runs
SELECT count(*) FROM runs
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:pipeline_id IS NULL OR pipeline_id = :pipeline_id)
  AND (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
  AND (:schedule_id IS NULL OR schedule_id = :schedule_id)
  AND (:parent_run_id IS NULL OR parent_run_id = :parent_run_id);

-- name: child_runs
SELECT * FROM runs WHERE parent_run_id = :run_id ORDER BY created_at, run_id;

-- name: count_runs_by_status
SELECT status, count(*) AS n FROM runs GROUP BY status;

-- name: active_runs_of_schedule
-- A schedule's runs still going, oldest first: what its overlap policy counts (runs_by_status).
SELECT run_id, status FROM runs
WHERE status IN ('pending', 'running', 'paused')
  AND pipeline_id = :pipeline_id AND schedule_id = :schedule_id
ORDER BY created_at, run_id;

-- name: ping
SELECT 1;
