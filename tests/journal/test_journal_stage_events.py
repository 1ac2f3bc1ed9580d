"""Stage events come from the rows they describe: an event can never be missing or disagree with its record."""

from __future__ import annotations

import pytest
from journal_helpers import make_pipeline, make_result

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import Record, StageStatus
from flowmasond.journal import Journal

# Behaviour, not SQLite internals: these tests run on the PostgreSQL journal too.
ALSO_ON_POSTGRESQL = True


async def test_a_result_event_carries_the_documented_summary(journal: Journal) -> None:
    """stage.failed holds stage_id, component_type, status, attempts, error, error_type, handled
    (a JSON boolean) and duration_ms, and never the output."""
    await journal.create_run("r", make_pipeline(), {})
    result = make_result("a", status=StageStatus.FAILED, handled=True, attempts=3)

    await journal.run_store("r").commit([Record.of_result("a", result)])

    event = (await journal.events("r"))[-1]
    assert (event.kind, event.path) == ("stage.failed", "a")
    assert event.data == {
        "stage_id": "a", "component_type": "echo", "status": "failed", "attempts": 3,
        "error": "boom", "error_type": result.error_type.value if result.error_type else None,
        "handled": True,
        "duration_ms": pytest.approx((result.finished_at - result.started_at) * 1000.0)}


@pytest.mark.parametrize(("status", "kind"), [(StageStatus.SUCCESS, "stage.completed"),
                                              (StageStatus.SKIPPED, "stage.skipped")])
async def test_each_result_status_has_its_event_kind(journal: Journal, status: StageStatus,
                                                     kind: str) -> None:
    """success and skipped results log stage.completed and stage.skipped, handled false."""
    await journal.create_run("r", make_pipeline(), {})

    await journal.run_store("r").commit([Record.of_result("a", make_result("a", status=status))])

    event = (await journal.events("r"))[-1]
    assert event.kind == kind and event.data is not None
    assert event.data["status"] == status.value and event.data["handled"] is False


async def test_a_decision_event_holds_the_decision_itself(journal: Journal) -> None:
    """stage.decision's data is the control-flow state as committed (its versioned JSON form)."""
    await journal.create_run("r", make_pipeline(), {})
    state = ControlFlowState.branch_taken("router", route="b", selected=["b1"], skipped=["c", "d"])

    await journal.run_store("r").commit([Record.of_state("route", state)])

    event = (await journal.events("r"))[-1]
    assert (event.kind, event.path) == ("stage.decision", "route")
    assert event.data == {"v": 2, "kind": "router", "route": "b", "selected": ["b1"], "skipped": ["c", "d"]}
    assert ControlFlowState.from_json(event.data) == state


async def test_an_attempt_start_recorded_twice_logs_one_event(journal: Journal) -> None:
    """Starting the same attempt again (a retried non-durable write) adds no second event."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")

    await store.mark_started("a", 1, durable=True)
    await store.mark_started("a", 1, durable=True)

    kinds = [(e.kind, e.path, e.data) for e in await journal.events("r")]
    assert kinds.count(("stage.started", "a", {"attempt": 1})) == 1
