-- 0004_event_xid: each event remembers the transaction that wrote it, so that followers never read
-- past a transaction still in progress (several nodes commit events concurrently).
--
-- Event ids come from one sequence, but a transaction takes its ids when it inserts and becomes
-- visible when it commits: an event with a smaller id can become visible after a larger one was
-- read. A follower therefore reads only events whose transaction is older than every transaction
-- still in progress (xid < pg_snapshot_xmin of its snapshot: that set never grows below the
-- cursor again) and walks them in (xid, id) order; see state/postgresql/queries/events.sql.
--
-- The column default runs in the inserting transaction, so the trigger-written stage events
-- (run_records_event, run_attempts_event) and the journal's own inserts get it without naming it.
-- Rows written before this migration keep xid 0: committed long ago, they sort first by id.

ALTER TABLE run_events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE run_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();

DROP INDEX run_events_by_run;
CREATE INDEX run_events_by_run ON run_events (run_id, xid, id);
CREATE INDEX run_events_by_xid ON run_events (xid, id);
