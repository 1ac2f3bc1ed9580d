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

-- name: mark_schedule_seen
-- Every load of a schedule: creates its state row, and sets first_seen_at once (migration 0003).
INSERT INTO schedule_state (pipeline_id, schedule_id, paused, updated_at, first_seen_at)
VALUES (:pipeline_id, :schedule_id, 0, :now, :now)
ON CONFLICT (pipeline_id, schedule_id) DO UPDATE
SET first_seen_at = excluded.first_seen_at
WHERE schedule_state.first_seen_at IS NULL;

-- name: schedule_records
-- For each [pipeline_id, schedule_id] pair of the JSON array :keys: its persisted state (NULL when
-- it has none) and its latest fire, with the status of the run that fire started (NULL: no run,
-- or not found).
SELECT k.value ->> 0, k.value ->> 1, coalesce(s.paused, 0), s.first_seen_at,
       f.fire_time, f.run_id, f.recorded_at, r.status
FROM json_each(:keys) AS k
LEFT JOIN schedule_state AS s
       ON s.pipeline_id = k.value ->> 0 AND s.schedule_id = k.value ->> 1
LEFT JOIN schedule_fires AS f
       ON f.pipeline_id = k.value ->> 0 AND f.schedule_id = k.value ->> 1
      AND f.fire_time = (SELECT max(fire_time) FROM schedule_fires
                         WHERE pipeline_id = k.value ->> 0 AND schedule_id = k.value ->> 1)
LEFT JOIN runs AS r ON r.run_id = f.run_id;

-- name: run_statuses
-- Statuses of the runs named in the JSON array :run_ids (unknown ids are left out).
SELECT run_id, status FROM runs WHERE run_id IN (SELECT value FROM json_each(:run_ids));
