-- The event feed and stage logs (PostgreSQL).

-- name: insert_event
INSERT INTO run_events (run_id, ts, kind, path, data)
VALUES (%(run_id)s, %(now)s, %(kind)s, %(path)s, %(data)s::jsonb);

-- name: events_after
SELECT id, run_id, ts, kind, path, data::text FROM run_events
WHERE id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- name: run_events_after
SELECT id, run_id, ts, kind, path, data::text FROM run_events
WHERE run_id = %(run_id)s AND id > %(after_id)s
ORDER BY id
LIMIT %(limit)s;

-- name: last_event_id
SELECT coalesce(max(id), 0) FROM run_events;

-- name: insert_log
-- A chunk of a run deleted meanwhile is dropped (nothing to keep it for).
INSERT INTO run_logs (run_id, path, stream, ts, text)
SELECT %(run_id)s, %(path)s, %(stream)s, %(ts)s, %(text)s
WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = %(run_id)s);

-- name: run_logs_after
-- %(path)s NULL: every stage; otherwise the stage path and everything nested under it.
SELECT id, run_id, path, stream, ts, text FROM run_logs
WHERE run_id = %(run_id)s AND id > %(after_id)s
  AND (%(path)s::text IS NULL OR path = %(path)s OR starts_with(path, %(path)s || '/')
       OR right(path, length(%(path)s) + 1) = '/' || %(path)s)
ORDER BY id
LIMIT %(limit)s;

-- name: run_log_stages
SELECT path, count(*) AS chunks, sum(length(text)) AS chars FROM run_logs
WHERE run_id = %(run_id)s GROUP BY path ORDER BY min(id);
