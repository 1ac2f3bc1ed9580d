"""Rebuilding a run from the journal: what a resumed run starts from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from journal_helpers import make_pipeline, make_result

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import Record, StageStatus
from flowmasond.errors import RunNotFoundError
from flowmasond.journal import Journal

# Behaviour, not SQLite internals: these tests run on the PostgreSQL journal too.
ALSO_ON_POSTGRESQL = True
SQLITE_ONLY = {"test_ten_thousand_records_load_completely"}  # read the SQLite file directly


async def test_results_round_trip_field_for_field(journal: Journal) -> None:
    """Every field of every committed result comes back equal, including usage and outputs."""
    await journal.create_run("r", make_pipeline(), {})
    results = {
        "a": make_result("a", tokens=7),
        "b": make_result("b", output=None, status=StageStatus.SKIPPED),
        "loop/0/c": make_result("c", output=[{"deep": {"x": None}}, "é", 3]),
        "d": make_result("d", status=StageStatus.FAILED, handled=True, attempts=3),
    }
    results["b"] = results["b"].with_(output=None)
    await journal.run_store("r").commit([Record.of_result(p, r) for p, r in results.items()])

    snapshot = await journal.load_snapshot("r")

    assert snapshot.results == results


async def test_latest_decision_and_result_per_path_win(journal: Journal) -> None:
    """Later records for a path supersede earlier ones, across separate commits."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await store.commit([Record.of_state("loop", ControlFlowState.loop([0])),
                        Record.of_result("x", make_result("x", status=StageStatus.FAILED))])
    await store.commit([Record.of_state("loop", ControlFlowState.loop([0, 1]))])
    await store.commit([Record.of_result("x", make_result("x", output={"v": 2}))])

    snapshot = await journal.load_snapshot("r")

    assert snapshot.states == {"loop": ControlFlowState.loop([0, 1])}
    assert snapshot.results["x"].ok and snapshot.results["x"].output == {"v": 2}


async def test_highest_started_attempt_per_path(journal: Journal) -> None:
    """Attempts hold the highest started attempt; a path without result is in flight."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await store.mark_started("a", 1, durable=True)
    await store.mark_started("a", 2, durable=True)
    await store.mark_started("b", 1, durable=True)
    await store.commit([Record.of_result("b", make_result("b"))])

    snapshot = await journal.load_snapshot("r")

    assert snapshot.attempts == {"a": 2, "b": 1}
    assert snapshot.in_flight() == ["a"]


async def test_for_resume_drops_unhandled_failures_only(journal: Journal) -> None:
    """A resume retries unhandled failures and keeps successes, skips and handled failures."""
    await journal.create_run("r", make_pipeline(), {})
    await journal.run_store("r").commit([
        Record.of_result("ok", make_result("ok")),
        Record.of_result("skip", make_result("skip", status=StageStatus.SKIPPED)),
        Record.of_result("caught", make_result("caught", status=StageStatus.FAILED, handled=True)),
        Record.of_result("broke", make_result("broke", status=StageStatus.FAILED)),
    ])

    resume = (await journal.load_snapshot("r")).for_resume()

    assert sorted(resume.results) == ["caught", "ok", "skip"]


async def test_snapshot_survives_reopening(db_path: Path) -> None:
    """A fresh Journal on the same file (a new process's view) rebuilds the same snapshot."""
    first = await Journal.open(db_path)
    await first.create_run("r", make_pipeline(), {"n": 1})
    await first.run_store("r").commit([Record.of_result("a", make_result("a")),
                                       Record.of_state("a", ControlFlowState.branch_taken("conditional", branch=True, selected=["b"], skipped=[]))])
    expected = await first.load_snapshot("r")
    await first.close()

    second = await Journal.open(db_path)
    try:
        assert await second.load_snapshot("r") == expected
    finally:
        await second.close()


async def test_ten_thousand_records_load_completely(journal: Journal) -> None:
    """A run holding 10,000 committed results rebuilds all of them, with seq gap-free 1..N."""
    await journal.create_run("big", make_pipeline(), {})
    records = [Record.of_result(f"loop/{i}/step", make_result("step", output=i))
               for i in range(10_000)]
    await journal.run_store("big").commit(records)

    snapshot = await journal.load_snapshot("big")

    assert len(snapshot.results) == 10_000
    assert snapshot.results["loop/9999/step"].output == 9999
    conn = sqlite3.connect(journal.path)
    try:
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM run_records WHERE run_id = 'big' ORDER BY seq")]
    finally:
        conn.close()
    assert seqs == list(range(1, 10_001))


async def test_snapshot_of_unknown_run_is_run_not_found(journal: Journal) -> None:
    """Loading a run the journal does not hold raises RunNotFoundError naming it."""
    with pytest.raises(RunNotFoundError) as caught:
        await journal.load_snapshot("nope")
    assert caught.value.context == {"run_id": "nope"}
