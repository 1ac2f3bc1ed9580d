"""The throwaway PostgreSQL fixture itself: a private database per test, data surviving a restart."""

from __future__ import annotations

import psycopg

from pg_support import PgServer


def test_each_test_gets_an_empty_database(pg_dsn: str) -> None:
    """pg_dsn names a fresh database with no tables of ours."""
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_committed_rows_survive_a_server_restart(pg_server: PgServer, pg_dsn: str) -> None:
    """restart() drops connections but keeps what was committed (fsync is on)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
    pg_server.restart(mode="immediate")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
