-- 0007_derived_stage_events: a stage's events are its record and attempt rows, not copies of them.
--
-- pragma: foreign_keys=off
-- Until version 6 the triggers of 0004 copied every run_records and run_attempts row into
-- run_events, with a JSON document built by SQLite: per stage commit two rows, three B-tree pages
-- (table, index, sqlite_sequence) and two JSON documents more, about a third of the journal's SQL
-- time per stage. From version 7 a record or an attempt row *is* its event: it carries an
-- event_id (its rowid) taken from the same sequence as the events the daemon logs itself
-- (run_event_log, formerly run_events), and run_events is a view of all three, with the columns,
-- kinds and data the triggers wrote. Readers of run_events see no difference.
--
-- Rows written before version 7 keep the events the triggers (or, before version 4, the daemon)
-- copied into run_event_log; they get negative event ids, which no cursor reaches (cursors start
-- at 0), so no event is listed twice. The ids of new events continue after every id ever used:
-- the writer takes them from next_event_id() (flowmasond/journal/event_ids.py), which starts above
-- the highest of the three tables and of sqlite_sequence, and the trigger runs_keep_event_ids
-- keeps that high-water mark in sqlite_sequence when runs (and so their rows) are deleted.
-- SQLite cannot add a primary key in place, so both tables are rebuilt the documented way
-- (https://sqlite.org/lang_altertable.html#otheralter); the runner turns foreign keys off for this
-- file (the pragma line above) and checks every foreign key before it commits.

DROP TRIGGER run_records_event;

DROP TRIGGER run_attempts_event;

ALTER TABLE run_events RENAME TO run_event_log;

CREATE TABLE run_records_new (
    run_id         TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    kind           TEXT NOT NULL CHECK (kind IN ('result', 'decision')),
    path           TEXT NOT NULL,
    committed_at   REAL NOT NULL,
    decision       TEXT,
    stage_id       TEXT,
    component_type TEXT,
    status         TEXT,
    output         TEXT,
    error          TEXT,
    error_type     TEXT,
    attempts       INTEGER,
    started_at     REAL,
    finished_at    REAL,
    handled        INTEGER,
    input_tokens   INTEGER,
    output_tokens  INTEGER,
    cost_usd       REAL,
    duration_ms    REAL,
    provider       TEXT,
    model          TEXT,
    trace_id       TEXT,
    span_id        TEXT,
    -- The id of this record's event in the feed; negative for records older than version 7.
    event_id       INTEGER PRIMARY KEY,
    UNIQUE (run_id, seq),
    CHECK ((kind = 'decision' AND decision IS NOT NULL AND status IS NULL)
        OR (kind = 'result' AND decision IS NULL
            AND status IN ('success', 'failed', 'skipped') AND handled IN (0, 1)))
);

INSERT INTO run_records_new (run_id, seq, kind, path, committed_at, decision, stage_id,
                             component_type, status, output, error, error_type, attempts,
                             started_at, finished_at, handled, input_tokens, output_tokens,
                             cost_usd, duration_ms, provider, model, trace_id, span_id, event_id)
SELECT run_id, seq, kind, path, committed_at, decision, stage_id, component_type, status, output,
       error, error_type, attempts, started_at, finished_at, handled, input_tokens, output_tokens,
       cost_usd, duration_ms, provider, model, trace_id, span_id, -rowid
FROM run_records;

DROP TABLE run_records;

ALTER TABLE run_records_new RENAME TO run_records;

CREATE TABLE run_attempts_new (
    run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    attempt    INTEGER NOT NULL CHECK (attempt >= 1),
    started_at REAL NOT NULL,
    -- The id of this attempt start's event in the feed; negative for starts older than version 7.
    event_id   INTEGER PRIMARY KEY,
    UNIQUE (run_id, path, attempt)
);

INSERT INTO run_attempts_new (run_id, path, attempt, started_at, event_id)
SELECT run_id, path, attempt, started_at, -row_number() OVER (ORDER BY run_id, path, attempt)
FROM run_attempts;

DROP TABLE run_attempts;

ALTER TABLE run_attempts_new RENAME TO run_attempts;

-- Deleting a run deletes its records and attempts (cascade); if they held the highest event ids,
-- a later writer must still not hand those ids out again (a follower's cursor may be past them).
INSERT INTO sqlite_sequence (name, seq)
SELECT 'run_event_log', 0
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'run_event_log');

CREATE TRIGGER runs_keep_event_ids BEFORE DELETE ON runs
BEGIN
    UPDATE sqlite_sequence
    SET seq = max(seq, coalesce((SELECT max(event_id) FROM run_records), 0),
                  coalesce((SELECT max(event_id) FROM run_attempts), 0))
    WHERE name = 'run_event_log';
END;

-- The event feed, as run_events was until version 6. The daemon's own reads use the queries of
-- state/queries/events.sql, which list the same three sources with an ORDER BY that SQLite
-- answers by merging three index scans (a view's ORDER BY sorts every row past the cursor).
CREATE VIEW run_events (id, run_id, ts, kind, path, data) AS
SELECT id, run_id, ts, kind, path, data FROM run_event_log
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
FROM run_records WHERE event_id > 0
UNION ALL
SELECT event_id, run_id, started_at,
       CASE WHEN attempt <= 1 THEN 'stage.started' ELSE 'stage.retry' END,
       path, json_object('attempt', attempt)
FROM run_attempts WHERE event_id > 0;
