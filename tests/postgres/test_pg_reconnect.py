"""A commit whose session is cut: the PostgreSQL journal neither loses nor duplicates the records.

A relay in front of the real server (pg_support.CommitDropProxy) cuts the writer's session just
before its COMMIT reaches the server (rolled back) or just after (committed, but the answer is
lost). Either way the requester's commit returns normally and the run holds each record once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from flowmasond.engine.interfaces import ComponentResult, Record, StageStatus
from flowmasond.engine.models import PipelineConfig
from flowmasond.journal.postgres import PgJournal
from pg_support import CommitDropProxy, PgServer

PIPELINE = PipelineConfig.model_validate({"id": "p", "stages": [{"id": "a", "component_type": "echo"}]})


@pytest.fixture
async def proxied(pg_server: PgServer, pg_dsn: str) -> AsyncIterator[tuple[CommitDropProxy, PgJournal]]:
    """A journal whose sessions all go through a CommitDropProxy."""
    proxy = CommitDropProxy(pg_server)
    await proxy.start()
    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    journal = await PgJournal.open(proxy.dsn(str(dbname)), reconnect_timeout_s=20.0)
    try:
        yield proxy, journal
    finally:
        await journal.close()
        await proxy.close()


def _result(value: int) -> ComponentResult:
    return ComponentResult("a", "echo", StageStatus.SUCCESS, output={"v": value}, attempts=1,
                           started_at=1.0, finished_at=2.0)


def _committed(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return [(int(seq), str(path)) for seq, path in
                conn.execute("SELECT seq, path FROM run_records WHERE run_id = 'r' ORDER BY seq")]


@pytest.mark.parametrize("moment", ["before", "after"])
async def test_a_commit_cut_around_its_commit_is_stored_exactly_once(
        proxied: tuple[CommitDropProxy, PgJournal], pg_dsn: str, moment: str) -> None:
    """Cut before COMMIT (rolled back, so retried) or after (committed, read back): one record either way."""
    proxy, journal = proxied
    await journal.create_run("r", PIPELINE, {})
    proxy.arm(moment)

    await journal.run_store("r").commit([Record.of_result("a", _result(1))])

    assert proxy.cuts == 1
    assert journal.writer.unknown_outcomes == 1
    assert _committed(pg_dsn) == [(1, "a")]
    assert (await journal.load_snapshot("r")).results["a"].output == {"v": 1}
    events = [e.kind for e in await journal.events("r")]
    assert events.count("stage.completed") == 1


async def test_writes_after_a_cut_session_go_through_a_new_one(
        proxied: tuple[CommitDropProxy, PgJournal], pg_dsn: str) -> None:
    """After the cut the writer has reconnected: the next commits number on from the last one."""
    proxy, journal = proxied
    await journal.create_run("r", PIPELINE, {})
    proxy.arm("after")
    store = journal.run_store("r")
    await store.commit([Record.of_result("a", _result(1))])
    await store.commit([Record.of_result("b", _result(2))])

    assert journal.writer.reconnects >= 1
    assert _committed(pg_dsn) == [(1, "a"), (2, "b")]


async def test_ping_answers_while_the_database_is_down_and_writes_resume_after(
        pg_server: PgServer, pg_dsn: str) -> None:
    """The server stopped: ping still says the journal is alive (waiting, not wedged); a commit made
    meanwhile waits and lands once the server is back."""
    import asyncio

    journal = await PgJournal.open(pg_dsn, reconnect_timeout_s=30.0)
    try:
        await journal.create_run("r", PIPELINE, {})
        pg_server.stop()
        try:
            pending = asyncio.ensure_future(journal.run_store("r").commit([Record.of_result("a", _result(1))]))
            assert await asyncio.wait_for(journal.ping(), timeout=10) is True
            assert not pending.done()
        finally:
            pg_server.start()
        await asyncio.wait_for(pending, timeout=30)
        assert _committed(pg_dsn) == [(1, "a")]
        assert await journal.ping() is True
    finally:
        await journal.close()


async def test_past_the_reconnect_deadline_a_write_fails_and_the_next_one_succeeds_once_the_server_is_back(
        pg_server: PgServer, pg_dsn: str) -> None:
    """The backoff is bounded: with the server down longer than reconnect_timeout_s the commit raises
    JournalError; the writer survives, and a commit after the server returns lands."""
    import asyncio
    import time

    from flowmasond.errors import JournalError

    journal = await PgJournal.open(pg_dsn, reconnect_timeout_s=1.0)
    try:
        await journal.create_run("r", PIPELINE, {})
        pg_server.stop()
        try:
            started = time.monotonic()
            with pytest.raises(JournalError):
                await journal.run_store("r").commit([Record.of_result("a", _result(1))])
            waited = time.monotonic() - started
        finally:
            pg_server.start()
        await asyncio.wait_for(journal.run_store("r").commit([Record.of_result("b", _result(2))]), timeout=30)
    finally:
        await journal.close()
    assert 0.9 <= waited < 15
    assert _committed(pg_dsn) == [(1, "b")]
