-- 0008_runs_by_status: runs counted and found by status without reading the whole table.
--
-- `status` counts runs per status: a scan of every run row without this index (79 ms at 300,000
-- runs, 12.5 ms with it, measured on this schema). The PostgreSQL schema has had the same index
-- from its first version; there the scheduler's active-runs query (cluster mode) uses it too.

CREATE INDEX runs_by_status ON runs (status);
