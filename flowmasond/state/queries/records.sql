-- What a run commits: records (results and decisions) and attempt starts.

-- name: last_record_seq
SELECT coalesce(max(seq), 0) FROM run_records WHERE run_id = :run_id;

-- name: insert_result
INSERT INTO run_records (run_id, seq, kind, path, committed_at, stage_id, component_type, status,
                         output, error, error_type, attempts, started_at, finished_at, handled,
                         input_tokens, output_tokens, cost_usd, duration_ms, provider, model)
VALUES (:run_id, :seq, 'result', :path, :now, :stage_id, :component_type, :status,
        :output, :error, :error_type, :attempts, :started_at, :finished_at, :handled,
        :input_tokens, :output_tokens, :cost_usd, :duration_ms, :provider, :model);

-- name: insert_decision
INSERT INTO run_records (run_id, seq, kind, path, committed_at, decision)
VALUES (:run_id, :seq, 'decision', :path, :now, :decision);

-- name: insert_attempt
-- Starting the same attempt twice (a retried non-durable write) is a no-op.
INSERT INTO run_attempts (run_id, path, attempt, started_at)
VALUES (:run_id, :path, :attempt, :now)
ON CONFLICT (run_id, path, attempt) DO NOTHING;

-- name: run_exists
SELECT 1 FROM runs WHERE run_id = :run_id;

-- name: snapshot_records
-- Applied in order: the latest record per (kind, path) wins. Column order is what
-- flowmasond.journal.snapshot unpacks.
SELECT kind, path, decision, stage_id, component_type, status, output, error, error_type,
       input_tokens, output_tokens, cost_usd, duration_ms, provider, model,
       attempts, started_at, finished_at, handled
FROM run_records WHERE run_id = :run_id ORDER BY seq;

-- name: snapshot_attempts
SELECT path, max(attempt) FROM run_attempts WHERE run_id = :run_id GROUP BY path;
