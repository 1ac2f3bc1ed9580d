"""Resume from a MemoryRunStore snapshot: committed work is never repeated, failed work runs again."""

from __future__ import annotations

from typing import Any

from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.interfaces import ComponentResult, RunSnapshot, RunStatus, StageStatus
from flowmasond.testing import EventRecorder, read_ledger


def rec(stage_id: str, ledger: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    """A `record` stage appending to ``ledger``."""
    return {"id": stage_id, "component": "record", "config": {"ledger": ledger, "value": value}, **extra}


def ran(ledger: str) -> list[str]:
    """Stage paths that really executed, in order."""
    return [entry["path"] for entry in read_ledger(ledger)]


async def _run_then_resume(run, definition: dict[str, Any], inputs: dict[str, Any] | None = None,
                           **kwargs: Any) -> tuple[Any, Any, MemoryRunStore, EventRecorder]:
    """Run ``definition`` (expected to fail), then resume it from the store's snapshot."""
    store = MemoryRunStore()
    first = await run(definition, inputs, store=store, run_id="run-1", **kwargs)
    assert first.status is RunStatus.FAILED, first
    second_recorder = EventRecorder()
    second = await run(definition, inputs, store=store, run_id="run-1", snapshot=store.snapshot.for_resume(),
                       hooks=second_recorder, **kwargs)
    return first, second, store, second_recorder


async def test_resume_skips_committed_stages_and_retries_the_failed_one(run, ledger: str) -> None:
    """After a failure at the 3rd stage, resume does not rerun stages 1-2 and reruns the 3rd as attempt 2."""
    definition = {"stages": [
        rec("one", ledger, 1),
        rec("two", ledger, "{{upstream.one}}", depends_on=["one"]),
        {"id": "three", "component": "fail", "depends_on": ["two"], "config": {"fail_attempts": 1}},
        rec("four", ledger, {"two": "{{upstream.two}}", "three": "{{upstream.three.attempt}}"},
            depends_on=["three"]),
    ]}
    first, second, _, recorder = await _run_then_resume(run, definition)

    assert first.failed_path == "three"
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert ran(ledger) == ["one", "two", "four"]
    assert recorder.paths("start") == ["three", "four"]
    assert recorder.attempts("three") == [2]
    assert second.output == {"two": 1, "three": 2}


async def test_resume_does_not_repeat_committed_foreach_iterations(run, ledger: str) -> None:
    """Iterations committed before a failure are not run again; the failed iteration resumes where it broke."""
    definition = {"stages": [
        {"id": "loop", "component": "foreach", "config": {"items": [0, 0, 1, 0], "loop_stages": ["mark", "check"]}},
        rec("mark", ledger, "{{context.index}}"),
        {"id": "check", "component": "fail", "depends_on": ["mark"], "config": {"fail_attempts": "{{context.item}}"}},
    ]}
    first, second, _, recorder = await _run_then_resume(run, definition)

    assert first.failed_path == "loop"
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert ran(ledger) == ["loop/0/mark", "loop/1/mark", "loop/2/mark", "loop/3/mark"]
    assert recorder.attempts("loop/2/check") == [2]
    assert "loop/0/check" not in recorder.paths("start")
    assert [r["attempt"] for r in second.output["results"]] == [1, 1, 2, 1]


async def test_resume_in_catch_phase_does_not_rerun_the_try_stages(run, ledger: str) -> None:
    """A trycatch whose catch phase was committed resumes in catch: try stages and committed finally never rerun."""
    definition = {"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["work", "boom"], "catch_stages": ["handler"], "finally_stages": ["cleanup"],
                    "error_scope": "continue"}},
        rec("work", ledger, "w"),
        {"id": "boom", "component": "fail", "depends_on": ["work"], "config": {"message": "try failed"}},
        {"id": "handler", "component": "fail", "config": {"fail_attempts": 1, "message": "catch failed once"}},
        rec("cleanup", ledger, "c"),
    ]}
    first, second, _, recorder = await _run_then_resume(run, definition)

    assert first.failed_path == "tc"
    assert "catch failed once" in first.error["message"]
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert ran(ledger) == ["tc/work", "tc/cleanup"]
    assert "tc/boom" not in recorder.paths("start")
    assert recorder.attempts("tc/handler") == [2]
    assert second.results["tc"].output["status"] == "caught"
    assert "try failed" in second.results["tc"].output["error"]


async def test_resume_after_a_committed_return_ends_with_the_same_value(run, ledger: str) -> None:
    """A run whose return was committed resumes straight to its end, with the committed return value."""
    definition = {"stages": [
        {"id": "ret", "component": "return", "config": {"return_value": {"token": "{{context.run_id}}-{{input.v}}"}}},
        {"id": "boom", "component": "fail", "config": {"message": "sibling failed"}},
        rec("later", ledger, depends_on=["ret", "boom"]),
    ]}
    first, second, _, recorder = await _run_then_resume(run, definition, {"v": 1})

    assert first.returned is True
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert second.returned is True
    assert second.output == {"token": "run-1-1"}
    assert recorder.paths("start") == []
    assert ran(ledger) == []


async def test_resume_with_changed_inputs_keeps_the_committed_return_value(run) -> None:
    """The committed return value is replayed, not recomputed from the resumed run's inputs."""
    definition = {"stages": [
        {"id": "ret", "component": "return", "config": {"return_value": "{{input.v}}"}},
        {"id": "boom", "component": "fail"},
    ]}
    store = MemoryRunStore()
    first = await run(definition, {"v": "old"}, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED
    second = await run(definition, {"v": "new"}, store=store, run_id="run-1", snapshot=store.snapshot.for_resume())

    assert second.status is RunStatus.SUCCEEDED, second.error
    assert second.output == "old"


async def test_unsafe_stage_in_flight_interrupts_the_resumed_run(run, ledger: str) -> None:
    """A not-safe-to-repeat stage that started but never finished stops the resume as INTERRUPTED."""
    definition = {"stages": [
        rec("before", ledger, "b"),
        {"id": "charge", "component": "unsafe_record", "depends_on": ["before"],
         "config": {"ledger": ledger, "value": "charged"}},
    ]}
    before = ComponentResult(stage_id="before", component_type="record", status=StageStatus.SUCCESS,
                             output="b", attempts=1)
    snapshot = RunSnapshot(results={"before": before}, attempts={"before": 1, "charge": 1})

    outcome = await run(definition, snapshot=snapshot, run_id="run-1")

    assert outcome.status is RunStatus.INTERRUPTED
    assert outcome.error["code"] == "unsafe_to_repeat"
    assert "charge" in outcome.error["message"]
    assert outcome.failed_path == "charge"
    assert read_ledger(ledger) == []


async def test_force_runs_an_unsafe_stage_that_was_in_flight(run, ledger: str) -> None:
    """With force=True the in-flight unsafe stage runs again, as its next attempt."""
    definition = {"stages": [
        {"id": "charge", "component": "unsafe_record", "config": {"ledger": ledger, "value": "charged"}},
    ]}
    outcome = await run(definition, snapshot=RunSnapshot(attempts={"charge": 1}), run_id="run-1", force=True)

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert [(e["path"], e["attempt"]) for e in read_ledger(ledger)] == [("charge", 2)]


async def test_safe_stage_in_flight_simply_runs_again(run, ledger: str) -> None:
    """A safe-to-repeat stage that was in flight runs again on resume without force, as its next attempt."""
    definition = {"stages": [rec("step", ledger, "s")]}
    outcome = await run(definition, snapshot=RunSnapshot(attempts={"step": 3}), run_id="run-1")

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert [(e["path"], e["attempt"]) for e in read_ledger(ledger)] == [("step", 4)]


async def test_unsafe_stage_marks_its_start_before_running(run, ledger: str) -> None:
    """An unsafe stage's started attempt is in the store before its side effect, so a crash cannot hide it."""
    seen: list[dict[str, int]] = []

    class WatchingStore(MemoryRunStore):
        async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
            await super().mark_started(path, attempt, durable=durable)
            seen.append({"path": path, "durable": durable, "ledger_len": len(read_ledger(ledger))})

    await run({"stages": [
        {"id": "charge", "component": "unsafe_record", "config": {"ledger": ledger}},
        rec("note", ledger, depends_on=["charge"]),
    ]}, store=WatchingStore())

    assert seen == [{"path": "charge", "durable": True, "ledger_len": 0},
                    {"path": "note", "durable": False, "ledger_len": 1}]
    assert read_ledger(ledger)[0]["path"] == "charge"


async def test_resume_replays_a_committed_branch_decision(run, ledger: str) -> None:
    """A resumed conditional takes the branch it committed to, even if its condition would now differ."""
    definition = {"stages": [
        {"id": "cond", "component": "conditional",
         "config": {"condition": "{{input.flag}}", "true_branch_stages": ["risky"], "false_branch_stages": ["other"]}},
        {"id": "risky", "component": "fail", "config": {"fail_attempts": 1}},
        rec("other", ledger),
    ]}
    store = MemoryRunStore()
    first = await run(definition, {"flag": True}, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED
    second = await run(definition, {"flag": False}, store=store, run_id="run-1",
                       snapshot=store.snapshot.for_resume())

    assert second.status is RunStatus.SUCCEEDED, second.error
    assert second.results["cond/risky"].output == {"attempt": 2}
    assert second.results["cond/other"].status is StageStatus.SKIPPED
    assert ran(ledger) == []


async def test_resume_does_not_rerun_a_failure_the_pipeline_chose_to_live_with(run, ledger: str) -> None:
    """A stage that failed with on_error=continue stays failed on resume; only the unhandled failure reruns."""
    definition = {"stages": [
        {"id": "optional", "component": "fail", "on_error": "continue", "config": {"fail_attempts": 1}},
        {"id": "required", "component": "fail", "depends_on": ["optional"], "config": {"fail_attempts": 1}},
    ]}
    first, second, _, recorder = await _run_then_resume(run, definition)

    assert second.status is RunStatus.SUCCEEDED, second.error
    assert recorder.paths("start") == ["required"]
    assert second.results["optional"].status is StageStatus.FAILED
    assert second.results["required"].output == {"attempt": 2}
