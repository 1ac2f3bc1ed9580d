-- The event feed behind `flowmason events --follow`.
--
-- Since version 7 the feed has three sources (migration 0007): the events the daemon logs itself
-- (run_event_log), and the stage events that are the run_records and run_attempts rows
-- themselves. Every id comes from one sequence, next_event_id(), a function of the writer
-- connection (flowmasond.journal.event_ids), so ids are unique across the three and grow in commit
-- order. Records and attempts written before version 7 have negative ids (their events are copies
-- in run_event_log), hence `> max(:after_id, 0)`. The reads below list the three sources with one
-- ORDER BY, which SQLite answers by merging three index scans (the view run_events would sort every
-- row past the cursor first). How a record or an attempt reads as an event is the views
-- record_events and attempt_events (0009_stage_event_views), which SQLite flattens into these.

-- name: insert_event
INSERT INTO run_event_log (id, run_id, ts, kind, path, data)
VALUES (next_event_id(), :run_id, :now, :kind, :path, :data);

-- name: events_after
SELECT id, run_id, ts, kind, path, data FROM run_event_log
WHERE id > :after_id
UNION ALL
SELECT id, run_id, ts, kind, path, data FROM record_events
WHERE id > max(:after_id, 0)
UNION ALL
SELECT id, run_id, ts, kind, path, data FROM attempt_events
WHERE id > max(:after_id, 0)
ORDER BY 1
LIMIT :limit;

-- name: run_events_after
-- One run's rows are found by its run_id index entries, each of which holds the row's event id,
-- so rows at or before the cursor are skipped without reading them.
SELECT id, run_id, ts, kind, path, data FROM run_event_log
WHERE run_id = :run_id AND id > :after_id
UNION ALL
SELECT id, run_id, ts, kind, path, data FROM record_events
WHERE run_id = :run_id AND id > max(:after_id, 0)
UNION ALL
SELECT id, run_id, ts, kind, path, data FROM attempt_events
WHERE run_id = :run_id AND id > max(:after_id, 0)
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
