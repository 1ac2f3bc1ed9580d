-- Stages across workers (flowmasond.cluster.stages): the owner queues and takes results, workers
-- claim, start attempts and finish. Times use the database's clock.

-- name: task_of
-- committed: the task's result is the one the run committed at its path (the owner died before
-- forgetting the task); such a task is replaced, never adopted (a resume runs the stage again).
SELECT t.task_id, t.owner_epoch, t.state,
       EXISTS (SELECT 1 FROM run_records r
               WHERE r.run_id = t.run_id AND r.path = t.path AND r.kind = 'result' AND t.state = 'done'
                 AND r.finished_at = (t.result -> 'result' ->> 'finished_at')::double precision) AS committed
FROM stage_tasks t WHERE t.run_id = %(run_id)s AND t.path = %(path)s;

-- name: discard_task
DELETE FROM stage_tasks WHERE task_id = %(task_id)s;

-- name: submit_task
-- A new task, or the adoption of one a previous owner of the run queued (a new lease epoch):
-- its claim, its started attempts and its result (if any) are kept.
WITH up AS (
    INSERT INTO stage_tasks (run_id, path, owner_node, owner_epoch, payload, state, queued_at)
    VALUES (%(run_id)s, %(path)s, %(node_id)s, %(epoch)s, %(payload)s::jsonb, 'queued', now())
    ON CONFLICT (run_id, path) DO UPDATE SET owner_node = EXCLUDED.owner_node,
        owner_epoch = EXCLUDED.owner_epoch
    WHERE stage_tasks.owner_epoch <= EXCLUDED.owner_epoch
    RETURNING task_id, state, (xmax <> 0) AS adopted
)
SELECT up.task_id, up.state, up.adopted FROM up CROSS JOIN (SELECT pg_notify('flowmason_stage_queued', '')) n;

-- name: take_result
-- The task's state, and its result once done, if it is still this owner's (no row: another owner
-- adopted it). The row stays until the result is committed (forget_committed): an owner that dies
-- in between leaves it for the next owner to adopt.
SELECT state, CASE WHEN state = 'done' THEN result::text END AS result
FROM stage_tasks WHERE task_id = %(task_id)s AND owner_epoch = %(epoch)s;

-- name: forget_committed
-- Tasks whose result the run committed, or whose run ended without it (a refused commit), are
-- deleted; those another owner adopted, or that are gone, are no longer this owner's to track.
WITH gone AS (
    DELETE FROM stage_tasks t
    WHERE t.task_id = ANY(%(task_ids)s::bigint[]) AND t.state = 'done'
      AND (EXISTS (SELECT 1 FROM run_records r
                   WHERE r.run_id = t.run_id AND r.path = t.path AND r.kind = 'result'
                     AND r.finished_at = (t.result -> 'result' ->> 'finished_at')::double precision)
           OR EXISTS (SELECT 1 FROM runs r WHERE r.run_id = t.run_id
                      AND r.status IN ('succeeded', 'failed', 'cancelled')))
    RETURNING t.task_id
)
SELECT task_id FROM gone
UNION ALL
SELECT x.task_id FROM unnest(%(task_ids)s::bigint[]) AS x (task_id)
WHERE NOT EXISTS (SELECT 1 FROM stage_tasks t WHERE t.task_id = x.task_id AND t.owner_node = %(node_id)s);

-- name: drop_task
DELETE FROM stage_tasks WHERE task_id = %(task_id)s AND owner_epoch = %(epoch)s;

-- name: claim_task
-- The oldest queued task, or one whose worker's claim expired (the worker died or was cut off),
-- of a component this node has (nodes may load different component modules).
UPDATE stage_tasks t SET state = 'claimed', worker_node = %(node_id)s, claims = t.claims + 1,
    claimed_at = now(), claim_expires = now() + make_interval(secs => %(claim_s)s)
WHERE t.task_id = (
    SELECT s.task_id FROM stage_tasks s JOIN runs r ON r.run_id = s.run_id
    WHERE (s.state = 'queued' OR (s.state = 'claimed' AND s.claim_expires <= now()))
      AND r.status NOT IN ('succeeded', 'failed', 'cancelled')
      AND s.payload -> 'stage' ->> 'component_type' = ANY(%(component_types)s::text[])
    ORDER BY s.task_id
    LIMIT 1
    FOR UPDATE OF s SKIP LOCKED
)
RETURNING t.task_id, t.run_id, t.path, t.payload::text, t.attempt, t.claims;

-- name: start_attempt
-- An attempt starts under the claim only: the task's highest attempt and the run's attempt
-- record (read by the unsafe-to-repeat rule on resume) in one statement. 0 rows: claim lost.
WITH mine AS (
    UPDATE stage_tasks SET attempt = greatest(attempt, %(attempt)s)
    WHERE task_id = %(task_id)s AND state = 'claimed' AND worker_node = %(node_id)s AND claims = %(claims)s
    RETURNING run_id, path
), started AS (
    INSERT INTO run_attempts (run_id, path, attempt, started_at)
    SELECT run_id, path, %(attempt)s, %(now)s FROM mine
    ON CONFLICT (run_id, path, attempt) DO NOTHING
)
SELECT count(*) FROM mine;

-- name: finish_task
WITH done AS (
    UPDATE stage_tasks SET state = 'done', result = %(result)s::jsonb, finished_at = now()
    WHERE task_id = %(task_id)s AND state = 'claimed' AND worker_node = %(node_id)s AND claims = %(claims)s
    RETURNING task_id
)
SELECT pg_notify('flowmason_stage_done', task_id::text) FROM done;

-- name: renew_claims
UPDATE stage_tasks SET claim_expires = now() + make_interval(secs => %(claim_s)s)
WHERE worker_node = %(node_id)s AND state = 'claimed' AND task_id = ANY(%(task_ids)s::bigint[])
RETURNING task_id, claims;

-- name: release_claims
-- A graceful stop: this node's claimed tasks go back to the queue at once.
WITH back AS (
    UPDATE stage_tasks SET state = 'queued', worker_node = NULL, claim_expires = NULL
    WHERE worker_node = %(node_id)s AND state = 'claimed' AND task_id = ANY(%(task_ids)s::bigint[])
    RETURNING task_id
)
SELECT count(*) FROM back CROSS JOIN (SELECT pg_notify('flowmason_stage_queued', '')) n;
