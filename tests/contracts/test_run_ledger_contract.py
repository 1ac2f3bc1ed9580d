"""One contract for every ``RunLedger`` (and the ``RunStore`` it hands out): memory and journal.

Written once, run against each implementation through the ``make_ledger`` fixture, like
APScheduler's data-store tests: a later store must pass it too. Record sequences are generated
by hypothesis and compared with a model simpler than either store (latest record per path wins,
highest attempt per path).
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowmasond.engine.checkpoint import MemoryRunLedger
from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import (ComponentResult, ErrorType, Record, RunLedger, RunStatus,
                                          StageStatus, UsageMetrics)
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import RunConflictError, RunNotFoundError
from flowmasond.journal import Journal
from flowmasond.journal.postgres import PgJournal
from pg_support import PgServer
from flowmasond.testing import pipeline, run_pipeline

LedgerFactory = Callable[[], Any]


@asynccontextmanager
async def _memory() -> AsyncIterator[RunLedger]:
    yield MemoryRunLedger()


@asynccontextmanager
async def _journal() -> AsyncIterator[RunLedger]:
    with tempfile.TemporaryDirectory(prefix="ledger-contract-") as folder:
        journal = await Journal.open(Path(folder) / "journal.sqlite3")
        try:
            yield journal
        finally:
            await journal.close()


def _postgres(server: PgServer, database: str) -> LedgerFactory:
    @asynccontextmanager
    async def opener() -> AsyncIterator[RunLedger]:
        # A fresh schema per ledger (hypothesis opens one per example): cheaper than a database.
        journal = await PgJournal.open(server.dsn(database, schema=server.create_schema(database)))
        try:
            yield journal
        finally:
            await journal.close()
    return opener


@pytest.fixture(params=["memory", "journal", "postgresql"])
def make_ledger(request: pytest.FixtureRequest) -> LedgerFactory:
    """Opens a fresh ledger of one implementation (an async context manager)."""
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        return _postgres(server, server.shared_database())
    return {"memory": _memory, "journal": _journal}[request.param]


PIPELINE = PipelineConfig.model_validate({"id": "contract", "stages": [{"id": "a", "component_type": "echo"}]})
PATHS = ["a", "b", "tc/x", "loop/0/step", "loop/1/step"]


def _result(path: str, status: StageStatus, value: int, handled: bool) -> ComponentResult:
    failed = status is StageStatus.FAILED
    return ComponentResult(
        stage_id=path.rsplit("/", 1)[-1], component_type="echo", status=status,
        output={"value": value} if status is StageStatus.SUCCESS else None,
        error="boom" if failed else None, error_type=ErrorType.COMPONENT if failed else None,
        usage=UsageMetrics(duration_ms=1.5), attempts=1, started_at=1000.0, finished_at=1001.0,
        handled=handled)


records = st.lists(st.one_of(
    st.builds(lambda p, s, v, h: Record.of_result(p, _result(p, s, v, h)),
              st.sampled_from(PATHS), st.sampled_from(list(StageStatus)), st.integers(0, 99), st.booleans()),
    st.builds(lambda p, v: Record.of_state(p, ControlFlowState.loop([v])),
              st.sampled_from(PATHS), st.integers(0, 99)),
), max_size=12)
batches = st.lists(records, min_size=1, max_size=4)
starts = st.lists(st.tuples(st.sampled_from(PATHS), st.integers(1, 4), st.booleans()), max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, starts=starts)
# Shrunk failure: a deferred start followed only by an empty commit was not yet in the journal.
@example(batches=[[]], starts=[("a", 1, False)])
def test_load_snapshot_returns_the_latest_record_per_path_and_the_highest_attempt(
        make_ledger: LedgerFactory, batches: list[list[Record]], starts: list[tuple[str, int, bool]]) -> None:
    """Whatever was committed comes back: latest result and decision per path, highest started attempt."""
    async def scenario() -> None:
        async with make_ledger() as ledger:
            await ledger.create_run("r", PIPELINE, {})
            store = ledger.run_store("r")
            for path, attempt, durable in starts:
                await store.mark_started(path, attempt, durable=durable)
            for batch in batches:
                await store.commit(batch)
            snapshot = await ledger.load_snapshot("r")

        results: dict[str, dict[str, Any]] = {}
        states: dict[str, ControlFlowState] = {}
        for record in (r for batch in batches for r in batch):
            if record.result is not None:
                results[record.path] = record.result.to_dict()
            else:
                assert record.state is not None
                states[record.path] = record.state
        attempts: dict[str, int] = {}
        for path, attempt, _ in starts:
            attempts[path] = max(attempts.get(path, 0), attempt)
        assert {p: r.to_dict() for p, r in snapshot.results.items()} == results
        assert snapshot.states == states
        assert snapshot.attempts == attempts
    asyncio.run(scenario())


async def test_a_new_run_is_pending_and_an_unknown_one_is_not_found(make_ledger: LedgerFactory) -> None:
    """create_run makes a pending run; reading, changing or committing to an unknown run raises RunNotFoundError."""
    async with make_ledger() as ledger:
        await ledger.create_run("r", PIPELINE, {"x": 1})
        assert await ledger.run_status("r") is RunStatus.PENDING
        with pytest.raises(RunNotFoundError):
            await ledger.run_status("ghost")
        with pytest.raises(RunNotFoundError):
            await ledger.set_run_status("ghost", RunStatus.RUNNING, expected=[RunStatus.PENDING])
        with pytest.raises(RunNotFoundError):
            await ledger.run_store("ghost").commit([Record.of_state("a", ControlFlowState.loop([]))])


async def test_a_status_change_applies_only_from_an_expected_status(make_ledger: LedgerFactory) -> None:
    """set_run_status returns the status it left; from another status it raises RunConflictError, changing nothing."""
    async with make_ledger() as ledger:
        await ledger.create_run("r", PIPELINE, {})
        assert await ledger.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.PENDING]) is RunStatus.PENDING
        with pytest.raises(RunConflictError) as caught:
            await ledger.set_run_status("r", RunStatus.CANCELLED, expected=[RunStatus.PENDING])
        assert caught.value.context["status"] == "running"
        assert await ledger.run_status("r") is RunStatus.RUNNING


@pytest.mark.parametrize("contenders", [2, 5])
async def test_of_racing_status_changes_from_one_status_exactly_one_wins(
        make_ledger: LedgerFactory, contenders: int) -> None:
    """Changes started together from the same expected status: one applies, every other one conflicts."""
    targets = [RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.SUCCEEDED, RunStatus.CANCELLED]
    async with make_ledger() as ledger:
        await ledger.create_run("r", PIPELINE, {})
        await ledger.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.PENDING])
        outcomes = await asyncio.gather(
            *(ledger.set_run_status("r", targets[i], expected=[RunStatus.RUNNING]) for i in range(contenders)),
            return_exceptions=True)
        winners = [i for i, o in enumerate(outcomes) if o is RunStatus.RUNNING]
        assert len(winners) == 1
        assert all(isinstance(o, RunConflictError) for i, o in enumerate(outcomes) if i != winners[0])
        assert await ledger.run_status("r") is targets[winners[0]]


async def test_of_racing_resume_claims_exactly_one_wins(make_ledger: LedgerFactory) -> None:
    """Two record_resume claims of a failed run: one moves it to pending and counts 1, the other conflicts."""
    async with make_ledger() as ledger:
        await ledger.create_run("r", PIPELINE, {})
        await ledger.set_run_status("r", RunStatus.RUNNING, expected=[RunStatus.PENDING])
        await ledger.set_run_status("r", RunStatus.FAILED, expected=[RunStatus.RUNNING])
        outcomes = await asyncio.gather(ledger.record_resume("r", expected=[RunStatus.FAILED]),
                                        ledger.record_resume("r", expected=[RunStatus.FAILED]),
                                        return_exceptions=True)
        assert sorted(repr(o) if isinstance(o, int) else type(o).__name__ for o in outcomes) == [
            "1", "RunConflictError"]
        assert await ledger.run_status("r") is RunStatus.PENDING


async def test_for_resume_drops_unhandled_failures_and_keeps_the_rest(make_ledger: LedgerFactory) -> None:
    """The resume view of a restored snapshot keeps successes and handled failures, not unhandled ones."""
    async with make_ledger() as ledger:
        await ledger.create_run("r", PIPELINE, {})
        await ledger.run_store("r").commit([
            Record.of_result("a", _result("a", StageStatus.SUCCESS, 1, False)),
            Record.of_result("b", _result("b", StageStatus.FAILED, 0, True)),
            Record.of_result("tc/x", _result("tc/x", StageStatus.FAILED, 0, False)),
        ])
        resumed = (await ledger.load_snapshot("r")).for_resume()
        assert sorted(resumed.results) == ["a", "b"]


async def test_attempts_count_across_a_resume(make_ledger: LedgerFactory, tmp_path: Path) -> None:
    """A stage that failed, then succeeded on resume, ran attempts 1 and 2: its result says 2, its snapshot 2."""
    definition = pipeline({"id": "contract", "stages": [
        {"id": "first", "component_type": "record", "config": {"ledger": str(tmp_path / "ledger")}},
        {"id": "flaky", "component_type": "flaky", "config": {"fail_attempts": 1}, "depends_on": ["first"]},
    ]})
    async with make_ledger() as ledger:
        await ledger.create_run("r", definition, {})
        failed = await run_pipeline(definition, run_id="r", store=ledger.run_store("r"))
        resumed = await run_pipeline(definition, run_id="r", store=ledger.run_store("r"),
                                     snapshot=(await ledger.load_snapshot("r")).for_resume())
        snapshot = await ledger.load_snapshot("r")

    assert (failed.status, resumed.status) == (RunStatus.FAILED, RunStatus.SUCCEEDED)
    assert resumed.results["flaky"].attempts == 2 and resumed.results["flaky"].output == {"attempt": 2}
    assert snapshot.results["flaky"].attempts == 2 and snapshot.attempts["flaky"] == 2
    assert snapshot.results["first"].attempts == 1
