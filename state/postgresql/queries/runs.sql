-- Run lifecycle (PostgreSQL). Parameters are psycopg's %(name)s; a literal percent sign is %%.

-- name: pin_pipeline
-- Store a definition once; pinning the same content again is a no-op.
INSERT INTO pipelines_pinned (hash, pipeline_id, definition, first_seen_at)
VALUES (%(hash)s, %(pipeline_id)s, %(definition)s, %(now)s)
ON CONFLICT (hash) DO NOTHING;

-- name: pinned_definition
SELECT definition FROM pipelines_pinned WHERE hash = %(hash)s;

-- name: run_definition
SELECT p.definition
FROM runs AS r JOIN pipelines_pinned AS p ON p.hash = r.pipeline_hash
WHERE r.run_id = %(run_id)s;

-- name: insert_run
-- ON CONFLICT: a run id that exists is refused by the caller (it gets no row back), without
-- aborting the transaction the way a unique violation would. %(started_at)s is set for a run
-- created already running (create_run(start=True)).
INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, created_at, started_at,
                  parent_run_id, parent_path, schedule_id, fire_time,
                  forked_from, from_stage, breakpoints)
VALUES (%(run_id)s, %(pipeline_id)s, %(pipeline_hash)s, %(inputs)s::json, %(status)s, %(now)s, %(started_at)s,
        %(parent_run_id)s, %(parent_path)s, %(schedule_id)s, %(fire_time)s,
        %(forked_from)s, %(from_stage)s, %(breakpoints)s::jsonb)
ON CONFLICT (run_id) DO NOTHING
RETURNING run_id;

-- name: get_run
-- Documents come back as text: decoded by flowmasond.journal.postgres.rows, exactly as stored.
SELECT run_id, pipeline_id, pipeline_hash, inputs::text AS inputs, status, created_at, started_at,
       finished_at, output::text AS output, error::text AS error, parent_run_id, parent_path,
       schedule_id, fire_time, recovery_attempts, resumed_count, input_tokens, output_tokens,
       cost_usd, duration_ms, provider, model, forked_from, from_stage,
       breakpoints::text AS breakpoints, stepping, paused_at::text AS paused_at
FROM runs WHERE run_id = %(run_id)s;

-- name: run_status
-- FOR UPDATE: the status read is the one the conditional update in the same transaction replaces.
SELECT status, pipeline_hash FROM runs WHERE run_id = %(run_id)s FOR UPDATE;

-- name: run_status_read
SELECT status FROM runs WHERE run_id = %(run_id)s;

-- name: update_run_status
-- A conditional update: only from a status in %(expected)s. Of two racing changes exactly one
-- matches; the other gets no row back.
UPDATE runs
SET status      = %(status)s,
    output      = %(output)s::json,
    error       = %(error)s::jsonb,
    started_at  = CASE WHEN %(status)s = 'running' THEN coalesce(started_at, %(now)s) ELSE started_at END,
    finished_at = CASE WHEN %(finished)s THEN %(now)s ELSE NULL END,
    paused_at   = CASE WHEN %(status)s = 'paused' THEN paused_at ELSE NULL END,
    duration_ms = coalesce((SELECT sum(duration_ms) FROM run_records
                            WHERE run_id = %(run_id)s AND kind = 'result'), 0)
WHERE run_id = %(run_id)s
  AND status = ANY(%(expected)s::text[])
RETURNING status;

-- name: add_run_usage
UPDATE runs
SET input_tokens  = input_tokens + %(input_tokens)s,
    output_tokens = output_tokens + %(output_tokens)s,
    cost_usd      = cost_usd + %(cost_usd)s,
    duration_ms   = duration_ms + %(duration_ms)s,
    provider      = CASE WHEN %(provider)s::text IS NULL THEN provider
                         WHEN provider IS NULL OR provider = %(provider)s THEN %(provider)s
                         ELSE %(mixed)s END,
    model         = CASE WHEN %(model)s::text IS NULL THEN model
                         WHEN model IS NULL OR model = %(model)s THEN %(model)s
                         ELSE %(mixed)s END
WHERE run_id = %(run_id)s;

-- name: increment_recovery_attempts
UPDATE runs SET recovery_attempts = recovery_attempts + 1
WHERE run_id = %(run_id)s
RETURNING recovery_attempts;

-- name: record_resume
UPDATE runs
SET status        = 'pending',
    finished_at   = NULL,
    resumed_count = resumed_count + 1,
    pipeline_hash = coalesce(%(pipeline_hash)s, pipeline_hash)
WHERE run_id = %(run_id)s
  AND status = ANY(%(expected)s::text[])
RETURNING resumed_count;

-- name: list_runs
-- Newest first; every NULL filter matches all; a page continues after the cursor.
SELECT run_id, pipeline_id, pipeline_hash, inputs::text AS inputs, status, created_at, started_at,
       finished_at, output::text AS output, error::text AS error, parent_run_id, parent_path,
       schedule_id, fire_time, recovery_attempts, resumed_count, input_tokens, output_tokens,
       cost_usd, duration_ms, provider, model, forked_from, from_stage,
       breakpoints::text AS breakpoints, stepping, paused_at::text AS paused_at
FROM runs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(pipeline_id)s::text IS NULL OR pipeline_id = %(pipeline_id)s)
  AND (%(since)s::float8 IS NULL OR created_at >= %(since)s)
  AND (%(until)s::float8 IS NULL OR created_at < %(until)s)
  AND (%(schedule_id)s::text IS NULL OR schedule_id = %(schedule_id)s)
  AND (%(parent_run_id)s::text IS NULL OR parent_run_id = %(parent_run_id)s)
  AND (%(cursor_at)s::float8 IS NULL OR created_at < %(cursor_at)s
       OR (created_at = %(cursor_at)s AND run_id < %(cursor_id)s))
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_runs
SELECT count(*) FROM runs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(pipeline_id)s::text IS NULL OR pipeline_id = %(pipeline_id)s)
  AND (%(since)s::float8 IS NULL OR created_at >= %(since)s)
  AND (%(until)s::float8 IS NULL OR created_at < %(until)s)
  AND (%(schedule_id)s::text IS NULL OR schedule_id = %(schedule_id)s)
  AND (%(parent_run_id)s::text IS NULL OR parent_run_id = %(parent_run_id)s);

-- name: child_runs
SELECT run_id, pipeline_id, pipeline_hash, inputs::text AS inputs, status, created_at, started_at,
       finished_at, output::text AS output, error::text AS error, parent_run_id, parent_path,
       schedule_id, fire_time, recovery_attempts, resumed_count, input_tokens, output_tokens,
       cost_usd, duration_ms, provider, model, forked_from, from_stage,
       breakpoints::text AS breakpoints, stepping, paused_at::text AS paused_at
FROM runs WHERE parent_run_id = %(run_id)s ORDER BY created_at, run_id;

-- name: count_runs_by_status
SELECT status, count(*) AS n FROM runs GROUP BY status;

-- name: active_runs_of_schedule
-- A schedule's runs still going, oldest first: what its overlap policy counts (runs_by_status).
SELECT run_id, status FROM runs
WHERE status IN ('pending', 'running', 'paused')
  AND pipeline_id = %(pipeline_id)s AND schedule_id = %(schedule_id)s
ORDER BY created_at, run_id;

-- name: run_statuses
SELECT run_id, status FROM runs WHERE run_id = ANY(%(run_ids)s::text[]);

-- name: ping
SELECT 1;
