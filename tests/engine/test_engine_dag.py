"""DAG semantics: derived skips, joins, on_error, run output, schemas, and hooks that fail."""

from __future__ import annotations

from typing import Any

import structlog

from flowmasond.engine.interfaces import ErrorType, ExecutionHooks, RunStatus, StageStatus
from flowmasond.testing import EventRecorder, read_ledger


def rec(stage_id: str, ledger: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    """A `record` stage appending to ``ledger``."""
    return {"id": stage_id, "component": "record", "config": {"ledger": ledger, "value": value}, **extra}


def ran(ledger: str) -> list[str]:
    """Stage paths that really executed, in order."""
    return [entry["path"] for entry in read_ledger(ledger)]


def _error_type(outcome: Any) -> str | None:
    """The ErrorType name a failed run reports (stage failures carry it in the error context)."""
    error = outcome.error or {}
    return error.get("error_type") or error.get("context", {}).get("error_type_name")


def _branches(ledger: str) -> list[dict[str, Any]]:
    """A conditional taking its true branch, with stages downstream of each branch."""
    return [
        {"id": "cond", "component": "conditional",
         "config": {"condition": True, "true_branch_stages": ["yes"], "false_branch_stages": ["no"]}},
        rec("yes", ledger, "Y"),
        rec("no", ledger, "N"),
        rec("after_no", ledger, "{{upstream.no}}", depends_on=["no"]),
        rec("after_after_no", ledger, depends_on=["after_no"]),
        rec("join", ledger, {"yes": "{{upstream.yes}}", "no": "{{upstream.no}}"}, depends_on=["yes", "no"]),
    ]


async def test_stage_whose_dependencies_were_all_skipped_is_skipped(run, ledger: str) -> None:
    """A stage depending only on a branch that was not taken is skipped, and so is its own dependent."""
    outcome = await run({"stages": _branches(ledger)})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert "after_no" not in ran(ledger)
    assert outcome.results["after_no"].status is StageStatus.SKIPPED
    assert outcome.results["after_after_no"].status is StageStatus.SKIPPED


async def test_join_with_one_executed_dependency_runs(run, ledger: str) -> None:
    """A join depending on both branches runs when one of them executed, seeing None for the skipped one."""
    outcome = await run({"stages": _branches(ledger)})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert "join" in ran(ledger)
    assert outcome.results["join"].output == {"yes": "Y", "no": None}


async def test_on_error_continue_lets_dependents_run(run, ledger: str) -> None:
    """A failed stage with on_error=continue does not fail the run, and its dependents run seeing None."""
    outcome = await run({"stages": [
        {"id": "flaky", "component": "fail", "on_error": "continue", "config": {"message": "meh"}},
        rec("next", ledger, {"got": "{{upstream.flaky}}"}, depends_on=["flaky"]),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.results["flaky"].status is StageStatus.FAILED
    assert outcome.results["flaky"].handled is True
    assert ran(ledger) == ["next"]
    assert outcome.output == {"got": None}


async def test_propagating_failure_stops_dependents(run, ledger: str) -> None:
    """A failed stage with the default on_error fails the run and its dependents never run."""
    outcome = await run({"stages": [
        {"id": "bad", "component": "fail", "config": {"message": "stop here"}},
        rec("next", ledger, depends_on=["bad"]),
    ]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.failed_path == "bad"
    assert ran(ledger) == []
    assert "stop here" in outcome.error["message"]


# -- run output --------------------------------------------------------------------------------------
async def test_output_stage_id_selects_the_run_output(run, ledger: str) -> None:
    """output_stage_id makes that stage's output the run output even when it is not a sink."""
    outcome = await run({"output_stage_id": "mid", "stages": [
        rec("mid", ledger, {"m": 1}), rec("end", ledger, {"e": 2}, depends_on=["mid"]),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.output == {"m": 1}


async def test_single_sink_output_is_the_run_output(run, ledger: str) -> None:
    """Without output_stage_id, the only sink's output is the run output."""
    outcome = await run({"stages": [
        rec("mid", ledger, {"m": 1}), rec("end", ledger, {"e": 2}, depends_on=["mid"]),
    ]})

    assert outcome.output == {"e": 2}


async def test_several_sinks_output_is_keyed_by_stage(run, ledger: str) -> None:
    """Without output_stage_id, several sinks give a mapping of sink id to output."""
    outcome = await run({"stages": [
        rec("root", ledger, 0), rec("left", ledger, "L", depends_on=["root"]),
        rec("right", ledger, "R", depends_on=["root"]),
    ]})

    assert outcome.output == {"left": "L", "right": "R"}


async def test_input_schema_violation_fails_with_validation(run, ledger: str) -> None:
    """Inputs that violate input_schema fail the run with VALIDATION before any stage runs."""
    outcome = await run({"input_schema": {"type": "object", "required": ["n"],
                                          "properties": {"n": {"type": "integer"}}},
                         "stages": [rec("s", ledger, "{{input.n}}")]}, {"n": "seven"})

    assert outcome.status is RunStatus.FAILED
    assert ran(ledger) == []
    assert "input_schema" in outcome.error["message"]
    assert _error_type(outcome) == ErrorType.VALIDATION.value


async def test_output_schema_violation_fails_with_validation(run, ledger: str) -> None:
    """A run output that violates output_schema fails the run with VALIDATION."""
    outcome = await run({"output_schema": {"type": "object", "required": ["total"]},
                         "stages": [rec("s", ledger, {"count": 3})]})

    assert outcome.status is RunStatus.FAILED
    assert ran(ledger) == ["s"]
    assert "output_schema" in outcome.error["message"]
    assert _error_type(outcome) == ErrorType.VALIDATION.value


async def test_valid_input_passes_the_input_schema(run, ledger: str) -> None:
    """Inputs matching input_schema run normally."""
    outcome = await run({"input_schema": {"type": "object", "required": ["n"]},
                         "stages": [rec("s", ledger, "{{input.n}}")]}, {"n": 7})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.output == 7


# -- hooks -------------------------------------------------------------------------------------------
class ExplodingHooks(ExecutionHooks):
    """Raises from every callback."""

    async def on_run_start(self, *args: Any) -> None:
        raise RuntimeError("hook broke on_run_start")

    async def on_stage_start(self, *args: Any) -> None:
        raise RuntimeError("hook broke on_stage_start")

    async def on_stage_retry(self, *args: Any) -> None:
        raise RuntimeError("hook broke on_stage_retry")

    async def on_stage_complete(self, *args: Any) -> None:
        raise RuntimeError("hook broke on_stage_complete")

    async def on_stage_skipped(self, *args: Any) -> None:
        raise RuntimeError("hook broke on_stage_skipped")

    async def on_run_complete(self, *args: Any) -> None:
        raise RuntimeError("hook broke on_run_complete")


async def test_a_raising_hook_is_logged_and_the_run_still_succeeds(run, ledger: str, recorder: EventRecorder) -> None:
    """Exceptions from hooks are logged and swallowed: the run and the other hooks carry on."""
    stages = [
        {"id": "cond", "component": "conditional",
         "config": {"condition": False, "true_branch_stages": ["yes"], "false_branch_stages": ["flaky"]}},
        rec("yes", ledger),
        {"id": "flaky", "component": "fail", "config": {"fail_attempts": 1},
         "retry_config": {"max_retries": 1, "initial_delay_ms": 1, "jitter": False}},
    ]
    with structlog.testing.capture_logs() as logs:
        outcome = await run({"stages": stages}, hooks=[ExplodingHooks(), recorder])

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    failed = {entry["callback"] for entry in logs if entry["event"] == "hook_failed"}
    assert failed == {"on_run_start", "on_stage_start", "on_stage_retry", "on_stage_complete",
                      "on_stage_skipped", "on_run_complete"}
    # The recorder comes after the exploding hook and still heard everything.
    assert recorder.of("run_complete")[0].value == "succeeded"
    assert recorder.attempts("cond/flaky") == [1, 2]
