-- 0003_stage_tasks: leaf stages handed to any node's workers (flowmasond.cluster.stages).
-- The run's owner queues a task and commits its result; a worker claims it (FOR UPDATE SKIP
-- LOCKED), runs it and writes the result here, conditional on its claim (worker_node, claims).

CREATE TABLE stage_tasks (
    task_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    -- The node that queued (or adopted) the task and the lease epoch it held: only that owner
    -- takes the result, so a result of a run that moved on is never committed by a stale owner.
    owner_node    TEXT NOT NULL,
    owner_epoch   BIGINT NOT NULL,
    -- stage (with its effective retry policy), resolved config, loop variables, attempt_base,
    -- safe_to_repeat, force
    payload       JSONB NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'done')),
    attempt       INTEGER NOT NULL DEFAULT 0,  -- the highest attempt a worker started
    claims        INTEGER NOT NULL DEFAULT 0,  -- claims made so far: the current claim's token
    worker_node   TEXT,
    claimed_at    TIMESTAMPTZ,
    claim_expires TIMESTAMPTZ,
    queued_at     TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    result        JSONB,
    UNIQUE (run_id, path)
);
CREATE INDEX stage_tasks_open ON stage_tasks (task_id) WHERE state <> 'done';
