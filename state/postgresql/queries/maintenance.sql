-- Migrations, ownership and upkeep (PostgreSQL).

-- name: migration_lock
-- Serialises migrations of nodes starting together (released at the end of the transaction).
SELECT pg_advisory_xact_lock(%(key)s);

-- name: migrations_table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: applied_migrations
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (%(version)s, %(name)s, %(now)s);

-- name: try_owner_lock
-- The single-owner lock: held by the writer's session for the journal's life. One per journal, i.e.
-- per database and schema (journals may live side by side in separate schemas).
SELECT pg_try_advisory_lock(%(key)s::int4, hashtext(current_schema()));

-- name: owner_lock_holder
-- Who holds the single-owner lock: its session's application_name names the daemon's pid and host.
SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.backend_start::text
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %(key)s::int8::oid
  AND l.objid = (hashtext(current_schema())::int8 & 4294967295)::oid
  AND l.objsubid = 2
LIMIT 1;

-- name: current_xact_id
-- The id of the transaction a group commits in: if the connection drops during COMMIT, its
-- outcome is read back with transaction_status.
SELECT pg_current_xact_id()::text;

-- name: transaction_status
SELECT pg_xact_status(%(xid)s::xid8);

-- name: database_size
SELECT pg_database_size(current_database());
