"""Stage events derived from the record and attempt rows (version 7) equal the trigger copies.

The oracle is the implementation they replace: a journal migrated to version 6 only, whose
triggers (migration 0004, still shipped) copy each row into run_events, written with the version-6
INSERT statements kept below. Both journals get the same generated sequence of attempt starts and
commits; their stage events must agree row for row, in the same order.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from journal_helpers import FakeClock, make_pipeline

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import ComponentResult, ErrorType, Record, RecordKind, RunStatus, StageStatus
from flowmasond.journal import Journal
from flowmasond.journal.migrations import load_migrations, migrate
from flowmasond.journal.records import result_values, state_value

V1_JOURNAL = Path(__file__).parent / "data" / "v1_journal.sqlite3"

# The version-6 hot-path statements (state/queries/records.sql before migration 0007).
V6_INSERT_RESULT = """
INSERT INTO run_records (run_id, seq, kind, path, committed_at, stage_id, component_type, status,
                         output, error, error_type, attempts, started_at, finished_at, handled,
                         input_tokens, output_tokens, cost_usd, duration_ms, provider, model,
                         trace_id, span_id)
VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM run_records WHERE run_id = ?1), 'result', ?2,
        ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"""
V6_INSERT_DECISION = """
INSERT INTO run_records (run_id, seq, kind, path, committed_at, decision)
VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM run_records WHERE run_id = ?1), 'decision', ?2,
        ?3, ?4)"""
V6_INSERT_ATTEMPT = """
INSERT INTO run_attempts (run_id, path, attempt, started_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (run_id, path, attempt) DO NOTHING"""

STAGE_EVENTS = ("SELECT run_id, ts, kind, path, data FROM run_events WHERE kind LIKE 'stage.%' "
                "ORDER BY id")
PATHS = st.sampled_from(["a", "b", "loop/0/x", "tc/catch"])


def _v6_journal(path: Path) -> sqlite3.Connection:
    """A journal file at schema version 6, the last one whose triggers copied stage events."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn, [m for m in load_migrations() if m.version <= 6])
    return conn


def _v6_create_run(conn: sqlite3.Connection, run_id: str, now: float) -> None:
    pipeline = make_pipeline()
    conn.execute("INSERT OR IGNORE INTO pipelines_pinned VALUES (?, ?, ?, ?)",
                 (pipeline.content_hash(), pipeline.id, pipeline.canonical_json(), now))
    conn.execute("INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, created_at) "
                 "VALUES (?, ?, ?, '{}', 'running', ?)", (run_id, pipeline.id, pipeline.content_hash(), now))
    conn.execute("INSERT INTO run_events (run_id, ts, kind) VALUES (?, ?, 'run.created')", (run_id, now))


def _v6_apply(conn: sqlite3.Connection, op: tuple[Any, ...], now: float) -> None:
    """One generated operation, as the version-6 daemon wrote it (one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    if op[0] == "start":
        _, run_id, path, attempt, _durable = op
        conn.execute(V6_INSERT_ATTEMPT, (run_id, path, attempt, now))
    else:
        _, run_id, records = op
        for record in records:
            if record.kind is RecordKind.RESULT:
                conn.execute(V6_INSERT_RESULT, (run_id, record.path, now, *result_values(record.result)))
            else:
                conn.execute(V6_INSERT_DECISION, (run_id, record.path, now, state_value(record.state)))
    conn.execute("COMMIT")


@st.composite
def _results(draw: st.DrawFn) -> Record:
    path = draw(PATHS)
    status = draw(st.sampled_from(list(StageStatus)))
    failed = status is StageStatus.FAILED
    started = draw(st.floats(1_600_000_000, 1_700_000_000, allow_nan=False))
    # finished before started happens with a clock stepped back: the event clamps duration at 0.
    finished = started + draw(st.floats(-1.0, 100.0, allow_nan=False))
    return Record.of_result(path, ComponentResult(
        stage_id=path.rsplit("/", 1)[-1], component_type=draw(st.sampled_from(["echo", "shell"])),
        status=status, output=draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers()))),
        error=draw(st.one_of(st.none(), st.text(max_size=20))) if failed or status is StageStatus.SKIPPED else None,
        error_type=draw(st.sampled_from(list(ErrorType))) if failed else None,
        attempts=draw(st.integers(1, 5)), started_at=started, finished_at=finished,
        handled=draw(st.booleans())))


@st.composite
def _decisions(draw: st.DrawFn) -> Record:
    state = draw(st.sampled_from([
        ControlFlowState.branch_taken("conditional", branch=True, selected=["y"], skipped=["n"]),
        ControlFlowState.branch_taken("router", route="r", selected=["x"], skipped=[]),
        ControlFlowState.loop([1, "two", {"three": 3}]),
        ControlFlowState.return_fired({"v": [1]}, "done")]))
    return Record.of_state(draw(PATHS), state)


_OPS = st.lists(st.one_of(
    st.tuples(st.just("start"), st.sampled_from(["r1", "r2"]), PATHS, st.integers(1, 3), st.booleans()),
    st.tuples(st.just("commit"), st.sampled_from(["r1", "r2"]),
              st.lists(st.one_of(_results(), _decisions()), min_size=0, max_size=3))),
    max_size=25)


async def _new_journal_events(path: Path, ops: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]],
                                                                              list[Any]]:
    clock = FakeClock()
    journal = await Journal.open(path, clock=clock)
    try:
        for run_id in ("r1", "r2"):
            await journal.create_run(run_id, make_pipeline(), {})
        for op in ops:
            clock.advance(1.0)
            store = journal.run_store(op[1])
            if op[0] == "start":
                await store.mark_started(op[2], op[3], durable=op[4])
            else:
                await store.commit(op[2])
        await journal.run_store("r1").commit([])  # the barrier makes the riding-along starts durable
        paged: list[Any] = []
        cursor = 0
        while batch := await journal.events(after_id=cursor, limit=3):  # the merged feed, paged
            paged.extend(batch)
            cursor = batch[-1].id
        per_run = {run_id: await journal.events(run_id, limit=10_000) for run_id in ("r1", "r2")}
    finally:
        await journal.close()
    conn = sqlite3.connect(path)
    try:
        view = conn.execute(STAGE_EVENTS).fetchall()
    finally:
        conn.close()
    assert [e.id for e in paged] == sorted({e.id for e in paged})  # unique, increasing
    for run_id, events in per_run.items():
        assert events == [e for e in paged if e.run_id == run_id]
    return view, paged


def _v6_events(path: Path, ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    clock = FakeClock()
    conn = _v6_journal(path)
    try:
        for run_id in ("r1", "r2"):
            _v6_create_run(conn, run_id, clock())
        for op in ops:
            clock.advance(1.0)
            _v6_apply(conn, op, clock())
        return conn.execute(STAGE_EVENTS).fetchall()
    finally:
        conn.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_derived_stage_events_equal_the_version_6_trigger_copies(ops: list[tuple[Any, ...]]) -> None:
    """For generated starts and commits on two runs, the stage events of run_events (the view),
    of the paged feed and of each run's feed equal what the version-6 triggers wrote, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        expected = _v6_events(Path(tmp) / "v6.db", ops)
        view, paged = asyncio.run(_new_journal_events(Path(tmp) / "v7.db", ops))
        conn = sqlite3.connect(":memory:")
        try:
            # The feed's data is parsed JSON: compare it with the oracle's text parsed the same way.
            expected_parsed = [(run_id, ts, kind, path, None if data is None else
                                conn.execute("SELECT json(?)", (data,)).fetchone()[0])
                               for run_id, ts, kind, path, data in expected]
        finally:
            conn.close()
    assert view == expected
    stage_feed = [e for e in paged if e.kind.startswith("stage.")]
    assert [(e.run_id, e.ts, e.kind, e.path) for e in stage_feed] == [row[:4] for row in expected]
    import json
    assert [e.data for e in stage_feed] == [None if row[4] is None else json.loads(row[4])
                                             for row in expected_parsed]


async def test_a_migrated_journal_keeps_its_events_and_continues_their_ids(tmp_path: Path) -> None:
    """A version-6 journal opens at version 7 with the same feed (ids included), records and
    attempts; new events come after every old id."""
    path = tmp_path / "old.db"
    conn = _v6_journal(path)
    _v6_create_run(conn, "r", 1.0)
    result = ComponentResult("a", "echo", StageStatus.SUCCESS, output={"x": 1}, started_at=1.0,
                             finished_at=2.0)
    _v6_apply(conn, ("start", "r", "a", 1, False), 2.0)
    _v6_apply(conn, ("commit", "r", [Record.of_result("a", result)]), 3.0)
    _v6_apply(conn, ("start", "r", "b", 1, False), 4.0)
    old_feed = conn.execute("SELECT id, run_id, ts, kind, path, data FROM run_events ORDER BY id").fetchall()
    conn.close()

    journal = await Journal.open(path)
    try:
        migrated = [(e.id, e.run_id, e.ts, e.kind, e.path) for e in await journal.events("r")]
        assert migrated == [row[:5] for row in old_feed]
        snapshot = await journal.load_snapshot("r")
        assert snapshot.attempts == {"a": 1, "b": 1} and snapshot.results["a"].output == {"x": 1}

        await journal.run_store("r").commit([Record.of_result("b", result)])
        newest = (await journal.events("r"))[-1]
        assert (newest.kind, newest.path) == ("stage.completed", "b")
        assert newest.id > old_feed[-1][0]
        assert [e.id for e in await journal.events()] == sorted(e.id for e in await journal.events())
    finally:
        await journal.close()


async def test_event_ids_are_never_reused_after_the_newest_run_is_deleted(tmp_path: Path) -> None:
    """Deleting the run that holds the highest event ids (records and attempts) does not let a
    reopened journal hand those ids out again: a follower's cursor past them stays valid."""
    path = tmp_path / "journal.db"
    journal = await Journal.open(path)
    await journal.create_run("keep", make_pipeline(), {})
    await journal.create_run("gone", make_pipeline(), {})
    gone = journal.run_store("gone")
    await gone.mark_started("a", 1, durable=True)
    await gone.commit([Record.of_result("a", ComponentResult("a", "echo", StageStatus.SUCCESS))])
    cursor = await journal.last_event_id()
    await journal.set_run_status("gone", RunStatus.SUCCEEDED, expected=[RunStatus.PENDING])
    status_event = await journal.last_event_id()
    assert status_event > cursor
    # The status event is in run_event_log; make a stage event the newest one before deleting.
    await gone.mark_started("late", 1, durable=True)
    cursor = await journal.last_event_id()
    assert await journal.delete_runs(["gone"]) == ["gone"]
    await journal.close()

    journal = await Journal.open(path)
    try:
        await journal.run_store("keep").mark_started("b", 1, durable=True)
        fresh = await journal.events(after_id=cursor)
        assert [(e.kind, e.path) for e in fresh] == [("stage.started", "b")]
    finally:
        await journal.close()


async def test_the_version_1_journal_keeps_its_feed_and_resumes(tmp_path: Path) -> None:
    """The version-1 fixture, migrated to the latest version, lists its old events with their ids
    and continues a resumed run's events after them."""
    path = tmp_path / "journal.sqlite3"
    shutil.copy(V1_JOURNAL, path)
    raw = sqlite3.connect(path)
    old_ids = [row[0] for row in raw.execute("SELECT id FROM run_events ORDER BY id")]
    raw.close()

    journal = await Journal.open(path)
    try:
        assert [e.id for e in await journal.events(limit=10_000)] == old_ids
        await journal.run_store("legacy-catch").mark_started("tc/catch", 2, durable=True)
        newest = (await journal.events("legacy-catch"))[-1]
        assert (newest.kind, newest.path, newest.data) == ("stage.retry", "tc/catch", {"attempt": 2})
        assert newest.id > max(old_ids)
    finally:
        await journal.close()
