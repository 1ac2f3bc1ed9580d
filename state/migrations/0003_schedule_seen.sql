-- 0003_schedule_seen: when the daemon first loaded each schedule.
--
-- Misfires are counted from a schedule's latest recorded fire; a schedule that has never fired
-- counts them from the moment it was first loaded, so a daily job added on Monday whose first
-- fire falls in Tuesday's downtime is still caught up. NULL for rows written before this version.

ALTER TABLE schedule_state ADD COLUMN first_seen_at REAL;
