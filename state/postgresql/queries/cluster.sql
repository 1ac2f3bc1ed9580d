-- Nodes, run leases and fencing (flowmasond.cluster). Lease times use the database's clock:
-- now() for a lease's start and end, clock_timestamp() for the fence (the moment of the commit).

-- name: register_node
-- A node id still beating on another host is refused (no row returned): the same id copied into two
-- machines' configuration would expire each other's leases. On its own host a restart takes the id
-- at once (the state directory's lock already keeps two daemons of one directory apart).
INSERT INTO nodes (node_id, host, pid, socket, started_at, heartbeat_at, stopped_at)
VALUES (%(node_id)s, %(host)s, %(pid)s, %(socket)s, now(), now(), NULL)
ON CONFLICT (node_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,
    socket = EXCLUDED.socket, started_at = EXCLUDED.started_at,
    heartbeat_at = EXCLUDED.heartbeat_at, stopped_at = NULL
WHERE nodes.stopped_at IS NOT NULL
   OR nodes.host = EXCLUDED.host
   OR nodes.heartbeat_at < now() - make_interval(secs => %(lease_s)s)
RETURNING node_id;

-- name: node_holder
SELECT host, pid, extract(epoch FROM now() - heartbeat_at) AS heartbeat_age_s
FROM nodes WHERE node_id = %(node_id)s;

-- name: expire_node_leases
UPDATE run_leases SET expires_at = now() WHERE node_id = %(node_id)s;

-- name: touch_node
UPDATE nodes SET heartbeat_at = now() WHERE node_id = %(node_id)s;

-- name: node_stopped
UPDATE nodes SET stopped_at = now(), heartbeat_at = now() WHERE node_id = %(node_id)s;

-- name: renew_leases
UPDATE run_leases SET expires_at = now() + make_interval(secs => %(lease_s)s)
WHERE node_id = %(node_id)s AND run_id = ANY(%(run_ids)s) AND expires_at > now()
RETURNING run_id, epoch;

-- name: end_sessions_of_lapsed_nodes
-- A node stopped (SIGSTOP, a long pause) inside a journal transaction keeps its row locks, and
-- the claims below skip locked runs: once its heartbeat is older than a lease (so every lease it
-- held has expired and the fence refuses its commits anyway), its sessions inside a transaction
-- are ended. Its journal sessions are named "flowmasond pid=<pid> host=<host>" (PgJournal).
SELECT a.pid, n.node_id, pg_terminate_backend(a.pid) AS ended
FROM nodes n
JOIN pg_stat_activity a
  ON a.application_name = left('flowmasond pid=' || n.pid || ' host=' || n.host, 63)
WHERE n.node_id <> %(node_id)s
  AND n.stopped_at IS NULL
  AND n.heartbeat_at < now() - make_interval(secs => %(lease_s)s)
  AND a.xact_start IS NOT NULL
  AND a.pid <> pg_backend_pid();

-- name: claim_orphans
WITH wanted AS (
    SELECT r.run_id
    FROM runs r LEFT JOIN run_leases l ON l.run_id = r.run_id
    WHERE r.parent_run_id IS NULL
      AND r.status IN ('pending', 'running', 'interrupted')
      AND (%(auto)s OR r.status <> 'interrupted')
      AND ((l.run_id IS NULL AND r.created_at < extract(epoch FROM now()) - %(grace_s)s)
           OR l.expires_at <= now())
      AND NOT (r.status = 'interrupted' AND r.error IS NOT NULL
               AND (r.error::jsonb ->> 'code') IN ('unsafe_to_repeat', 'recovery_exhausted'))
    ORDER BY r.created_at
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
)
INSERT INTO run_leases (run_id, node_id, epoch, taken_at, expires_at)
SELECT run_id, %(node_id)s, nextval('run_lease_epochs'), now(),
       now() + make_interval(secs => %(lease_s)s)
FROM wanted
ON CONFLICT (run_id) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = EXCLUDED.epoch,
    taken_at = EXCLUDED.taken_at, expires_at = EXCLUDED.expires_at
WHERE run_leases.expires_at <= now()
RETURNING run_id, epoch;

-- name: take_lease
-- A node asks only for runs it is not executing, so its own live lease (a release not flushed
-- yet) is taken again like an expired one.
INSERT INTO run_leases (run_id, node_id, epoch, taken_at, expires_at)
VALUES (%(run_id)s, %(node_id)s, nextval('run_lease_epochs'), now(),
        now() + make_interval(secs => %(lease_s)s))
ON CONFLICT (run_id) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = EXCLUDED.epoch,
    taken_at = EXCLUDED.taken_at, expires_at = EXCLUDED.expires_at
WHERE run_leases.expires_at <= now() OR run_leases.node_id = EXCLUDED.node_id
RETURNING epoch;

-- name: release_leases
DELETE FROM run_leases l
USING unnest(%(run_ids)s::text[], %(epochs)s::bigint[]) AS gone (run_id, epoch)
WHERE l.run_id = gone.run_id AND l.epoch = gone.epoch AND l.node_id = %(node_id)s;

-- name: lease_of
SELECT l.node_id, l.epoch, l.expires_at > now() AS live, n.socket
FROM run_leases l LEFT JOIN nodes n ON n.node_id = l.node_id
WHERE l.run_id = %(run_id)s;

-- name: fence_root
SELECT epoch FROM run_leases
WHERE run_id = %(run_id)s AND node_id = %(node_id)s AND expires_at > clock_timestamp()
FOR SHARE;

-- name: fence_chain
WITH RECURSIVE chain (run_id, parent_run_id, depth) AS (
    SELECT run_id, parent_run_id, 0 FROM runs WHERE run_id = %(run_id)s
    UNION ALL
    SELECT r.run_id, r.parent_run_id, c.depth + 1
    FROM runs r JOIN chain c ON r.run_id = c.parent_run_id
    WHERE c.depth < 64
)
SELECT l.run_id, l.epoch FROM run_leases l JOIN chain c ON c.run_id = l.run_id
WHERE c.parent_run_id IS NULL AND l.node_id = %(node_id)s AND l.expires_at > clock_timestamp()
FOR SHARE OF l;

-- name: insert_run_request
INSERT INTO run_requests (run_id, kind, requested_at, requested_by)
VALUES (%(run_id)s, %(kind)s, now(), %(node_id)s);

-- name: take_run_requests
DELETE FROM run_requests
WHERE run_id = ANY(%(run_ids)s) OR requested_at < now() - make_interval(secs => %(stale_s)s)
RETURNING run_id, kind;

-- name: list_nodes
SELECT n.node_id, n.host, n.pid, n.socket, extract(epoch FROM n.started_at) AS started_at,
       extract(epoch FROM now() - n.heartbeat_at) AS heartbeat_age_s,
       n.stopped_at IS NOT NULL AS stopped
FROM nodes n ORDER BY n.node_id;

-- name: list_leases
SELECT l.run_id, l.node_id, l.epoch, extract(epoch FROM l.expires_at - now()) AS expires_in_s
FROM run_leases l ORDER BY l.node_id, l.run_id;

-- name: fence_run_exists
SELECT 1 FROM runs WHERE run_id = %(run_id)s;

-- name: orphan_fires
-- Fires whose recorder died between recording the fire and creating its run (the run id is in the
-- fire record, so whichever node creates it first wins and the others fail on the duplicate id).
SELECT f.pipeline_id, f.schedule_id, f.fire_time, f.run_id
FROM schedule_fires f LEFT JOIN runs r ON r.run_id = f.run_id
WHERE f.run_id IS NOT NULL AND r.run_id IS NULL
  AND f.recorded_at BETWEEN extract(epoch FROM now()) - %(window_s)s AND extract(epoch FROM now()) - %(grace_s)s
ORDER BY f.fire_time;

-- name: notify_run_request
SELECT pg_notify(%(channel)s, %(run_id)s);
