-- 0001_initial: the PostgreSQL journal, equivalent to SQLite journal versions 1 to 6.
--
-- Same tables, columns, record and event kinds as the SQLite journal (state/README.md); applied by
-- flowmasond.journal.postgres.migrations in one transaction under an advisory lock, so nodes
-- starting together migrate once. Documents the engine reads back (run inputs and outputs, stage
-- outputs, decisions) are `json`, which keeps their text exactly as written (key order included):
-- a resumed run must render templates exactly like an uninterrupted one. Documents only shown or
-- queried (errors, breakpoints, the waiting stages, event data) are `jsonb`.

CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE pipelines_pinned (
    hash          TEXT PRIMARY KEY,
    pipeline_id   TEXT NOT NULL,
    -- The canonical JSON the hash is computed from, byte for byte.
    definition    TEXT NOT NULL,
    first_seen_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY,
    pipeline_id       TEXT NOT NULL,
    pipeline_hash     TEXT NOT NULL REFERENCES pipelines_pinned (hash),
    inputs            JSON NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'running', 'paused', 'succeeded',
                                                      'failed', 'cancelled', 'interrupted')),
    created_at        DOUBLE PRECISION NOT NULL,
    started_at        DOUBLE PRECISION,
    finished_at       DOUBLE PRECISION,
    output            JSON,
    error             JSONB,
    parent_run_id     TEXT,
    parent_path       TEXT,
    schedule_id       TEXT,
    fire_time         DOUBLE PRECISION,
    recovery_attempts INTEGER NOT NULL DEFAULT 0,
    resumed_count     INTEGER NOT NULL DEFAULT 0,
    input_tokens      BIGINT NOT NULL DEFAULT 0,
    output_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_usd          DOUBLE PRECISION NOT NULL DEFAULT 0,
    duration_ms       DOUBLE PRECISION NOT NULL DEFAULT 0,
    provider          TEXT,
    model             TEXT,
    forked_from       TEXT,
    from_stage        TEXT,
    breakpoints       JSONB NOT NULL DEFAULT '[]',
    stepping          BOOLEAN NOT NULL DEFAULT FALSE,
    paused_at         JSONB
);

CREATE INDEX runs_by_created ON runs (created_at, run_id);
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_by_hash ON runs (pipeline_hash);
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_by_fork ON runs (forked_from) WHERE forked_from IS NOT NULL;
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE run_records (
    run_id         TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    kind           TEXT NOT NULL CHECK (kind IN ('result', 'decision')),
    path           TEXT NOT NULL,
    committed_at   DOUBLE PRECISION NOT NULL,
    decision       JSON,
    stage_id       TEXT,
    component_type TEXT,
    status         TEXT,
    output         JSON,
    error          TEXT,
    error_type     TEXT,
    attempts       INTEGER,
    started_at     DOUBLE PRECISION,
    finished_at    DOUBLE PRECISION,
    handled        BOOLEAN,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    cost_usd       DOUBLE PRECISION,
    duration_ms    DOUBLE PRECISION,
    provider       TEXT,
    model          TEXT,
    trace_id       TEXT,
    span_id        TEXT,
    PRIMARY KEY (run_id, seq),
    CHECK ((kind = 'decision' AND decision IS NOT NULL AND status IS NULL)
        OR (kind = 'result' AND decision IS NULL
            AND status IN ('success', 'failed', 'skipped') AND handled IS NOT NULL))
);

CREATE TABLE run_attempts (
    run_id     TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    attempt    INTEGER NOT NULL CHECK (attempt >= 1),
    started_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, path, attempt)
);

-- Identity ids are never reused, even after pruning, so a follower's cursor stays valid.
CREATE TABLE run_events (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    ts     DOUBLE PRECISION NOT NULL,
    kind   TEXT NOT NULL,
    path   TEXT,
    data   JSONB
);

CREATE INDEX run_events_by_run ON run_events (run_id, id);

CREATE TABLE run_logs (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    path   TEXT NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'log')),
    ts     DOUBLE PRECISION NOT NULL,
    text   TEXT NOT NULL
);

CREATE INDEX run_logs_by_run ON run_logs (run_id, id);

-- A fire is a unique key: "never fire twice" holds for every daemon sharing the database.
CREATE TABLE schedule_fires (
    pipeline_id TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    fire_time   DOUBLE PRECISION NOT NULL,
    run_id      TEXT,
    recorded_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (pipeline_id, schedule_id, fire_time)
);

CREATE TABLE schedule_state (
    pipeline_id   TEXT NOT NULL,
    schedule_id   TEXT NOT NULL,
    paused        BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at    DOUBLE PRECISION NOT NULL,
    first_seen_at DOUBLE PRECISION,
    PRIMARY KEY (pipeline_id, schedule_id)
);

-- Stage events are written by the database from the rows they describe, as in the SQLite journal
-- (its migration 0004): an event can never be missing or disagree with its record.
CREATE FUNCTION run_records_event() RETURNS trigger LANGUAGE plpgsql AS $$
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
                WHEN NEW.kind = 'decision' THEN NEW.decision::jsonb
                ELSE jsonb_build_object(
                    'stage_id', NEW.stage_id,
                    'component_type', NEW.component_type,
                    'status', NEW.status,
                    'attempts', NEW.attempts,
                    'error', NEW.error,
                    'error_type', NEW.error_type,
                    'handled', NEW.handled,
                    'duration_ms', greatest(0.0, (NEW.finished_at - NEW.started_at) * 1000.0))
            END);
    RETURN NULL;
END;
$$;

CREATE TRIGGER run_records_event AFTER INSERT ON run_records
FOR EACH ROW EXECUTE FUNCTION run_records_event();

CREATE FUNCTION run_attempts_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_events (run_id, ts, kind, path, data)
    VALUES (NEW.run_id, NEW.started_at,
            CASE WHEN NEW.attempt <= 1 THEN 'stage.started' ELSE 'stage.retry' END,
            NEW.path,
            jsonb_build_object('attempt', NEW.attempt));
    RETURN NULL;
END;
$$;

CREATE TRIGGER run_attempts_event AFTER INSERT ON run_attempts
FOR EACH ROW EXECUTE FUNCTION run_attempts_event();
