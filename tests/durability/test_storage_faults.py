"""Storage faults: a full journal stops the run in a resumable state, keeps the process up, and loses
nothing committed (issue 3, "Storage faults")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from flowmasond.config import DaemonConfig
from flowmasond.engine.interfaces import RunStatus
from flowmasond.journal import Journal
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import RunManager
from flowmasond.testing import build_registry, read_ledger

STAGES = 24


def _pipeline(tmp: Path) -> Path:
    import json

    folder = tmp / "pipelines"
    folder.mkdir()
    stages = [{"id": f"s{i:02d}", "component_type": "record",
               "depends_on": [f"s{i - 1:02d}"] if i else [],
               "config": {"ledger": "{{input.ledger}}", "value": {"i": i, "blob": "{{input.blob}}"}}}
              for i in range(STAGES)]
    (folder / "bulky.pipeline.json").write_text(json.dumps({"id": "bulky", "stages": stages,
                                                            "output_stage_id": f"s{STAGES - 1:02d}"}))
    return folder


async def _settle(manager: RunManager) -> None:
    while manager.active:
        await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))


async def test_a_full_journal_interrupts_the_run_and_it_resumes_once_space_is_back(tmp_path: Path) -> None:
    """Commits past the size cap fail with storage_full; the run stops, the manager stays up, the
    file stays sound, and after the cap is lifted a resume finishes without repeating a stage."""
    folder = _pipeline(tmp_path)
    config = DaemonConfig(state_dir=tmp_path / "state", socket=tmp_path / "x.sock", pipeline_dirs=[folder])
    config.state_dir.mkdir()
    journal = await Journal.open(config.journal_path)
    registry = build_registry()
    catalog = PipelineCatalog(registry, [folder])
    catalog.load_all()
    manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
    ledger = tmp_path / "ledger.jsonl"
    inputs: dict[str, Any] = {"ledger": str(ledger), "blob": "x" * 20_000}
    try:
        size = config.journal_path.stat().st_size + (tmp_path / "state" / "journal.sqlite3-wal").stat().st_size
        await journal.set_max_size(size + 200_000)  # room for a handful of 20 kB results
        run_id = await manager.start("bulky", inputs)
        await _settle(manager)

        committed = await journal.load_snapshot(run_id)
        assert 0 < len(committed.results) < STAGES
        row = await journal.get_run(run_id)
        assert row.status in (RunStatus.INTERRUPTED, RunStatus.RUNNING)
        if row.status is RunStatus.INTERRUPTED:
            assert row.error and row.error["code"] == "storage_full"
        assert await journal.integrity_check() == ["ok"]
        assert (await journal.get_run(run_id)).run_id == run_id  # reads still work

        await journal.set_max_size(None)
        await manager.resume(run_id)
        await _settle(manager)
        row = await journal.get_run(run_id)
        assert row.status is RunStatus.SUCCEEDED, row.error
        assert row.output["i"] == STAGES - 1
        entries = read_ledger(ledger)
        before = {p for p in committed.results}
        rerun = [e["path"] for e in entries[len(committed.results):] if e["path"] in before]
        assert rerun == []
        assert sorted({e["path"] for e in entries}) == [f"s{i:02d}" for i in range(STAGES)]
    finally:
        await journal.close()
