-- 0005_operating: what operating runs needs: the paused state, breakpoints, forks, stage logs.
--
-- pragma: foreign_keys=off
-- SQLite cannot change a CHECK constraint in place, so runs is rebuilt the documented way
-- (https://sqlite.org/lang_altertable.html#otheralter): new table, copy, drop, rename. The
-- migrations runner turns foreign keys off for this file (the header line above) so that dropping
-- the old table cascades nothing, and checks every foreign key before it commits.

CREATE TABLE runs_new (
    run_id            TEXT PRIMARY KEY,
    pipeline_id       TEXT NOT NULL,
    pipeline_hash     TEXT NOT NULL REFERENCES pipelines_pinned (hash),
    inputs            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'running', 'paused', 'succeeded',
                                                      'failed', 'cancelled', 'interrupted')),
    created_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    output            TEXT,
    error             TEXT,
    parent_run_id     TEXT,
    parent_path       TEXT,
    schedule_id       TEXT,
    fire_time         REAL,
    recovery_attempts INTEGER NOT NULL DEFAULT 0,
    resumed_count     INTEGER NOT NULL DEFAULT 0,
    input_tokens      INTEGER NOT NULL DEFAULT 0,
    output_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0,
    duration_ms       REAL NOT NULL DEFAULT 0,
    provider          TEXT,
    model             TEXT,
    -- A rerun: the run it was made from, and the stage it re-ran from (NULL: a whole rerun).
    forked_from       TEXT,
    from_stage        TEXT,
    -- JSON array of stage ids the run pauses before; stepping = 1 pauses before every stage.
    breakpoints       TEXT NOT NULL DEFAULT '[]',
    stepping          INTEGER NOT NULL DEFAULT 0 CHECK (stepping IN (0, 1)),
    -- While paused: JSON object {path: {"stage_id", "inputs"}} of the stages waiting to start.
    paused_at         TEXT
);

INSERT INTO runs_new (run_id, pipeline_id, pipeline_hash, inputs, status, created_at, started_at,
                      finished_at, output, error, parent_run_id, parent_path, schedule_id, fire_time,
                      recovery_attempts, resumed_count, input_tokens, output_tokens, cost_usd,
                      duration_ms, provider, model)
SELECT run_id, pipeline_id, pipeline_hash, inputs, status, created_at, started_at,
       finished_at, output, error, parent_run_id, parent_path, schedule_id, fire_time,
       recovery_attempts, resumed_count, input_tokens, output_tokens, cost_usd,
       duration_ms, provider, model
FROM runs;

DROP TABLE runs;

ALTER TABLE runs_new RENAME TO runs;

CREATE INDEX runs_by_created ON runs (created_at, run_id);
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_by_hash ON runs (pipeline_hash);
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_by_fork ON runs (forked_from) WHERE forked_from IS NOT NULL;

-- Stage logs: shell stages' stdout/stderr and logger stages' messages, in chunks as they arrive.
-- Bounded per stage by the daemon (stage_log_max_bytes); they go with their run (cascade).
CREATE TABLE run_logs (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    path   TEXT NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'log')),
    ts     REAL NOT NULL,
    text   TEXT NOT NULL
);

CREATE INDEX run_logs_by_run ON run_logs (run_id, id);
