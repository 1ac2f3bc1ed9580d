-- 0009_stage_event_views: how a record or an attempt row reads as an event, written once.
--
-- Version 7 spelled the stage-event shape (its kind and its JSON data) three times: in the view
-- run_events and in the two feed queries of state/queries/events.sql. Here it is the two views
-- record_events and attempt_events; run_events and the feed queries select from them. They are
-- plain projections, which SQLite flattens into the query that reads them, so a cursor still
-- reaches rows by event_id (the rowid) or by the run_id index, and the feed still merges three
-- index scans instead of sorting.

CREATE VIEW record_events (id, run_id, ts, kind, path, data) AS
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
FROM run_records;

CREATE VIEW attempt_events (id, run_id, ts, kind, path, data) AS
SELECT event_id, run_id, started_at,
       CASE WHEN attempt <= 1 THEN 'stage.started' ELSE 'stage.retry' END,
       path, json_object('attempt', attempt)
FROM run_attempts;

DROP VIEW run_events;

-- Records and attempts written before version 7 have negative ids: their events are the copies
-- in run_event_log.
CREATE VIEW run_events (id, run_id, ts, kind, path, data) AS
SELECT id, run_id, ts, kind, path, data FROM run_event_log
UNION ALL
SELECT id, run_id, ts, kind, path, data FROM record_events WHERE id > 0
UNION ALL
SELECT id, run_id, ts, kind, path, data FROM attempt_events WHERE id > 0;
