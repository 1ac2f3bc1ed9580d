-- 0002_schedules: what the scheduler must remember across restarts.
--
-- schedule_fires makes "never fire twice" a unique key; schedule_state persists pause/resume.
-- Neither references runs: a fire outlives the run it started when that run is pruned.

CREATE TABLE schedule_fires (
    pipeline_id TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    fire_time   REAL NOT NULL,
    run_id      TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (pipeline_id, schedule_id, fire_time)
) WITHOUT ROWID;

CREATE TABLE schedule_state (
    pipeline_id TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    updated_at  REAL NOT NULL,
    PRIMARY KEY (pipeline_id, schedule_id)
) WITHOUT ROWID;
