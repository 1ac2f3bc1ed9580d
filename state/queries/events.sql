-- The event feed behind `flowmason events --follow`.

-- name: insert_event
INSERT INTO run_events (run_id, ts, kind, path, data)
VALUES (:run_id, :now, :kind, :path, :data);

-- name: events_after
SELECT id, run_id, ts, kind, path, data FROM run_events
WHERE id > :after_id
ORDER BY id
LIMIT :limit;

-- name: run_events_after
SELECT id, run_id, ts, kind, path, data FROM run_events
WHERE run_id = :run_id AND id > :after_id
ORDER BY id
LIMIT :limit;

-- name: last_event_id
SELECT coalesce(max(id), 0) FROM run_events;
