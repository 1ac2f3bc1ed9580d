"""The run manager against a real journal: racing resumes and cancels, and a forced shutdown.

Every test drives the real ``RunManager`` on a real SQLite journal in this process, so that two
operations can be started in the same event-loop tick (the tightest race there is).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flowmasond.config import DaemonConfig
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.interfaces import RunStatus
from flowmasond.engine.registry import ComponentInput, operator
from flowmasond.errors import RunConflictError
from flowmasond.journal import Journal
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import RunManager
from flowmasond.testing import build_registry, read_ledger

# Set by the stubborn stage once it is running, so the test never sleeps on a guess.
STUBBORN_STARTED: dict[str, asyncio.Event] = {}


class _StubbornInput(ComponentInput):
    name: str


@operator("stubborn", description="Ignores the first cancellation (a badly behaved component).")
class Stubborn:
    """Keeps running after the engine cancels it; only a second cancellation ends it."""

    Input = _StubbornInput

    async def execute(self, input: _StubbornInput, context: ExecutionContext) -> Any:
        STUBBORN_STARTED.setdefault(input.name, asyncio.Event()).set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # swallows the engine's cancel; the next one ends it
        return {}


def _pipelines(folder: Path, ledger: Path) -> None:
    gated = {"id": "gated", "stages": [
        {"id": "one", "component_type": "record", "config": {"ledger": str(ledger), "value": 1}},
        # Two in parallel: the engine runs them as tasks and drains them after a cancel.
        {"id": "wait", "component_type": "stubborn", "config": {"name": "wait"}, "depends_on": ["one"]},
        {"id": "wait2", "component_type": "stubborn", "config": {"name": "wait2"}, "depends_on": ["one"]},
    ]}
    quick = {"id": "quick", "stages": [
        {"id": "one", "component_type": "record", "config": {"ledger": str(ledger), "value": 1}},
        {"id": "two", "component_type": "record", "config": {"ledger": str(ledger), "value": 2},
         "depends_on": ["one"]},
    ]}
    for definition in (gated, quick):
        (folder / f"{definition['id']}.pipeline.json").write_text(json.dumps(definition))


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[RunManager]:
    """A RunManager on a fresh journal, with the ``quick`` and ``gated`` pipelines."""
    STUBBORN_STARTED.clear()
    folder = tmp_path / "pipelines"
    folder.mkdir()
    _pipelines(folder, tmp_path / "ledger.jsonl")
    config = DaemonConfig(state_dir=tmp_path / "state", socket=tmp_path / "unused.sock",
                          pipeline_dirs=[folder], cancel_grace_s=0.05)
    registry = build_registry(__name__)
    catalog = PipelineCatalog(registry, [folder])
    catalog.load_all()
    journal = await Journal.open(config.journal_path)
    runs = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
    try:
        yield runs
    finally:
        await runs.shutdown(0.0, status_margin_s=0.5)
        await journal.close()


async def _finished(manager: RunManager, run_id: str) -> RunStatus:
    while run_id in manager.active:
        await manager.wait_changed(timeout=0.5)
    return (await manager.journal.get_run(run_id)).status


async def _failed_run(manager: RunManager, tmp_path: Path) -> str:
    """A finished run of ``quick`` that the journal then marks failed, so that it may resume."""
    run_id = await manager.start("quick", {})
    assert await _finished(manager, run_id) is RunStatus.SUCCEEDED
    await manager.journal.set_run_status(run_id, RunStatus.FAILED, expected=[RunStatus.SUCCEEDED])
    return run_id


async def test_of_two_resumes_started_together_exactly_one_wins(manager: RunManager, tmp_path: Path) -> None:
    """Two resumes of one run in the same tick: one resumes it, the other gets RunConflictError."""
    run_id = await _failed_run(manager, tmp_path)

    outcomes = await asyncio.gather(manager.resume(run_id), manager.resume(run_id), return_exceptions=True)

    assert sorted(type(o).__name__ for o in outcomes) == ["RunConflictError", "str"]
    assert await _finished(manager, run_id) is RunStatus.SUCCEEDED
    assert (await manager.journal.get_run(run_id)).resumed_count == 1


async def test_of_two_cancels_exactly_one_wins(manager: RunManager, tmp_path: Path) -> None:
    """Two cancels of a running run: the first stops it, the second gets RunConflictError."""
    run_id = await manager.start("gated", {})
    await STUBBORN_STARTED.setdefault("wait", asyncio.Event()).wait()

    first = await manager.cancel(run_id)
    with pytest.raises(RunConflictError):
        await manager.cancel(run_id)

    assert first["cancelling"] is True


async def test_a_shutdown_that_cancels_leftover_tasks_leaves_the_run_interrupted(
        manager: RunManager, tmp_path: Path) -> None:
    """A stage that ignores cancellation past the grace: its task is cancelled and the run ends interrupted."""
    run_id = await manager.start("gated", {})
    for name in ("wait", "wait2"):
        await STUBBORN_STARTED.setdefault(name, asyncio.Event()).wait()

    summary = await manager.shutdown(0.05, status_margin_s=0.3)

    assert summary["forced"] == 1
    row = await manager.journal.get_run(run_id)
    assert row.status is RunStatus.INTERRUPTED
    assert [e["value"] for e in read_ledger(tmp_path / "ledger.jsonl")] == [1]


async def test_a_resume_whose_snapshot_cannot_be_read_leaves_the_run_interrupted(
        manager: RunManager, tmp_path: Path) -> None:
    """The snapshot is read while the claim commits: if the read fails (a record's output is not
    JSON any more), the claimed run is left interrupted with the error, not pending and idle."""
    run_id = await _failed_run(manager, tmp_path)
    # Damage the file the way a bad disk or a hand edit would: another connection, real SQLite.
    other = sqlite3.connect(manager.journal.path)
    try:
        with other:
            other.execute("UPDATE run_records SET output = '{not json' WHERE run_id = ?", (run_id,))
    finally:
        other.close()

    with pytest.raises(ValueError):
        await manager.resume(run_id)

    row = await manager.journal.get_run(run_id)
    assert row.status is RunStatus.INTERRUPTED
    assert run_id not in manager.active
    assert row.resumed_count == 1  # the claim did commit


async def test_first_execution_is_true_for_a_new_run_and_false_for_a_resumed_one(
        manager: RunManager, tmp_path: Path) -> None:
    """A run start() just created executes for the first time (known without a journal read); a
    resumed run does not (its journal row counts the resume)."""
    fresh = await manager.start("quick", {})
    assert await manager.first_execution(fresh) is True
    assert await _finished(manager, fresh) is RunStatus.SUCCEEDED

    resumed = await _failed_run(manager, tmp_path)
    await manager.resume(resumed)
    assert await _finished(manager, resumed) is RunStatus.SUCCEEDED
    assert await manager.first_execution(resumed) is False


async def test_a_run_started_with_a_slot_free_is_running_from_its_creation_commit(manager: RunManager) -> None:
    """With a concurrency slot free, start_run creates the run already running: one commit, and the
    row it returns is what the journal holds before the run's task has even begun."""
    before = manager.journal.stats().transactions

    row = await manager.start_run("gated", {})
    commits = manager.journal.stats().transactions - before
    stored = await manager.journal.get_run(row.run_id)

    assert row.status is RunStatus.RUNNING and row.started_at == row.created_at
    assert stored == row
    assert commits == 1
    run_events = [e for e in await manager.journal.events(row.run_id) if e.kind.startswith("run.")]
    assert [(e.kind, (e.data or {}).get("status")) for e in run_events] == [
        ("run.created", "pending"), ("run.status", "running")]


async def test_a_run_started_with_every_slot_taken_waits_pending_for_one(tmp_path: Path) -> None:
    """With max_concurrent_runs = 1, of two runs started in the same tick the second is created
    pending and only marked running once the first has finished and freed the slot."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    _pipelines(folder, tmp_path / "ledger.jsonl")
    config = DaemonConfig(state_dir=tmp_path / "state", socket=tmp_path / "unused.sock",
                          pipeline_dirs=[folder], max_concurrent_runs=1)
    registry = build_registry(__name__)
    catalog = PipelineCatalog(registry, [folder])
    catalog.load_all()
    journal = await Journal.open(config.journal_path)
    manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
    try:
        first, second = await asyncio.gather(manager.start_run("quick", {}), manager.start_run("quick", {}))
        assert await _finished(manager, first.run_id) is RunStatus.SUCCEEDED
        assert await _finished(manager, second.run_id) is RunStatus.SUCCEEDED
        done_first, done_second = await journal.get_run(first.run_id), await journal.get_run(second.run_id)
    finally:
        await manager.shutdown(0.0, status_margin_s=0.5)
        await journal.close()

    assert first.status is RunStatus.RUNNING and second.status is RunStatus.PENDING
    assert done_second.started_at is not None and done_first.finished_at is not None
    assert done_second.started_at >= done_first.finished_at
