-- The event feed behind `flowmason events --follow`.
--
-- Since version 7 the feed has three sources (migration 0007): the events the daemon logs itself
-- (run_event_log), and the stage events that are the run_records and run_attempts rows
-- themselves. Every id comes from one sequence, next_event_id(), a function of the writer
-- connection (flowmasond.journal.event_ids), so ids are unique across the three and grow in commit
-- order. Records and attempts written before version 7 have negative ids (their events are copies
-- in run_event_log), hence `> max(:after_id, 0)`. The reads below list the three sources with one
-- ORDER BY, which SQLite answers by merging three index scans (the view run_events would sort every
-- row past the cursor first); their columns and data are the view's (0007_derived_stage_events).

-- name: insert_event
INSERT INTO run_event_log (id, run_id, ts, kind, path, data)
VALUES (next_event_id(), :run_id, :now, :kind, :path, :data);

-- name: events_after
SELECT id, run_id, ts, kind, path, data FROM run_event_log
WHERE id > :after_id
UNION ALL
SELECT event_id, run_id, committed_at,
       CASE
           WHEN kind = 'decision' THEN 'stage.decision'
           WHEN status = 'success' THEN 'stage.completed'
           WHEN status = 'failed' THEN 'stage.failed'
           ELSE 'stage.skipped'
       END,
       path,
       CASE
           WHEN kind = 'decision' THEN decision
           ELSE json_object(
               'stage_id', stage_id,
               'component_type', component_type,
               'status', status,
               'attempts', attempts,
               'error', error,
               'error_type', error_type,
               'handled', json(CASE handled WHEN 1 THEN 'true' ELSE 'false' END),
               'duration_ms', max(0.0, (finished_at - started_at) * 1000.0))
       END
FROM run_records
WHERE event_id > max(:after_id, 0)
UNION ALL
SELECT event_id, run_id, started_at,
       CASE WHEN attempt <= 1 THEN 'stage.started' ELSE 'stage.retry' END,
       path, json_object('attempt', attempt)
FROM run_attempts
WHERE event_id > max(:after_id, 0)
ORDER BY 1
LIMIT :limit;

-- name: run_events_after
-- One run's rows are found by its run_id index entries, each of which holds the row's event id,
-- so rows at or before the cursor are skipped without reading them.
SELECT id, run_id, ts, kind, path, data FROM run_event_log
WHERE run_id = :run_id AND id > :after_id
UNION ALL
SELECT event_id, run_id, committed_at,
       CASE
           WHEN kind = 'decision' THEN 'stage.decision'
           WHEN status = 'success' THEN 'stage.completed'
           WHEN status = 'failed' THEN 'stage.failed'
           ELSE 'stage.skipped'
       END,
       path,
       CASE
           WHEN kind = 'decision' THEN decision
           ELSE json_object(
               'stage_id', stage_id,
               'component_type', component_type,
               'status', status,
               'attempts', attempts,
               'error', error,
               'error_type', error_type,
               'handled', json(CASE handled WHEN 1 THEN 'true' ELSE 'false' END),
               'duration_ms', max(0.0, (finished_at - started_at) * 1000.0))
       END
FROM run_records
WHERE run_id = :run_id AND event_id > max(:after_id, 0)
UNION ALL
SELECT event_id, run_id, started_at,
       CASE WHEN attempt <= 1 THEN 'stage.started' ELSE 'stage.retry' END,
       path, json_object('attempt', attempt)
FROM run_attempts
WHERE run_id = :run_id AND event_id > max(:after_id, 0)
ORDER BY 1
LIMIT :limit;

-- name: last_event_id
SELECT max(coalesce((SELECT max(id) FROM run_event_log), 0),
           coalesce((SELECT max(event_id) FROM run_records), 0),
           coalesce((SELECT max(event_id) FROM run_attempts), 0));

-- name: event_id_high_water
-- The highest event id ever handed out, deleted rows included (runs_keep_event_ids keeps it in
-- sqlite_sequence): next_event_id() starts above it.
SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'run_event_log'), 0),
           coalesce((SELECT max(id) FROM run_event_log), 0),
           coalesce((SELECT max(event_id) FROM run_records), 0),
           coalesce((SELECT max(event_id) FROM run_attempts), 0));
