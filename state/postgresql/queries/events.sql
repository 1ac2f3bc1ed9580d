-- The event feed and stage logs (PostgreSQL).

-- name: insert_event
INSERT INTO run_events (run_id, ts, kind, path, data)
VALUES (%(run_id)s, %(now)s, %(kind)s, %(path)s, %(data)s::jsonb);

-- Followers walk events in (xid, id) order and read only transactions older than the oldest one
-- still in progress (migration 0004): every event below that horizon is final, and every event
-- committed later has a larger xid, so a cursor (xid, id) never skips one. The public cursor stays
-- an event id: after_id is resolved to its (xid, id) here (an unknown id, such as 0, means
-- "events with a larger id", the pre-0004 rule). settled = false drops the horizon, for a last
-- read of a finished run (nothing reads after it, so nothing can be skipped).

-- name: events_after
-- Two branches, one of them empty (a known cursor event, or not), each an index range scan.
WITH position AS MATERIALIZED (SELECT (SELECT xid FROM run_events WHERE id = %(after_id)s) AS xid)
SELECT * FROM (
    (SELECT e.xid, e.id, e.run_id, e.ts, e.kind, e.path, e.data::text AS data FROM run_events e
     WHERE (e.xid, e.id) > ((SELECT xid FROM position), %(after_id)s::bigint)
       AND (NOT %(settled)s OR e.xid < pg_snapshot_xmin(pg_current_snapshot()))
     ORDER BY e.xid, e.id LIMIT %(limit)s)
    UNION ALL
    (SELECT e.xid, e.id, e.run_id, e.ts, e.kind, e.path, e.data::text FROM run_events e
     WHERE (SELECT xid FROM position) IS NULL AND e.id > %(after_id)s
       AND (NOT %(settled)s OR e.xid < pg_snapshot_xmin(pg_current_snapshot()))
     ORDER BY e.xid, e.id LIMIT %(limit)s)
) page
ORDER BY xid, id;

-- name: run_events_after
WITH position AS MATERIALIZED (
    SELECT (SELECT xid FROM run_events WHERE id = %(after_id)s AND run_id = %(run_id)s) AS xid)
SELECT * FROM (
    (SELECT e.xid, e.id, e.run_id, e.ts, e.kind, e.path, e.data::text AS data FROM run_events e
     WHERE e.run_id = %(run_id)s AND (e.xid, e.id) > ((SELECT xid FROM position), %(after_id)s::bigint)
       AND (NOT %(settled)s OR e.xid < pg_snapshot_xmin(pg_current_snapshot()))
     ORDER BY e.xid, e.id LIMIT %(limit)s)
    UNION ALL
    (SELECT e.xid, e.id, e.run_id, e.ts, e.kind, e.path, e.data::text FROM run_events e
     WHERE (SELECT xid FROM position) IS NULL AND e.run_id = %(run_id)s AND e.id > %(after_id)s
       AND (NOT %(settled)s OR e.xid < pg_snapshot_xmin(pg_current_snapshot()))
     ORDER BY e.xid, e.id LIMIT %(limit)s)
) page
ORDER BY xid, id;

-- name: last_event_id
-- The last event a follower can have read (the newest below the horizon, in follower order).
SELECT coalesce((SELECT id FROM run_events WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY xid DESC, id DESC LIMIT 1), 0);

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
