"""A child run (subpipeline) stopped by a storage fault leaves its parent auto-recoverable (issue 11)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from flowmasond.config import DaemonConfig
from flowmasond.engine.interfaces import ExecutionHooks
from flowmasond.engine.interfaces import RunStatus
from flowmasond.journal import Journal
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import NEEDS_OPERATOR, RunManager
from flowmasond.testing import build_registry, read_ledger

CHILD_STAGES = 12


def _pipelines(tmp: Path) -> Path:
    folder = tmp / "pipelines"
    folder.mkdir()
    child = [{"id": f"c{i:02d}", "component_type": "record", "depends_on": [f"c{i - 1:02d}"] if i else [],
              "config": {"ledger": "{{input.ledger}}", "value": {"i": i, "blob": "{{input.blob}}"}}}
             for i in range(CHILD_STAGES)]
    (folder / "bulkychild.pipeline.json").write_text(json.dumps(
        {"id": "bulkychild", "stages": child, "output_stage_id": f"c{CHILD_STAGES - 1:02d}"}))
    parent = [
        {"id": "first", "component_type": "record", "config": {"ledger": "{{input.ledger}}", "value": "p"}},
        {"id": "call", "component_type": "subpipeline", "depends_on": ["first"],
         "config": {"pipeline_id": "bulkychild",
                    "input_data": {"ledger": "{{input.ledger}}", "blob": "{{input.blob}}"}}},
    ]
    (folder / "parent.pipeline.json").write_text(json.dumps({"id": "parent", "stages": parent}))
    return folder


class _SpaceBackWhenTheChildStops(ExecutionHooks):
    """Lifts the journal's size cap once the child run has stopped on it, so that the statuses the
    child and its parent journal next (the moment under test) can be written."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.parent_id: str | None = None
        self.child_stopped_by: str | None = None

    async def on_run_complete(self, run_id: str, outcome: object) -> None:
        if run_id != self.parent_id and self.child_stopped_by is None:
            self.child_stopped_by = (getattr(outcome, "error", None) or {}).get("code")
            await self.journal.set_max_size(None)


async def _settle(manager: RunManager) -> None:
    while manager.active:
        await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))


async def test_parent_of_a_child_stopped_by_a_full_journal_is_recovered_automatically(tmp_path: Path) -> None:
    """The child's storage fault reaches the parent as a storage fault (not "unsafe to repeat"), so
    recovery resumes the parent once space is back, and the child finishes without repeating a stage."""
    folder = _pipelines(tmp_path)
    config = DaemonConfig(state_dir=tmp_path / "state", socket=tmp_path / "x.sock", pipeline_dirs=[folder])
    config.state_dir.mkdir()
    journal = await Journal.open(config.journal_path)
    registry = build_registry()
    catalog = PipelineCatalog(registry, [folder])
    catalog.load_all()
    space = _SpaceBackWhenTheChildStops(journal)
    manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config, hooks=[space])
    ledger = tmp_path / "ledger.jsonl"
    try:
        size = config.journal_path.stat().st_size + (config.state_dir / "journal.sqlite3-wal").stat().st_size
        await journal.set_max_size(size + 150_000)  # room for a few 20 kB child results
        space.parent_id = run_id = await manager.start("parent", {"ledger": str(ledger), "blob": "x" * 20_000})
        await _settle(manager)

        assert space.child_stopped_by == "storage_full", "the child run was not stopped by the full journal"

        row = await journal.get_run(run_id)
        assert row.status is RunStatus.INTERRUPTED, row
        assert row.error["code"] not in NEEDS_OPERATOR, row.error
        assert row.error["code"] == "storage_full"

        committed = {(r.run_id, path) for r in await journal.list_runs(limit=10)
                     for path in (await journal.load_snapshot(r.run_id)).results}
        ran_before = len(read_ledger(ledger))
        report = await manager.recover()
        await _settle(manager)

        assert report["resumed"] == [run_id]
        row = await journal.get_run(run_id)
        assert row.status is RunStatus.SUCCEEDED, row.error
        entries = read_ledger(ledger)
        assert sorted({e["path"] for e in entries}) == sorted(["first", *(f"c{i:02d}" for i in range(CHILD_STAGES))])
        again = [e["path"] for e in entries[ran_before:] if (e["run_id"], e["path"]) in committed]
        assert again == [], "a committed stage ran again"
    finally:
        await journal.close()
