-- 0002_cluster: nodes, run leases with fencing epochs, cancel requests, for several flowmasond nodes on
-- one database (flowmasond.cluster). Every time here is the database's clock (now()), never a node's.

CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    socket       TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ  -- set by a graceful stop; NULL while the node runs (or died)
);

-- Fencing tokens: every lease taken (a claim, a takeover) draws a new, larger epoch.
CREATE SEQUENCE run_lease_epochs;

-- One row per run some node owns. A run without a row (or with an expired one) needs an owner.
-- No foreign key to runs: a node takes the lease of a new run before creating it, so that the
-- creation itself is fenced (and a finished run's lease is gone before the run can be deleted).
CREATE TABLE run_leases (
    run_id     TEXT PRIMARY KEY,
    node_id    TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    taken_at   TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX run_leases_by_node ON run_leases (node_id);

-- A cancel, terminate, continue or step asked on a node that does not execute the run: the owner
-- takes it on its heartbeat (woken by NOTIFY flowmasond_run_requests).
CREATE TABLE run_requests (
    request_id   BIGSERIAL PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('cancel', 'terminate', 'continue', 'step')),
    requested_at TIMESTAMPTZ NOT NULL,
    requested_by TEXT NOT NULL
);
CREATE INDEX run_requests_by_run ON run_requests (run_id);
