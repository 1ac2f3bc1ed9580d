-- 0001_initial: pinned pipeline definitions, runs, and everything a run commits.
--
-- Applied by flowmasond.journal.migrations in one transaction together with every other pending
-- migration; the runner records it in schema_migrations and sets PRAGMA user_version.
-- auto_vacuum=INCREMENTAL is set by the journal when it creates the file: SQLite only honours it
-- before the first table exists and never inside a transaction, so it cannot live here.

CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

CREATE TABLE pipelines_pinned (
    hash          TEXT PRIMARY KEY,
    pipeline_id   TEXT NOT NULL,
    definition    TEXT NOT NULL,
    first_seen_at REAL NOT NULL
);

CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY,
    pipeline_id       TEXT NOT NULL,
    pipeline_hash     TEXT NOT NULL REFERENCES pipelines_pinned (hash),
    inputs            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                      'cancelled', 'interrupted')),
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
    model             TEXT
);

-- list_runs walks this newest first and stops at its limit.
CREATE INDEX runs_by_created ON runs (created_at, run_id);
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
-- Foreign-key checks and unpinning look runs up by definition hash.
CREATE INDEX runs_by_hash ON runs (pipeline_hash);
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;

-- An append-only log per run. A result is stored field by field (the snapshot loads without
-- parsing a JSON document per record, and results can be queried); a decision is a JSON object.
CREATE TABLE run_records (
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
    PRIMARY KEY (run_id, seq),
    CHECK ((kind = 'decision' AND decision IS NOT NULL AND status IS NULL)
        OR (kind = 'result' AND decision IS NULL
            AND status IN ('success', 'failed', 'skipped') AND handled IN (0, 1)))
);

CREATE TABLE run_attempts (
    run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    attempt    INTEGER NOT NULL CHECK (attempt >= 1),
    started_at REAL NOT NULL,
    PRIMARY KEY (run_id, path, attempt)
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, even after pruning, so a follower's cursor stays valid.
CREATE TABLE run_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    ts     REAL NOT NULL,
    kind   TEXT NOT NULL,
    path   TEXT,
    data   TEXT
);

CREATE INDEX run_events_by_run ON run_events (run_id, id);
