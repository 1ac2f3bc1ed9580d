-- Scheduler state (PostgreSQL).

-- name: record_fire
-- A fire already recorded is left as it is; the caller learns that from the row it gets back
-- (RETURNING rather than the row count, which pipeline mode only reports after a sync).
INSERT INTO schedule_fires (pipeline_id, schedule_id, fire_time, run_id, recorded_at)
VALUES (%(pipeline_id)s, %(schedule_id)s, %(fire_time)s, %(run_id)s, %(now)s)
ON CONFLICT (pipeline_id, schedule_id, fire_time) DO NOTHING
RETURNING fire_time;

-- name: last_fire_time
SELECT max(fire_time) FROM schedule_fires
WHERE pipeline_id = %(pipeline_id)s AND schedule_id = %(schedule_id)s;

-- name: set_schedule_paused
INSERT INTO schedule_state (pipeline_id, schedule_id, paused, updated_at)
VALUES (%(pipeline_id)s, %(schedule_id)s, %(paused)s, %(now)s)
ON CONFLICT (pipeline_id, schedule_id) DO UPDATE
SET paused = excluded.paused, updated_at = excluded.updated_at;

-- name: paused_schedules
SELECT pipeline_id, schedule_id FROM schedule_state WHERE paused;

-- name: mark_schedule_seen
INSERT INTO schedule_state (pipeline_id, schedule_id, paused, updated_at, first_seen_at)
VALUES (%(pipeline_id)s, %(schedule_id)s, FALSE, %(now)s, %(now)s)
ON CONFLICT (pipeline_id, schedule_id) DO UPDATE
SET first_seen_at = excluded.first_seen_at
WHERE schedule_state.first_seen_at IS NULL;

-- name: schedule_state_of
SELECT paused, first_seen_at FROM schedule_state
WHERE pipeline_id = %(pipeline_id)s AND schedule_id = %(schedule_id)s;

-- name: latest_fire
SELECT f.fire_time, f.run_id, f.recorded_at, r.status AS run_status
FROM schedule_fires AS f LEFT JOIN runs AS r ON r.run_id = f.run_id
WHERE f.pipeline_id = %(pipeline_id)s AND f.schedule_id = %(schedule_id)s
ORDER BY f.fire_time DESC
LIMIT 1;
