-- Scheduler state (migration 0002).

-- name: record_fire
-- A fire already recorded is left as it is; the caller learns that from the row count.
INSERT INTO schedule_fires (pipeline_id, schedule_id, fire_time, run_id, recorded_at)
VALUES (:pipeline_id, :schedule_id, :fire_time, :run_id, :now)
ON CONFLICT (pipeline_id, schedule_id, fire_time) DO NOTHING;

-- name: last_fire_time
SELECT max(fire_time) FROM schedule_fires
WHERE pipeline_id = :pipeline_id AND schedule_id = :schedule_id;

-- name: set_schedule_paused
INSERT INTO schedule_state (pipeline_id, schedule_id, paused, updated_at)
VALUES (:pipeline_id, :schedule_id, :paused, :now)
ON CONFLICT (pipeline_id, schedule_id) DO UPDATE
SET paused = excluded.paused, updated_at = excluded.updated_at;

-- name: paused_schedules
SELECT pipeline_id, schedule_id FROM schedule_state WHERE paused = 1;
