"""Retention: pruning finished runs older than N days, then giving the space back."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Awaitable, Callable

from journal_helpers import FakeClock, integrity, make_pipeline, make_result

from flowmasond.engine.interfaces import Record, RunStatus
from flowmasond.journal import Journal

Opener = Callable[..., Awaitable[Journal]]
DAY = 86400.0


def _row_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("runs", "run_records", "run_attempts", "run_events",
                              "pipelines_pinned")}
    finally:
        conn.close()


async def _finished_run(journal: Journal, run_id: str, *, pipeline_id: str = "p",
                        records: int = 50, parent: str | None = None,
                        status: RunStatus = RunStatus.SUCCEEDED) -> None:
    await journal.create_run(run_id, make_pipeline(pipeline_id), {}, parent_run_id=parent,
                             parent_path="sub" if parent else None)
    store = journal.run_store(run_id)
    await store.mark_started("s", 1, durable=True)
    await store.commit([Record.of_result(f"s{i}", make_result(output="y" * 2000))
                        for i in range(records)])
    await journal.set_run_status(run_id, status, expected=[RunStatus.PENDING])


async def test_prune_removes_old_finished_runs_with_all_their_rows(
        open_journal: Opener, clock: FakeClock) -> None:
    """Old finished runs go with records, attempts, events and unreferenced pins; others stay."""
    journal = await open_journal(clock=clock)
    await _finished_run(journal, "old", pipeline_id="gone")
    await _finished_run(journal, "old-failed", status=RunStatus.FAILED)
    await journal.create_run("old-running", make_pipeline("p"), {})
    await journal.set_run_status("old-running", RunStatus.RUNNING, expected=[RunStatus.PENDING])
    clock.advance(10 * DAY)
    await _finished_run(journal, "recent")

    result = await journal.prune(older_than_days=7)

    assert (result.runs, result.pipelines) == (2, 1)
    assert sorted(r.run_id for r in await journal.list_runs()) == ["old-running", "recent"]
    counts = _row_counts(journal.path)
    assert counts["run_records"] == 50 and counts["run_attempts"] == 1
    assert counts["pipelines_pinned"] == 1
    assert {e.run_id for e in await journal.events()} == {"old-running", "recent"}


async def test_prune_takes_children_with_their_parent_only(open_journal: Opener,
                                                           clock: FakeClock) -> None:
    """A subpipeline run is pruned with its parent, never while its parent is kept."""
    journal = await open_journal(clock=clock)
    await _finished_run(journal, "parent-old", records=1)
    await _finished_run(journal, "child-old", parent="parent-old", records=1)
    await journal.create_run("parent-live", make_pipeline(), {})
    await _finished_run(journal, "child-of-live", parent="parent-live", records=1)
    clock.advance(30 * DAY)

    await journal.prune(older_than_days=7)

    assert sorted(r.run_id for r in await journal.list_runs()) == ["child-of-live",
                                                                    "parent-live"]


async def test_prune_gives_freed_pages_back(open_journal: Opener, clock: FakeClock,
                                            db_path: Path) -> None:
    """After pruning, the file has no free pages and is smaller than before."""
    journal = await open_journal(clock=clock)
    for i in range(5):
        await _finished_run(journal, f"r{i}", records=200)
    await journal.checkpoint()
    size_before = db_path.stat().st_size
    clock.advance(8 * DAY)

    result = await journal.prune(older_than_days=7)
    await journal.checkpoint()

    assert result.runs == 5 and result.pages_freed > 0
    assert db_path.stat().st_size < size_before / 2
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    finally:
        conn.close()
    assert integrity(db_path) == "ok"


async def test_prune_keeps_each_schedules_latest_fire(open_journal: Opener,
                                                      clock: FakeClock) -> None:
    """Old fires are pruned except the latest per schedule, which misfire handling needs."""
    journal = await open_journal(clock=clock)
    for t in (1.0, 2.0, 3.0):
        await journal.record_fire("p", "s", t)
    clock.advance(30 * DAY)

    result = await journal.prune(older_than_days=7)

    assert result.fires == 2
    assert await journal.last_fire_time("p", "s") == 3.0
    assert await journal.record_fire("p", "s", 3.0) is False
