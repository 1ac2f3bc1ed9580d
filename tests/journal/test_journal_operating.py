"""The journal's side of operating runs: the runs rebuild of migration 5 keeps every row, paused
status changes are conditional, stage logs go with their run, prune-before deletes what it lists."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from journal_helpers import make_pipeline

from flowmasond.engine.interfaces import Record
from flowmasond.engine.interfaces import ComponentResult, RunStatus, StageStatus
from flowmasond.journal import Journal

ANY = list(RunStatus)  # these tests set statuses directly; the transition rules are tested elsewhere
from flowmasond.journal.migrations import load_migrations, migrate


def _create_v4_with_records(path: Path) -> None:
    """A journal at schema version 4 holding one run with a result and an event."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, load_migrations()[:4])
        pipeline = make_pipeline("old")
        conn.execute("INSERT INTO pipelines_pinned VALUES (?, ?, ?, 1.0)",
                     (pipeline.content_hash(), pipeline.id, pipeline.canonical_json()))
        conn.execute("INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, created_at) "
                     "VALUES ('r-old', 'old', ?, '{\"a\": 1}', 'failed', 1.0)", (pipeline.content_hash(),))
        conn.execute("INSERT INTO run_records (run_id, seq, kind, path, committed_at, stage_id, component_type, "
                     "status, output, attempts, started_at, finished_at, handled) VALUES "
                     "('r-old', 1, 'result', 'a', 1.0, 'a', 'echo', 'success', '{\"x\": 1}', 1, 1.0, 1.0, 0)")
    finally:
        conn.close()


async def test_migration_5_rebuilds_runs_without_losing_records(db_path: Path) -> None:
    """Upgrading a version-4 journal keeps the run, its records and its events (the rebuild cascades
    nothing), and the new columns have their defaults."""
    _create_v4_with_records(db_path)
    journal = await Journal.open(db_path)
    try:
        run = await journal.get_run("r-old")
        assert run.status is RunStatus.FAILED and run.inputs == {"a": 1}
        assert run.breakpoints == () and run.forked_from is None and run.paused_at is None
        snapshot = await journal.load_snapshot("r-old")
        assert snapshot.results["a"].output == {"x": 1}
        assert [e.kind for e in await journal.events("r-old")] == ["stage.completed"]
    finally:
        await journal.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert "paused" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    finally:
        conn.close()


async def test_only_a_running_run_pauses(db_path: Path) -> None:
    """set_paused moves running -> paused -> running, and leaves a cancelled run cancelled."""
    async with await Journal.open(db_path) as journal:
        await journal.create_run("r1", make_pipeline("p"), {})
        assert await journal.set_paused("r1", {"a": {"stage_id": "a", "inputs": {}}}) is False  # pending
        await journal.set_run_status("r1", RunStatus.RUNNING, expected=ANY)
        assert await journal.set_paused("r1", {"a": {"stage_id": "a", "inputs": {"n": 1}}}) is True
        row = await journal.get_run("r1")
        assert row.status is RunStatus.PAUSED and row.paused_at == {"a": {"stage_id": "a", "inputs": {"n": 1}}}
        assert await journal.set_paused("r1", None) is True
        assert (await journal.get_run("r1")).status is RunStatus.RUNNING
        await journal.set_run_status("r1", RunStatus.CANCELLED, expected=ANY)
        assert await journal.set_paused("r1", {"a": {"stage_id": "a", "inputs": {}}}) is False
        assert (await journal.get_run("r1")).status is RunStatus.CANCELLED


async def test_logs_go_with_their_run(db_path: Path) -> None:
    """Deleting a run deletes its stage logs; another run's logs stay."""
    async with await Journal.open(db_path) as journal:
        for run_id in ("r1", "r2"):
            await journal.create_run(run_id, make_pipeline("p"), {})
            await journal.set_run_status(run_id, RunStatus.SUCCEEDED, expected=ANY)
            await journal.append_logs([{"run_id": run_id, "path": "a", "stream": "stdout", "ts": 1.0,
                                        "text": f"hello from {run_id}\n"}])
        assert await journal.delete_runs(["r1"]) == ["r1"]
        assert await journal.logs("r1") == []
        assert [c.text for c in await journal.logs("r2")] == ["hello from r2\n"]


async def test_prune_before_deletes_what_the_dry_run_listed(db_path: Path) -> None:
    """prune_before deletes exactly prune_candidates' list: finished runs created before the cutoff in the
    chosen statuses; a running run and a later run stay."""
    clock = [100.0]
    async with await Journal.open(db_path, clock=lambda: clock[0]) as journal:
        statuses = [RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.RUNNING, RunStatus.FAILED]
        for i, status in enumerate(statuses):
            clock[0] = 100.0 + i
            await journal.create_run(f"r{i}", make_pipeline("p"), {})
            await journal.set_run_status(f"r{i}", status, expected=ANY)
        clock[0] = 200.0
        await journal.create_run("late", make_pipeline("p"), {})
        await journal.set_run_status("late", RunStatus.FAILED, expected=ANY)
        listed = await journal.prune_candidates(150.0, [RunStatus.FAILED])
        assert [r["run_id"] for r in listed] == ["r0", "r3"]
        deleted = await journal.prune_before(150.0, [RunStatus.FAILED])
        assert deleted == listed
        left = {r.run_id for r in await journal.list_runs(limit=100)}
        assert left == {"r1", "r2", "late"}


async def test_a_seeded_run_holds_the_reused_records_and_the_fork_event(db_path: Path) -> None:
    """create_run with a seed commits the copied results with the run, and a run.forked event lists them."""
    result = ComponentResult(stage_id="a", component_type="echo", status=StageStatus.SUCCESS, output={"v": 1},
                             attempts=1)
    async with await Journal.open(db_path) as journal:
        await journal.create_run("src", make_pipeline("p"), {})
        await journal.create_run("fork", make_pipeline("p"), {}, forked_from="src", from_stage="b",
                                 seed=[Record.of_result("a", result)])
        row = await journal.get_run("fork")
        assert row.forked_from == "src" and row.from_stage == "b"
        assert (await journal.load_snapshot("fork")).results["a"].output == {"v": 1}
        forked = [e for e in await journal.events("fork") if e.kind == "run.forked"]
        assert forked[0].data == {"forked_from": "src", "from_stage": "b", "reused": ["a"]}
