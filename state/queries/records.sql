-- What a run commits: records (results and decisions) and attempt starts.

-- The three hot-path inserts below take positional parameters (binding 21 named ones costs more
-- than the rest of the statement); flowmasond.journal.records builds the tuples in this order.

-- name: insert_result
-- ?1 run_id, ?2 path, ?3 committed_at, then the result: ?4 stage_id, ?5 component_type,
-- ?6 status, ?7 output, ?8 error, ?9 error_type, ?10 attempts, ?11 started_at, ?12 finished_at,
-- ?13 handled, ?14 input_tokens, ?15 output_tokens, ?16 cost_usd, ?17 duration_ms, ?18 provider,
-- ?19 model, ?20 trace_id, ?21 span_id. seq is the run's next number (1, 2, 3... without gaps),
-- taken inside the INSERT by a scalar subquery (an INSERT ... SELECT from the table it inserts
-- into would first copy the SELECT's row to a temporary table: ~5 µs more per record); event_id
-- makes the row its own stage event (migration 0007, state/queries/events.sql).
INSERT INTO run_records (run_id, seq, kind, path, committed_at, stage_id, component_type, status,
                         output, error, error_type, attempts, started_at, finished_at, handled,
                         input_tokens, output_tokens, cost_usd, duration_ms, provider, model,
                         trace_id, span_id, event_id)
VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM run_records WHERE run_id = ?1), 'result', ?2,
        ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
        next_event_id());

-- name: insert_decision
-- ?1 run_id, ?2 path, ?3 committed_at, ?4 decision (JSON).
INSERT INTO run_records (run_id, seq, kind, path, committed_at, decision, event_id)
VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM run_records WHERE run_id = ?1), 'decision', ?2,
        ?3, ?4, next_event_id());

-- name: insert_attempt
-- ?1 run_id, ?2 path, ?3 attempt, ?4 started_at. Starting the same attempt twice (a retried
-- non-durable write) is a no-op, so it logs no second stage.started / stage.retry event (the
-- event id it took is never used: ids may have gaps).
INSERT INTO run_attempts (run_id, path, attempt, started_at, event_id)
VALUES (?1, ?2, ?3, ?4, next_event_id())
ON CONFLICT (run_id, path, attempt) DO NOTHING;

-- name: snapshot
-- Everything a resume reads, in one statement and so from one committed state: a 'run' row when
-- the run exists, carrying (in the decision column) a JSON object of the highest attempt started
-- per path, then the run's records ('result', 'decision'; the latest per kind and path wins, in
-- seq order). Column order is what flowmasond.journal.records.decode_snapshot unpacks. The LLM
-- usage columns come back as one JSON array, or NULL when they hold their defaults (most
-- stages): fewer values to convert per row when a resume loads thousands of records.
SELECT 'run', 0, NULL,
       (SELECT json_group_object(path, attempt)
        FROM (SELECT path, max(attempt) AS attempt FROM run_attempts WHERE run_id = ?1
              GROUP BY path)),
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM runs WHERE run_id = ?1
UNION ALL
SELECT kind, seq, path, decision, stage_id, component_type, status, output, error, error_type,
       CASE WHEN input_tokens = 0 AND output_tokens = 0 AND cost_usd = 0
                 AND provider IS NULL AND model IS NULL THEN NULL
            ELSE json_array(input_tokens, output_tokens, cost_usd, provider, model) END,
       duration_ms, attempts, started_at, finished_at, handled, trace_id, span_id
FROM run_records WHERE run_id = ?1;
