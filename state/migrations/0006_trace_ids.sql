-- 0006_trace_ids: the trace and span of each stage result (W3C ids, lower-case hex).
--
-- Every run is one trace (its id is derived from the run id, so a resumed run continues it) and
-- every stage execution one span. NULL for results written before this version.

ALTER TABLE run_records ADD COLUMN trace_id TEXT;
ALTER TABLE run_records ADD COLUMN span_id TEXT;
