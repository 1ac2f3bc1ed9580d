-- 0004_record_event_triggers: stage events are written by SQLite from the rows they describe.
--
-- Until version 3 the daemon inserted a stage's run_events row next to its run_records or
-- run_attempts row, one statement more per record on the hot path. From version 4 these triggers
-- do it inside the same INSERT, so an event can never be missing or disagree with its record, and
-- an attempt start that was already recorded (ON CONFLICT DO NOTHING) no longer logs a duplicate
-- event. The event data is unchanged (see state/README.md, "Event kinds").

CREATE TRIGGER run_records_event AFTER INSERT ON run_records
BEGIN
    INSERT INTO run_events (run_id, ts, kind, path, data)
    VALUES (NEW.run_id, NEW.committed_at,
            CASE
                WHEN NEW.kind = 'decision' THEN 'stage.decision'
                WHEN NEW.status = 'success' THEN 'stage.completed'
                WHEN NEW.status = 'failed' THEN 'stage.failed'
                ELSE 'stage.skipped'
            END,
            NEW.path,
            CASE
                WHEN NEW.kind = 'decision' THEN NEW.decision
                ELSE json_object(
                    'stage_id', NEW.stage_id,
                    'component_type', NEW.component_type,
                    'status', NEW.status,
                    'attempts', NEW.attempts,
                    'error', NEW.error,
                    'error_type', NEW.error_type,
                    'handled', json(CASE NEW.handled WHEN 1 THEN 'true' ELSE 'false' END),
                    'duration_ms', max(0.0, (NEW.finished_at - NEW.started_at) * 1000.0))
            END);
END;

CREATE TRIGGER run_attempts_event AFTER INSERT ON run_attempts
BEGIN
    INSERT INTO run_events (run_id, ts, kind, path, data)
    VALUES (NEW.run_id, NEW.started_at,
            CASE WHEN NEW.attempt <= 1 THEN 'stage.started' ELSE 'stage.retry' END,
            NEW.path,
            json_object('attempt', NEW.attempt));
END;
