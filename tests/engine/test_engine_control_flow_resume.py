"""Control flow across a stop: trycatch phases, propagated failures, finally on return and cancel (issue 11)."""

from __future__ import annotations

import asyncio
from typing import Any

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.interfaces import RunStatus, StageStatus
from flowmasond.testing import EventRecorder, read_ledger


def rec(stage_id: str, ledger: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    """A `record` stage appending to ``ledger``."""
    return {"id": stage_id, "component": "record", "config": {"ledger": ledger, "value": value}, **extra}


def ran(ledger: str) -> list[str]:
    """Stage paths that really executed, in order."""
    return [entry["path"] for entry in read_ledger(ledger)]


async def test_catch_phase_resume_sees_outputs_of_stages_nested_inside_the_try(run, ledger: str) -> None:
    """A trycatch resumed in its catch phase still sees what a stage nested in its try (under a
    conditional) produced, so the catch stage succeeds on resume instead of failing every time."""
    definition = {"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["gate", "boom"], "catch_stages": ["handler", "use"], "error_scope": "continue"}},
        {"id": "gate", "component": "conditional",
         "config": {"condition": True, "true_branch_stages": ["inner"], "false_branch_stages": []}},
        rec("inner", ledger, "seen"),
        {"id": "boom", "component": "fail", "depends_on": ["gate"], "config": {"message": "try failed"}},
        {"id": "handler", "component": "fail", "config": {"fail_attempts": 1, "message": "catch failed once"}},
        rec("use", ledger, "{{upstream.inner}}", depends_on=["handler"]),
    ]}
    store = MemoryRunStore()
    first = await run(definition, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED
    second = await run(definition, store=store, run_id="run-1", snapshot=store.snapshot.for_resume())

    assert second.status is RunStatus.SUCCEEDED, second.error
    assert ran(ledger) == ["tc/gate/inner", "tc/use"]
    assert read_ledger(ledger)[-1]["value"] == "seen"


async def test_failure_propagated_by_a_trycatch_is_retried_on_resume(run, ledger: str) -> None:
    """With error_scope=propagate the try stage's failure is not handled: a resume runs it again
    (and, once it succeeds, the trycatch and the run succeed)."""
    definition = {"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["work"], "catch_stages": ["handler"], "error_scope": "propagate"}},
        {"id": "work", "component": "fail", "config": {"fail_attempts": 1, "message": "transient"}},
        rec("handler", ledger, "caught"),
    ]}
    store = MemoryRunStore()
    first = await run(definition, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED
    assert first.results["tc/work"].handled is False
    recorder = EventRecorder()
    second = await run(definition, store=store, run_id="run-1", snapshot=store.snapshot.for_resume(),
                       hooks=recorder)

    assert second.status is RunStatus.SUCCEEDED, second.error
    assert recorder.attempts("tc/work") == [2]
    assert second.results["tc/work"].output == {"attempt": 2}
    assert second.results["tc"].output["status"] == "success"


async def test_finally_runs_when_a_return_fires_inside_the_try(run, ledger: str) -> None:
    """A return inside a trycatch's try ends the run, but the trycatch's finally stages still run."""
    outcome = await run({"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["ret"], "catch_stages": ["handler"], "finally_stages": ["cleanup"]}},
        {"id": "ret", "component": "return", "config": {"condition": True, "return_value": "early"}},
        rec("handler", ledger, "caught"),
        rec("cleanup", ledger, "cleaned"),
        rec("after", ledger, "after", depends_on=["tc"]),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.output == "early"
    assert ran(ledger) == ["tc/cleanup"]
    assert outcome.results["tc/cleanup"].status is StageStatus.SUCCESS


async def test_finally_runs_when_the_run_is_cancelled_inside_the_try(run, ledger: str,
                                                                   recorder: EventRecorder) -> None:
    """Cancelling a run while a try stage is in flight still runs the trycatch's finally stages;
    the run ends cancelled."""
    token = CancellationToken(grace_s=0.05)
    task = asyncio.ensure_future(run({"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["slow"], "catch_stages": ["handler"], "finally_stages": ["cleanup"]}},
        {"id": "slow", "component": "counter", "config": {"hold_s": 30}},
        rec("handler", ledger, "caught"),
        rec("cleanup", ledger, "cleaned"),
    ]}, cancellation=token))
    await recorder.wait_for("start", "tc/slow")
    token.cancel("cancelled by request")
    outcome = await asyncio.wait_for(task, timeout=10)

    assert outcome.status is RunStatus.CANCELLED
    assert ran(ledger) == ["tc/cleanup"]


def _catch_reads_a_try_stage_that_never_ran(ledger: str, handler_fails_once: bool) -> dict[str, Any]:
    catch = ["handler", "use"] if handler_fails_once else ["use"]
    stages = [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["boom", "never"], "catch_stages": catch, "error_scope": "continue"}},
        {"id": "boom", "component": "fail", "config": {"message": "try failed"}},
        rec("never", ledger, "n", depends_on=["boom"]),
        rec("use", ledger, {"never": "{{upstream.never}}"},
            **({"depends_on": ["handler"]} if handler_fails_once else {})),
    ]
    if handler_fails_once:
        stages.append({"id": "handler", "component": "fail", "config": {"fail_attempts": 1, "message": "once"}})
    return {"stages": stages}


async def test_catch_stage_sees_a_try_stage_that_never_ran_as_none(run, ledger: str) -> None:
    """A catch stage reading a try stage that the failure kept from running sees None (as after a
    resume in the catch phase), not a template error."""
    outcome = await run(_catch_reads_a_try_stage_that_never_ran(ledger, handler_fails_once=False))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert [e["value"] for e in read_ledger(ledger)] == [{"never": None}]


async def test_catch_stage_resumed_in_its_catch_phase_sees_the_same_none(run, ledger: str) -> None:
    """Resumed in its catch phase, the catch stage sees the same None for the try stage that never ran."""
    definition = _catch_reads_a_try_stage_that_never_ran(ledger, handler_fails_once=True)
    store = MemoryRunStore()
    first = await run(definition, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED
    resumed = await run(definition, store=store, run_id="run-1", snapshot=store.snapshot.for_resume())

    assert resumed.status is RunStatus.SUCCEEDED, resumed.error
    assert [e["value"] for e in read_ledger(ledger)] == [{"never": None}]


async def test_finally_waits_for_the_resumed_run_when_the_daemon_stops(run, ledger: str,
                                                                      recorder: EventRecorder) -> None:
    """A stop that interrupts the run to resume it later (daemon shutdown) does not run finally
    stages early: the resumed run runs them, after its try stages."""
    definition = {"stages": [
        {"id": "tc", "component": "trycatch", "config": {"try_stages": ["slow"], "finally_stages": ["cleanup"]}},
        {"id": "slow", "component": "counter", "config": {"hold_s": "{{input.hold_s}}"}},
        rec("cleanup", ledger, "cleaned"),
    ]}
    store = MemoryRunStore()
    token = CancellationToken(grace_s=0.05)
    task = asyncio.ensure_future(run(definition, {"hold_s": 30}, store=store, run_id="run-1", cancellation=token))
    await recorder.wait_for("start", "tc/slow")
    token.cancel("daemon shutting down", interrupt=True)
    stopped = await asyncio.wait_for(task, timeout=10)
    assert stopped.status is RunStatus.CANCELLED
    assert ran(ledger) == []

    resumed = await run(definition, {"hold_s": 0}, store=store, run_id="run-1",
                        snapshot=store.snapshot.for_resume(), hooks=EventRecorder())

    assert resumed.status is RunStatus.SUCCEEDED, resumed.error
    assert ran(ledger) == ["tc/cleanup"]


async def test_a_catch_return_withdrawn_by_a_successful_retry_of_the_try_stays_withdrawn(
        run, ledger: str) -> None:
    """A propagated failure's catch fired a return; a resume ran the try again and it succeeded, so
    that return no longer stands. A later resume of the same run must not bring it back: the stage
    after the trycatch runs and the run ends with its own output, as if the try had succeeded at once."""
    definition = {"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["work"], "catch_stages": ["ret"], "error_scope": "propagate"}},
        {"id": "work", "component": "fail", "config": {"fail_attempts": 1, "message": "transient"}},
        {"id": "ret", "component": "return", "config": {"condition": True, "return_value": "from catch"}},
        {"id": "after", "component": "fail", "depends_on": ["tc"],
         "config": {"fail_attempts": 1, "message": "after failed once"}},
    ]}
    store = MemoryRunStore()
    first = await run(definition, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED
    assert store.snapshot.states["tc/ret"].returned  # the catch's return fired and was journaled
    second = await run(definition, store=store, run_id="run-1", snapshot=store.snapshot.for_resume())
    assert second.status is RunStatus.FAILED, "the stage after the trycatch fails once"
    assert second.results["tc"].output["status"] == "success"
    third = await run(definition, store=store, run_id="run-1", snapshot=store.snapshot.for_resume())

    assert third.status is RunStatus.SUCCEEDED, third.error
    assert third.results["after"].output == {"attempt": 2}
    assert not store.snapshot.states["tc/ret"].returned
