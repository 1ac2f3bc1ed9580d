"""The fencing seam: a RunFence checked inside every run-writing transaction, before its writes."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from flowmasond.engine.interfaces import ComponentResult, Record, RunStatus, StageStatus
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import FencedError
from flowmasond.journal.postgres import PgJournal

PIPELINE = PipelineConfig.model_validate({"id": "p", "stages": [{"id": "a", "component_type": "echo"}]})


class RefuseListed:
    """Refuses the runs named in ``refused``; notes each check with the transaction it ran in."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.checks: list[tuple[str, int]] = []

    async def check(self, cur: Any, run_id: str) -> None:
        await cur.execute("SELECT pg_current_xact_id()::text::bigint")
        row = await cur.fetchone()
        self.checks.append((run_id, int(row[0])))
        if run_id in self.refused:
            raise FencedError("this node no longer holds the run", run_id=run_id)


def _result() -> ComponentResult:
    return ComponentResult("a", "echo", StageStatus.SUCCESS, output={"ok": True}, attempts=1,
                           started_at=1.0, finished_at=2.0)


async def test_a_fenced_run_is_refused_alone_and_nothing_of_it_is_written(pg_dsn: str) -> None:
    """Two runs committed together: the fenced one raises FencedError and writes nothing; the other commits."""
    fence = RefuseListed()
    journal = await PgJournal.open(pg_dsn, fence=fence)
    try:
        for run_id in ("kept", "fenced"):
            await journal.create_run(run_id, PIPELINE, {})
        fence.refused.add("fenced")
        outcomes = await asyncio.gather(
            journal.run_store("kept").commit([Record.of_result("a", _result())]),
            journal.run_store("fenced").commit([Record.of_result("a", _result())]),
            journal.set_run_status("fenced", RunStatus.RUNNING, expected=[RunStatus.PENDING]),
            return_exceptions=True)
        status = await journal.run_status("fenced")
    finally:
        await journal.close()

    assert outcomes[0] is None
    assert isinstance(outcomes[1], FencedError) and isinstance(outcomes[2], FencedError)
    assert status is RunStatus.PENDING
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT run_id, path FROM run_records ORDER BY run_id").fetchall()
    assert rows == [("kept", "a")]


@pytest.mark.parametrize("operation", ["create", "commit", "start", "status", "resume", "recovery", "pause"])
async def test_every_run_writing_operation_checks_the_fence_inside_its_transaction(
        pg_dsn: str, operation: str) -> None:
    """Each operation that writes a run's records or state calls fence.check in a transaction (an xid exists)."""
    fence = RefuseListed()
    journal = await PgJournal.open(pg_dsn, fence=fence)
    try:
        if operation != "create":
            await journal.create_run("r", PIPELINE, {})
            await journal.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.PENDING])
        fence.checks.clear()
        fence.refused.add("r")
        call = {
            "create": lambda: journal.create_run("r", PIPELINE, {}),
            "commit": lambda: journal.run_store("r").commit([Record.of_result("a", _result())]),
            "start": lambda: journal.run_store("r").mark_started("a", 1, durable=True),
            "status": lambda: journal.set_run_status("r", RunStatus.FAILED, expected=[RunStatus.RUNNING]),
            "resume": lambda: journal.record_resume("r", expected=[RunStatus.RUNNING]),
            "recovery": lambda: journal.increment_recovery_attempts("r"),
            "pause": lambda: journal.set_paused("r", {"a": {"stage_id": "a", "inputs": {}}}),
        }[operation]
        with pytest.raises(FencedError):
            await call()
    finally:
        await journal.close()
    assert fence.checks and all(run_id == "r" and xid > 0 for run_id, xid in fence.checks)


async def test_with_a_fence_several_journals_share_one_database(pg_dsn: str) -> None:
    """A fence replaces the single-owner lock: a second PgJournal with a fence opens on the same database."""
    first = await PgJournal.open(pg_dsn, fence=RefuseListed())
    try:
        second = await PgJournal.open(pg_dsn, fence=RefuseListed())
        await second.close()
    finally:
        await first.close()
