"""FlowMason's control-flow fields survive a resume: decisions taken once, outputs as an uninterrupted run."""

from __future__ import annotations

from typing import Any

from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.interfaces import RunStatus
from flowmasond.testing import read_ledger


def rec(stage_id: str, ledger: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": stage_id, "component": "record", "config": {"ledger": ledger, "value": value}, **extra}


def ran(ledger: str) -> list[str]:
    return [entry["path"] for entry in read_ledger(ledger)]


async def _interrupted_then_resumed(run, definition: dict[str, Any], inputs: dict[str, Any]) -> tuple[Any, Any]:
    store = MemoryRunStore()
    first = await run(definition, inputs, store=store, run_id="run-1")
    assert first.status is RunStatus.FAILED, first
    second = await run(definition, inputs, store=store, run_id="run-1", snapshot=store.snapshot.for_resume())
    return first, second


async def test_filtered_foreach_resumes_over_the_same_items_with_the_same_counts(run, ledger: str,
                                                                               tmp_path: Any) -> None:
    """filter_expression is evaluated once: the resumed loop runs the remaining selected items, and its
    counts equal an uninterrupted run's."""
    items = [{"n": n, "fail": int(n == 3)} for n in range(1, 7)]
    definition = {"stages": [
        {"id": "loop", "component": "foreach",
         "config": {"items": "{{input.items}}", "loop_stages": ["mark", "check"],
                    "filter_expression": "item.n % 2 == 1"}},
        rec("mark", ledger, "{{context.loop_item.n}}"),
        {"id": "check", "component": "fail", "depends_on": ["mark"],
         "config": {"fail_attempts": "{{context.item.fail}}"}},
    ]}
    _, second = await _interrupted_then_resumed(run, definition, {"items": items})
    assert second.status is RunStatus.SUCCEEDED, second.error
    assert ran(ledger) == ["loop/0/mark", "loop/1/mark", "loop/2/mark"]
    reference = await run(definition, {"items": [{**i, "fail": 0} for i in items]})
    keys = ("total_items", "processed_items", "skipped_items", "is_complete", "count")
    assert {k: second.output[k] for k in keys} == {k: reference.output[k] for k in keys} == {
        "total_items": 6, "processed_items": 3, "skipped_items": 3, "is_complete": True, "count": 3}


async def test_router_matched_value_is_the_committed_one_after_a_resume(run, ledger: str) -> None:
    """A resumed router reports the matched_value and route it committed, without routing again."""
    definition = {"stages": [
        {"id": "route", "component": "router",
         "config": {"value": "{{input.level}}", "case_insensitive": True,
                    "routes": {"high": ["boom"], "low": ["quiet"]}}},
        {"id": "boom", "component": "fail", "config": {"fail_attempts": 1}},
        rec("quiet", ledger, "low"),
    ]}
    _, second = await _interrupted_then_resumed(run, definition, {"level": "HIGH"})
    assert second.status is RunStatus.SUCCEEDED, second.error
    out = second.results["route"].output
    assert (out["route_taken"], out["matched_value"], out["stages_to_execute"]) == ("high", "high", ["boom"])
    assert ran(ledger) == []


async def test_trycatch_retries_then_catches_once_across_a_resume(run, ledger: str) -> None:
    """max_retries gives the try stage its attempts; a catch stage that failed is rerun on resume, the
    try stage is not."""
    definition = {"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["work"], "catch_stages": ["handler"], "error_scope": "continue",
                    "max_retries": 2, "retry_delay_ms": 1, "catch_error_types": ["COMPONENT"]}},
        {"id": "work", "component": "fail", "config": {"message": "always"}},
        {"id": "handler", "component": "fail", "config": {"fail_attempts": 1, "message": "catch failed once"}},
    ]}
    first, second = await _interrupted_then_resumed(run, definition, {})
    assert first.results["tc/work"].attempts == 3
    assert second.status is RunStatus.SUCCEEDED, second.error
    out = second.results["tc"].output
    assert (out["status"], out["error_occurred"], out["recovered"]) == ("caught", True, True)
    assert second.results["tc/work"].attempts == 3  # committed in the first run, not run again
