-- What a run commits: records (results and decisions) and attempt starts (PostgreSQL).

-- name: insert_record
-- One statement for both kinds, so a batch keeps its order in seq. seq is the run's next number
-- (1, 2, 3... without gaps); the trigger run_records_event writes the matching stage event.
INSERT INTO run_records (run_id, seq, kind, path, committed_at, decision, stage_id, component_type,
                         status, output, error, error_type, attempts, started_at, finished_at,
                         handled, input_tokens, output_tokens, cost_usd, duration_ms, provider,
                         model, trace_id, span_id)
SELECT %(run_id)s, coalesce(max(seq), 0) + 1, %(kind)s, %(path)s, %(now)s, %(decision)s::json,
       %(stage_id)s, %(component_type)s, %(status)s, %(output)s::json, %(error)s, %(error_type)s,
       %(attempts)s, %(started_at)s, %(finished_at)s, %(handled)s, %(input_tokens)s,
       %(output_tokens)s, %(cost_usd)s, %(duration_ms)s, %(provider)s, %(model)s, %(trace_id)s,
       %(span_id)s
FROM run_records WHERE run_id = %(run_id)s;

-- name: insert_attempt
-- Starting the same attempt twice (a retried write) is a no-op.
INSERT INTO run_attempts (run_id, path, attempt, started_at)
VALUES (%(run_id)s, %(path)s, %(attempt)s, %(now)s)
ON CONFLICT (run_id, path, attempt) DO NOTHING;

-- name: run_exists
SELECT 1 FROM runs WHERE run_id = %(run_id)s;

-- name: snapshot_records
-- Applied in order: the latest record per (kind, path) wins. Documents come back as text.
SELECT kind, path, decision::text, stage_id, component_type, status, output::text, error,
       error_type, input_tokens, output_tokens, cost_usd, provider, model,
       duration_ms, attempts, started_at, finished_at, handled, trace_id, span_id
FROM run_records WHERE run_id = %(run_id)s ORDER BY seq;

-- name: snapshot_attempts
SELECT path, max(attempt) FROM run_attempts WHERE run_id = %(run_id)s GROUP BY path;
