"""Run lifecycle, pinning, queries, the event feed and scheduler state."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from journal_helpers import FakeClock, make_pipeline, make_result

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import MIXED, Record, RunStatus
from flowmasond.errors import JournalError, RunNotFoundError, StageError
from flowmasond.journal import EventRow, Journal

# Behaviour, not SQLite internals: these tests run on the PostgreSQL journal too.
ALSO_ON_POSTGRESQL = True
SQLITE_ONLY = {"test_run_is_pinned_to_its_exact_definition"}  # read the SQLite file directly

Opener = Callable[..., Awaitable[Journal]]


async def test_created_run_reads_back_as_created(open_journal: Opener, clock: FakeClock) -> None:
    """create_run's row equals what get_run reads from the file."""
    journal = await open_journal(clock=clock)
    created = await journal.create_run("r1", make_pipeline(), {"x": [1, 2]},
                                       schedule_id="nightly", fire_time=123.0)

    fetched = await journal.get_run("r1")

    assert fetched == created
    assert fetched.status is RunStatus.PENDING and fetched.created_at == clock.now
    assert fetched.inputs == {"x": [1, 2]} and fetched.fire_time == 123.0


async def test_status_changes_keep_start_and_clear_finish_on_resume(
        open_journal: Opener, clock: FakeClock) -> None:
    """started_at is the first start; finished_at is set when finished and cleared on resume."""
    journal = await open_journal(clock=clock)
    await journal.create_run("r", make_pipeline(), {})
    await journal.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.PENDING])
    first_start = clock.now
    clock.advance(10)
    error = StageError("stage s1 failed", stage="s1")
    await journal.set_run_status("r", RunStatus.FAILED, expected=[RunStatus.RUNNING], error=error)
    failed = await journal.get_run("r")
    clock.advance(10)
    await journal.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.FAILED])
    resumed = await journal.get_run("r")
    clock.advance(10)
    await journal.set_run_status("r", RunStatus.SUCCEEDED, expected=[RunStatus.RUNNING],
                                 output={"answer": 42})
    done = await journal.get_run("r")

    assert failed.finished_at == first_start + 10 and failed.error == error.to_dict()
    assert resumed.started_at == first_start and resumed.finished_at is None
    assert resumed.error is None
    assert done.output == {"answer": 42} and done.finished_at == first_start + 30


async def test_a_run_created_started_is_the_run_created_then_marked_running(journal: Journal) -> None:
    """create_run(start=True) leaves the row and events that create_run then set_run_status(RUNNING)
    leave, in one transaction instead of two."""
    pipeline = make_pipeline()
    transactions = journal.stats().transactions
    await journal.create_run("one", pipeline, {"x": 1}, schedule_id="s", fire_time=5.0, breakpoints=["s1"],
                             start=True)
    one_commit = journal.stats().transactions - transactions
    await journal.create_run("two", pipeline, {"x": 1}, schedule_id="s", fire_time=5.0, breakpoints=["s1"])
    await journal.set_run_status("two", RunStatus.RUNNING, expected=[RunStatus.PENDING])

    started, oracle = await journal.get_run("one"), await journal.get_run("two")
    events = await journal.events("one")
    oracle_events = await journal.events("two")

    assert started.status is RunStatus.RUNNING and started.started_at == started.created_at
    assert dataclasses.replace(started, run_id="two", created_at=oracle.created_at,
                               started_at=oracle.started_at) == oracle
    assert [(e.kind, e.path, e.data) for e in events] == [(e.kind, e.path, e.data) for e in oracle_events]
    assert {e.ts for e in events} == {started.created_at}
    assert one_commit == 1


async def test_a_resume_claimed_started_is_the_claim_then_marked_running(journal: Journal) -> None:
    """record_resume(start=True) leaves the row and events that record_resume then
    set_run_status(RUNNING) leave, in one transaction instead of two."""
    pipeline = make_pipeline()
    for run_id in ("one", "two"):
        await journal.create_run(run_id, pipeline, {"x": 1}, start=True)
        await journal.set_run_status(run_id, RunStatus.FAILED, expected=[RunStatus.RUNNING],
                                     error={"code": "boom", "message": "failed"})
    transactions = journal.stats().transactions
    count = await journal.record_resume("one", expected=[RunStatus.FAILED], start=True)
    one_commit = journal.stats().transactions - transactions
    oracle_count = await journal.record_resume("two", expected=[RunStatus.FAILED])
    await journal.set_run_status("two", RunStatus.RUNNING, expected=[RunStatus.PENDING])

    resumed, oracle = await journal.get_run("one"), await journal.get_run("two")
    events = [(e.kind, e.path, e.data) for e in await journal.events("one")]
    oracle_events = [(e.kind, e.path, e.data) for e in await journal.events("two")]

    assert resumed.status is RunStatus.RUNNING and count == oracle_count == 1
    assert dataclasses.replace(resumed, run_id="two", created_at=oracle.created_at,
                               started_at=oracle.started_at) == oracle
    assert events == oracle_events
    assert one_commit == 1


async def test_a_resume_claimed_started_loses_a_race_like_any_claim(journal: Journal) -> None:
    """Of two claims with start=True, one wins; the other gets RunConflictError and changes nothing."""
    await journal.create_run("r", make_pipeline(), {}, start=True)
    await journal.set_run_status("r", RunStatus.FAILED, expected=[RunStatus.RUNNING])
    results = await asyncio.gather(
        journal.record_resume("r", expected=[RunStatus.FAILED], start=True),
        journal.record_resume("r", expected=[RunStatus.FAILED], start=True), return_exceptions=True)

    assert sorted(type(r).__name__ for r in results) == ["RunConflictError", "int"]
    assert (await journal.get_run("r")).resumed_count == 1


async def test_active_runs_of_a_schedule_are_its_pending_running_and_paused_runs_oldest_first(
        journal: Journal, clock: FakeClock) -> None:
    """Exactly the schedule's runs in pending, running or paused (not another schedule's or
    pipeline's, not finished or interrupted ones), oldest first: list_runs with the same filters,
    reversed, is the oracle."""
    pipeline, other = make_pipeline(), make_pipeline("other")
    statuses = [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.SUCCEEDED,
                RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.RUNNING]
    for i, status in enumerate(statuses):
        clock.advance(1.0)
        await journal.create_run(f"r{i}", pipeline, {}, schedule_id="nightly", status=status)
    await journal.create_run("elsewhere", other, {}, schedule_id="nightly", status=RunStatus.RUNNING)
    await journal.create_run("manual", pipeline, {}, status=RunStatus.RUNNING)
    await journal.create_run("hourly", pipeline, {}, schedule_id="hourly", status=RunStatus.PENDING)
    oracle = await journal.list_runs(status=[RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED],
                                     pipeline_id=pipeline.id, schedule_id="nightly")

    active = await journal.active_runs_of_schedule(pipeline.id, "nightly")

    assert active == [(row.run_id, row.status) for row in reversed(oracle)]
    assert [run_id for run_id, _ in active] == ["r0", "r1", "r2", "r6"]


async def test_a_run_created_started_answers_as_stored(open_journal: Opener, clock: FakeClock) -> None:
    """create_run(start=True) returns the row get_run reads back."""
    journal = await open_journal(clock=clock)
    created = await journal.create_run("r", make_pipeline(), {"x": [1]}, start=True)

    assert created == await journal.get_run("r")


async def test_a_started_run_is_created_pending_only(journal: Journal) -> None:
    """start=True with another status than pending is refused before anything is written."""
    with pytest.raises(ValueError):
        await journal.create_run("r", make_pipeline(), {}, status=RunStatus.FAILED, start=True)
    with pytest.raises(RunNotFoundError):
        await journal.get_run("r")


async def test_status_of_unknown_run_is_run_not_found(journal: Journal) -> None:
    """set_run_status on a missing run raises RunNotFoundError."""
    with pytest.raises(RunNotFoundError):
        await journal.set_run_status("ghost", RunStatus.RUNNING, expected=[RunStatus.PENDING])


async def test_duplicate_run_id_is_refused(journal: Journal) -> None:
    """Creating a run id twice raises JournalError and keeps the first run."""
    await journal.create_run("r", make_pipeline("a"), {})
    with pytest.raises(JournalError):
        await journal.create_run("r", make_pipeline("b"), {})
    assert (await journal.get_run("r")).pipeline_id == "a"


async def test_status_events_report_previous_status(journal: Journal) -> None:
    """Each status change adds a run.status event naming the new and previous status."""
    await journal.create_run("r", make_pipeline(), {})
    await journal.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.PENDING])
    await journal.set_run_status("r", RunStatus.CANCELLED, expected=[RunStatus.RUNNING])

    statuses = [e.data for e in await journal.events("r") if e.kind == "run.status"]

    assert [(d["status"], d["previous"]) for d in statuses if d] == [
        ("running", "pending"), ("cancelled", "running")]


async def test_list_runs_filters_newest_first(open_journal: Opener, clock: FakeClock) -> None:
    """list_runs orders newest first and filters by status and pipeline."""
    journal = await open_journal(clock=clock)
    for i, pipeline_id in enumerate(["a", "b", "a", "a"]):
        clock.advance(1)
        await journal.create_run(f"r{i}", make_pipeline(pipeline_id), {})
    await journal.set_run_status("r2", RunStatus.RUNNING, expected=[RunStatus.PENDING])

    assert [r.run_id for r in await journal.list_runs()] == ["r3", "r2", "r1", "r0"]
    assert [r.run_id for r in await journal.list_runs(pipeline_id="a", limit=2)] == ["r3", "r2"]
    assert [r.run_id for r in await journal.list_runs(status=RunStatus.RUNNING)] == ["r2"]
    pending_or_running = await journal.list_runs(status=[RunStatus.PENDING, RunStatus.RUNNING],
                                                 pipeline_id="b")
    assert [r.run_id for r in pending_or_running] == ["r1"]


async def test_child_runs_name_their_parent(journal: Journal) -> None:
    """Subpipeline runs are found from their parent, with the parent's stage path."""
    await journal.create_run("parent", make_pipeline(), {})
    await journal.create_run("child", make_pipeline("sub"), {}, parent_run_id="parent",
                             parent_path="loop/2/sub")

    children = await journal.child_runs("parent")

    assert [(c.run_id, c.parent_path) for c in children] == [("child", "loop/2/sub")]


async def test_run_is_pinned_to_its_exact_definition(journal: Journal) -> None:
    """pinned_definition returns the definition the run started with, by content hash."""
    pipeline = make_pipeline(stages=3)
    run = await journal.create_run("r", pipeline, {})
    await journal.create_run("r2", pipeline, {})

    assert run.pipeline_hash == pipeline.content_hash()
    assert (await journal.pinned_definition("r")).canonical_json() == pipeline.canonical_json()
    conn = sqlite3.connect(journal.path)
    try:
        assert conn.execute("SELECT count(*) FROM pipelines_pinned").fetchone()[0] == 1
    finally:
        conn.close()


async def test_resume_can_repin_explicitly(journal: Journal) -> None:
    """record_resume counts resumes and, when given a definition, re-pins the run to it."""
    old, new = make_pipeline(stages=2), make_pipeline(stages=3)
    await journal.create_run("r", old, {})

    assert await journal.record_resume("r", expected=[RunStatus.PENDING]) == 1
    assert (await journal.get_run("r")).pipeline_hash == old.content_hash()
    assert await journal.record_resume("r", expected=[RunStatus.PENDING], pipeline=new) == 2

    assert len((await journal.pinned_definition("r")).stages) == 3
    resumed = [e.data for e in await journal.events("r") if e.kind == "run.resumed"]
    assert resumed[-1] == {"resumed_count": 2, "pipeline_hash": new.content_hash(),
                           "previous_hash": old.content_hash()}


async def test_recovery_attempts_count_up(journal: Journal) -> None:
    """increment_recovery_attempts returns the new count and persists it."""
    await journal.create_run("r", make_pipeline(), {})

    assert [await journal.increment_recovery_attempts("r") for _ in range(3)] == [1, 2, 3]
    assert (await journal.get_run("r")).recovery_attempts == 3
    with pytest.raises(RunNotFoundError):
        await journal.increment_recovery_attempts("ghost")


async def test_usage_is_summed_over_committed_results(journal: Journal) -> None:
    """The run's usage is the sum of its committed results' usage, merged like UsageMetrics."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    first, second = make_result("a", tokens=10), make_result("b", tokens=5)
    await store.commit([Record.of_result("a", first)])
    await store.commit([Record.of_result("b", second), Record.of_state("b", ControlFlowState.loop([1]))])
    same_model = (await journal.get_run("r")).usage
    third = make_result("c", tokens=1)
    third.usage.model = "m2"
    await store.commit([Record.of_result("c", third)])

    usage = (await journal.get_run("r")).usage

    assert same_model == first.usage + second.usage
    assert usage == first.usage + second.usage + third.usage
    assert (usage.input_tokens, usage.model, usage.provider) == (16, MIXED, "local")


async def test_follow_yields_events_as_they_commit(journal: Journal) -> None:
    """follow() returns existing events, then each new one once it is committed."""
    await journal.create_run("r", make_pipeline(), {})
    seen: list[EventRow] = []

    async def follower() -> None:
        async for event in journal.follow("r"):
            seen.append(event)
            if event.kind == "stage.completed":
                return

    task = asyncio.create_task(follower())
    await journal.run_store("r").commit([Record.of_result("a", make_result("a"))])
    await asyncio.wait_for(task, timeout=5)

    assert [e.kind for e in seen] == ["run.created", "stage.completed"]
    assert seen[0].id < seen[1].id == await journal.last_event_id()


async def test_follow_ends_when_the_journal_closes(db_path: Path) -> None:
    """A follower waiting for events finishes when the journal is closed."""
    journal = await Journal.open(db_path)
    seen: list[str] = []

    async def follower() -> None:
        async for event in journal.follow():
            seen.append(event.kind)

    task = asyncio.create_task(follower())
    await asyncio.sleep(0)
    await journal.close()
    await asyncio.wait_for(task, timeout=5)
    assert seen == []


async def test_schedule_fire_is_recorded_once(journal: Journal) -> None:
    """record_fire is True for a new fire and False for a repeat; the latest time is kept."""
    assert await journal.record_fire("p", "hourly", 3600.0, run_id="r1") is True
    assert await journal.record_fire("p", "hourly", 3600.0, run_id="r2") is False
    assert await journal.record_fire("p", "hourly", 7200.0) is True

    assert await journal.last_fire_time("p", "hourly") == 7200.0
    assert await journal.last_fire_time("p", "never") is None


async def test_schedule_pause_persists_across_reopen(db_path: Path) -> None:
    """A paused schedule is still paused after the journal is reopened; resuming clears it."""
    journal = await Journal.open(db_path)
    await journal.set_schedule_paused("p", "a", True)
    await journal.set_schedule_paused("p", "b", True)
    await journal.set_schedule_paused("p", "b", False)
    await journal.close()

    reopened = await Journal.open(db_path)
    try:
        assert await reopened.paused_schedules() == {("p", "a")}
    finally:
        await reopened.close()
