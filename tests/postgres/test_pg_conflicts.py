"""Transient conflicts: the writer runs a group again when PostgreSQL picks it as a deadlock victim.

The deadlock is real: a fence written for the test locks two rows of a side table in the journal's
writer transaction, while a second session locks them in the opposite order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import errors

from flowmasond.engine.interfaces import ComponentResult, Record, StageStatus
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import FencedError, JournalError
from flowmasond.journal.postgres import PgJournal
from flowmasond.journal.postgres.writer import TRANSIENT_RETRIES

PIPELINE = PipelineConfig.model_validate({"id": "p", "stages": [{"id": "a", "component_type": "echo"}]})


def _result() -> ComponentResult:
    return ComponentResult("a", "echo", StageStatus.SUCCESS, output={"ok": True}, attempts=1,
                           started_at=1.0, finished_at=2.0)


class LockingFence:
    """Locks rows 1 then 2 of ``side`` in the writer's transaction; for each of its ``rounds`` it first
    waits until the other session holds row 2, so that the two lock orders meet (the writer, with the
    shorter deadlock_timeout, is the victim)."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds  # checks still to make meet the other session
        self.holds_1: asyncio.Queue[asyncio.Event] = asyncio.Queue()  # per round: "the other holds row 2"
        self.checks = 0
        self.deadlocks = 0

    async def check(self, cur: Any, run_id: str) -> None:
        self.checks += 1
        await cur.execute("SET LOCAL deadlock_timeout = '20ms'")
        await cur.execute("SELECT k FROM side WHERE k = 1 FOR UPDATE")
        await cur.fetchone()
        if self.rounds:
            self.rounds -= 1
            other_holds_2 = asyncio.Event()
            await self.holds_1.put(other_holds_2)
            await other_holds_2.wait()
        try:
            await cur.execute("SELECT k FROM side WHERE k = 2 FOR UPDATE")
            await cur.fetchone()
        except errors.DeadlockDetected:
            self.deadlocks += 1
            raise


class AlwaysConflicting:
    """Once armed, fails every check with a serialization failure raised by the server itself."""

    def __init__(self) -> None:
        self.armed = False
        self.checks = 0

    async def check(self, cur: Any, run_id: str) -> None:
        if not self.armed:
            return
        self.checks += 1
        await cur.execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$")


class Refusing:
    """Refuses every run (FencedError), counting its checks."""

    def __init__(self) -> None:
        self.checks = 0

    async def check(self, cur: Any, run_id: str) -> None:
        self.checks += 1
        raise FencedError("this node no longer holds the run", run_id=run_id)


async def test_a_deadlock_victim_commit_is_run_again_and_stored_once(pg_dsn: str) -> None:
    """The writer loses a real deadlock: its commit still succeeds, once, and the record and its event exist once."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE side (k INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO side VALUES (1), (2)")
    fence = LockingFence(rounds=0)
    journal = await PgJournal.open(pg_dsn, fence=fence)
    other = await psycopg.AsyncConnection.connect(pg_dsn)
    try:
        await journal.create_run("r", PIPELINE, {})
        # Two deadlocks in a row: the first try and its rerun both lose (one rerun is also what the
        # per-request slow path did, by chance, before retries existed).
        fence.rounds = 2
        commit = asyncio.ensure_future(journal.run_store("r").commit([Record.of_result("a", _result())]))
        for _ in range(2):
            go_on = await asyncio.wait_for(fence.holds_1.get(), timeout=10)
            await other.execute("SELECT k FROM side WHERE k = 2 FOR UPDATE")
            go_on.set()
            await other.execute("SELECT k FROM side WHERE k = 1 FOR UPDATE")  # waits for the writer's row 1
            await other.commit()  # the writer was the victim: the other session got both rows
        await asyncio.wait_for(commit, timeout=10)
        retries = journal._writer.transient_retries
    finally:
        await other.close()
        await journal.close()

    assert fence.deadlocks == 2
    assert retries == 2
    with psycopg.connect(pg_dsn) as conn:
        records = conn.execute("SELECT path FROM run_records WHERE run_id = 'r'").fetchall()
        events = conn.execute("SELECT path FROM run_events WHERE run_id = 'r' AND kind = 'stage.completed'"
                              ).fetchall()
    assert records == [("a",)]
    assert events == [("a",)]


async def test_a_conflict_that_keeps_coming_back_is_refused_after_bounded_retries(pg_dsn: str) -> None:
    """A serialization failure on every try: the request fails with SQLSTATE 40001 after TRANSIENT_RETRIES reruns."""
    fence = AlwaysConflicting()
    journal = await PgJournal.open(pg_dsn, fence=fence)
    try:
        await journal.create_run("r", PIPELINE, {})
        fence.armed = True
        with pytest.raises(JournalError) as raised:
            await journal.run_store("r").commit([Record.of_result("a", _result())])
        retries = journal._writer.transient_retries
    finally:
        await journal.close()

    assert raised.value.context.get("sqlstate") == "40001"
    assert retries == TRANSIENT_RETRIES
    # each retried try checks once on the fast path; the last one also on the per-request path
    assert fence.checks == TRANSIENT_RETRIES + 2


async def test_a_fenced_commit_is_never_retried(pg_dsn: str) -> None:
    """A FencedError refuses the request at once: no transient retry, one check per path."""
    fence = Refusing()
    journal = await PgJournal.open(pg_dsn, fence=fence, single_owner=True)
    try:
        with pytest.raises(FencedError):
            await journal.create_run("r", PIPELINE, {})
        retries = journal._writer.transient_retries
    finally:
        await journal.close()

    assert retries == 0
    assert fence.checks == 2  # the pipelined fast path, then the per-request path that finds it
