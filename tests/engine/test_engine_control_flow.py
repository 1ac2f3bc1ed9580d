"""Control flow: conditional, router, foreach, trycatch, subpipeline, return, and their nesting."""

from __future__ import annotations

from typing import Any

import pytest

from flowmasond.engine.interfaces import ErrorType, RunStatus, StageStatus
from flowmasond.testing import max_in_flight, read_ledger


def rec(stage_id: str, ledger: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    """A `record` stage appending to ``ledger``."""
    return {"id": stage_id, "component": "record", "config": {"ledger": ledger, "value": value}, **extra}


def ran(ledger: str) -> list[str]:
    """Stage paths that really executed, in order."""
    return [entry["path"] for entry in read_ledger(ledger)]


# -- conditional -------------------------------------------------------------------------------------
def _conditional(ledger: str, condition: Any) -> dict[str, Any]:
    return {"stages": [
        {"id": "cond", "component": "conditional",
         "config": {"condition": condition, "true_branch_stages": ["yes"], "false_branch_stages": ["no"]}},
        rec("yes", ledger, "Y"),
        rec("no", ledger, "N"),
        rec("after", ledger, {"yes": "{{upstream.yes}}", "no": "{{upstream.no}}"}, depends_on=["cond"]),
    ]}


async def test_conditional_true_runs_the_true_branch_only(run, ledger: str) -> None:
    """A true condition runs the true branch; the false branch is skipped and reads as None downstream."""
    outcome = await run(_conditional(ledger, True))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["cond/yes", "after"]
    assert outcome.results["cond/no"].status is StageStatus.SKIPPED
    assert outcome.results["cond"].output["branch"] is True
    assert outcome.output == {"yes": "Y", "no": None}


async def test_conditional_false_runs_the_false_branch_only(run, ledger: str) -> None:
    """A false condition runs the false branch and skips the true branch."""
    outcome = await run(_conditional(ledger, False))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["cond/no", "after"]
    assert outcome.results["cond/yes"].status is StageStatus.SKIPPED
    assert outcome.output == {"yes": None, "no": "N"}


@pytest.mark.parametrize("condition", ["false", "FALSE", "0", "", " false "])
async def test_conditional_false_strings_are_false(run, ledger: str, condition: str) -> None:
    """The strings "false", "0" and "" (any case, padded) take the false branch."""
    outcome = await run(_conditional(ledger, "{{input.flag}}"), {"flag": condition})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["cond/no", "after"]


@pytest.mark.parametrize("condition", ["true", "no", "1", "yes"])
async def test_conditional_other_strings_are_true(run, ledger: str, condition: str) -> None:
    """Any other non-empty string takes the true branch."""
    outcome = await run(_conditional(ledger, "{{input.flag}}"), {"flag": condition})

    assert ran(ledger) == ["cond/yes", "after"]


# -- router ------------------------------------------------------------------------------------------
def _router(ledger: str, default_route: Any = None) -> dict[str, Any]:
    config: dict[str, Any] = {"value": "{{input.kind}}", "routes": {"csv": ["csv"], "json": ["json"]}}
    if default_route is not None:
        config["default_route"] = default_route
    stages = [{"id": "route", "component": "router", "config": config}, rec("csv", ledger), rec("json", ledger)]
    if isinstance(default_route, list):
        stages.append(rec("other", ledger))
    return {"stages": stages}


async def test_router_runs_the_matching_route(run, ledger: str) -> None:
    """The route whose key equals value runs; the other routes are skipped."""
    outcome = await run(_router(ledger, ["other"]), {"kind": "json"})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["route/json"]
    assert outcome.results["route"].output["route"] == "json"
    assert outcome.results["route/csv"].status is StageStatus.SKIPPED
    assert outcome.results["route/other"].status is StageStatus.SKIPPED


async def test_router_default_route_as_a_key(run, ledger: str) -> None:
    """An unmatched value takes the route named by default_route."""
    outcome = await run(_router(ledger, "csv"), {"kind": "xml"})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["route/csv"]
    assert outcome.results["route/json"].status is StageStatus.SKIPPED


async def test_router_default_route_as_a_list(run, ledger: str) -> None:
    """An unmatched value runs the stages listed in default_route."""
    outcome = await run(_router(ledger, ["other"]), {"kind": "xml"})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["route/other"]
    assert outcome.results["route/csv"].status is StageStatus.SKIPPED


async def test_router_without_match_or_default_runs_nothing(run, ledger: str) -> None:
    """An unmatched value with no default route runs no route and the run still succeeds."""
    outcome = await run(_router(ledger), {"kind": "xml"})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == []
    assert outcome.results["route"].output["route"] is None
    assert outcome.results["route/csv"].status is StageStatus.SKIPPED


# -- foreach -----------------------------------------------------------------------------------------
async def test_foreach_sequential_runs_items_in_order(run, ledger: str) -> None:
    """A sequential foreach runs its body once per item, in item order, collecting each result."""
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach", "config": {"items": ["a", "b", "c"], "loop_stages": ["body"]}},
        rec("body", ledger, "{{context.item}}-{{context.index}}"),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["loop/0/body", "loop/1/body", "loop/2/body"]
    assert {k: outcome.output[k] for k in ("results", "errors", "count")} == {
        "results": ["a-0", "b-1", "c-2"], "errors": [], "count": 3}
    assert {k: outcome.output[k] for k in ("total_items", "processed_items", "is_complete")} == {
        "total_items": 3, "processed_items": 3, "is_complete": True}


async def test_foreach_parallel_respects_max_parallel(run) -> None:
    """A parallel foreach runs iterations concurrently but never more than max_parallel at once."""
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach",
         "config": {"items": list(range(7)), "loop_stages": ["body"], "parallel": True, "max_parallel": 3}},
        {"id": "body", "component": "counter", "config": {"name": "it", "hold_s": 0.03, "value": "{{context.item}}"}},
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert [r["value"] for r in outcome.output["results"]] == list(range(7))
    assert max_in_flight(outcome.run_id, "it") == 3


async def test_foreach_loop_variables_are_isolated_per_iteration(run, ledger: str) -> None:
    """In a parallel foreach each iteration sees its own item, index and its own previous inner stage."""
    items = ["p", "q", "r", "s"]
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach",
         "config": {"items": items, "loop_stages": ["first", "hold", "second"], "parallel": True,
                    "max_parallel": 4, "item_variable": "it", "index_variable": "i"}},
        rec("first", ledger, {"it": "{{context.it}}", "i": "{{context.i}}"}),
        # A barrier keeps all iterations alive at once, so a shared scope would be overwritten.
        {"id": "hold", "component": "barrier", "depends_on": ["first"],
         "config": {"name": "iter", "parties": 4, "timeout_s": 3}},
        rec("second", ledger, {"it": "{{context.it}}", "prev": "{{upstream.first}}"}, depends_on=["hold"]),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    results = outcome.output["results"]
    assert results == [{"it": it, "prev": {"it": it, "i": i}} for i, it in enumerate(items)]
    by_path = {e["path"]: e["value"] for e in read_ledger(ledger)}
    assert by_path["loop/2/second"] == {"it": "r", "prev": {"it": "r", "i": 2}}


async def test_foreach_break_on_error_stops_further_iterations(run, ledger: str) -> None:
    """With break_on_error, the first failing iteration fails the foreach and later iterations never run."""
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach",
         "config": {"items": [0, 1, 0, 0], "loop_stages": ["check", "body"], "break_on_error": True}},
        {"id": "check", "component": "fail", "config": {"fail_attempts": "{{context.item}}"}},
        rec("body", ledger, "{{context.index}}", depends_on=["check"]),
    ]})

    assert outcome.status is RunStatus.FAILED
    assert ran(ledger) == ["loop/0/body"]
    assert outcome.results["loop"].status is StageStatus.FAILED
    assert outcome.failed_path == "loop"
    assert "loop/2/check" not in outcome.results


async def test_foreach_without_break_collects_errors_and_continues(run, ledger: str) -> None:
    """Without break_on_error every iteration runs, failures land in `errors` and the run succeeds."""
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach",
         "config": {"items": [0, 1, 0, 1], "loop_stages": ["check", "body"], "break_on_error": False}},
        {"id": "check", "component": "fail", "config": {"fail_attempts": "{{context.item}}", "message": "bad"}},
        rec("body", ledger, "{{context.index}}", depends_on=["check"]),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["loop/0/body", "loop/2/body"]
    output = outcome.output
    assert output["count"] == 4
    assert output["results"] == [0, None, 2, None]
    assert [(e["index"], e["stage"]) for e in output["errors"]] == [(1, "check"), (3, "check")]
    assert all("bad" in e["error"] for e in output["errors"])


# -- trycatch ----------------------------------------------------------------------------------------
def _trycatch(ledger: str, try_fails: bool, error_scope: str = "continue") -> dict[str, Any]:
    body = ({"id": "risky", "component": "fail", "config": {"message": "boom"}} if try_fails
            else rec("risky", ledger, "fine"))
    return {"stages": [
        {"id": "tc", "component": "trycatch",
         "config": {"try_stages": ["risky"], "catch_stages": ["handler"], "finally_stages": ["cleanup"],
                    "error_scope": error_scope}},
        body,
        rec("handler", ledger, {"message": "{{context.error.message}}", "type": "{{context.error.type}}",
                                "stage": "{{context.error.stage}}"}),
        rec("cleanup", ledger, "done"),
    ]}


async def test_trycatch_success_skips_catch_and_runs_finally(run, ledger: str) -> None:
    """When the try stages succeed, catch does not run, finally does, and the status is success."""
    outcome = await run(_trycatch(ledger, try_fails=False))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["tc/risky", "tc/cleanup"]
    assert outcome.results["tc"].output["status"] == "success"


async def test_trycatch_failure_runs_catch_with_the_error_then_finally(run, ledger: str) -> None:
    """A failing try stage runs catch (which sees the error's message, type and stage) and then finally."""
    outcome = await run(_trycatch(ledger, try_fails=True))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["tc/handler", "tc/cleanup"]
    seen = read_ledger(ledger)[0]["value"]
    assert "boom" in seen["message"]
    assert seen["type"] == "COMPONENT"
    assert seen["stage"] == "risky"
    tc = outcome.results["tc"].output
    assert tc["status"] == "caught" and tc["failed_stage"] == "risky" and "boom" in tc["error"]


async def test_trycatch_propagate_fails_after_catch_and_finally(run, ledger: str) -> None:
    """With error_scope=propagate the trycatch still fails, after catch and finally have run."""
    outcome = await run(_trycatch(ledger, try_fails=True, error_scope="propagate"))

    assert outcome.status is RunStatus.FAILED
    assert ran(ledger) == ["tc/handler", "tc/cleanup"]
    assert outcome.results["tc"].status is StageStatus.FAILED
    assert outcome.failed_path == "tc"
    assert "boom" in outcome.error["message"]


# -- subpipeline -------------------------------------------------------------------------------------
async def test_subpipeline_runs_the_child_and_returns_its_output(run, ledger: str) -> None:
    """A subpipeline stage runs the named pipeline as a child run with its own id and returns its output."""
    child = {"stages": [rec("double", ledger, {"twice": ["{{input.n}}", "{{input.n}}"]})]}
    outcome = await run({"stages": [
        {"id": "call", "component": "subpipeline", "config": {"pipeline_id": "child", "input_data": {"n": 21}}},
        rec("use", ledger, "{{upstream.call.output.twice}}", depends_on=["call"]),
    ]}, pipelines={"child": child})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    entries = read_ledger(ledger)
    assert [e["path"] for e in entries] == ["double", "use"]
    child_run_id = outcome.results["call"].output["child_run_id"]
    assert entries[0]["run_id"] == child_run_id != outcome.run_id
    assert outcome.results["call"].output["output"] == {"twice": [21, 21]}
    assert outcome.output == [21, 21]


async def test_subpipeline_unknown_pipeline_fails_clearly(run) -> None:
    """A subpipeline naming an unknown pipeline fails the run with an error naming that pipeline."""
    outcome = await run({"stages": [
        {"id": "call", "component": "subpipeline", "config": {"pipeline_id": "nope"}},
    ]}, pipelines={})

    assert outcome.status is RunStatus.FAILED
    assert "nope" in str(outcome.error)


async def test_subpipeline_self_recursion_stops_at_the_depth_limit(run) -> None:
    """A pipeline that calls itself fails at the nesting limit instead of recursing forever."""
    looping = {"id": "again", "stages": [
        {"id": "call", "component": "subpipeline", "config": {"pipeline_id": "again"}},
    ]}
    outcome = await run(looping, pipelines={"again": looping})

    assert outcome.status is RunStatus.FAILED
    assert "deeper than" in outcome.error["message"]


# -- return ------------------------------------------------------------------------------------------
def _returning(ledger: str, condition: Any) -> dict[str, Any]:
    return {"stages": [
        rec("first", ledger, {"n": 1}),
        {"id": "ret", "component": "return", "depends_on": ["first"],
         "config": {"condition": condition, "return_value": {"early": "{{upstream.first.n}}"}}},
        rec("later", ledger, "late", depends_on=["ret"]),
    ]}


async def test_return_true_ends_the_run_with_its_value(run, ledger: str) -> None:
    """A return whose condition holds makes its value the run output and later stages never run."""
    outcome = await run(_returning(ledger, True))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.output == {"early": 1}
    assert outcome.returned is True
    assert ran(ledger) == ["first"]
    assert "later" not in outcome.results or outcome.results["later"].status is StageStatus.SKIPPED


async def test_return_false_lets_the_run_continue(run, ledger: str) -> None:
    """A return whose condition is false does nothing and the pipeline runs to its end."""
    outcome = await run(_returning(ledger, "false"))

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.returned is False
    assert ran(ledger) == ["first", "later"]
    assert outcome.output == "late"


async def test_return_inside_a_foreach_stops_the_loop_and_the_run(run, ledger: str) -> None:
    """A return taken inside a loop body ends the whole run: no further iteration or stage runs."""
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach", "config": {"items": [1, 2, 3], "loop_stages": ["body", "stop"]}},
        rec("body", ledger, "{{context.item}}"),
        {"id": "stop", "component": "return", "depends_on": ["body"],
         "config": {"condition": "{{context.index}}", "return_value": "{{context.item}}"}},
        rec("after", ledger, depends_on=["loop"]),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.output == 2
    assert ran(ledger) == ["loop/0/body", "loop/1/body"]


# -- nesting -----------------------------------------------------------------------------------------
async def test_foreach_inside_trycatch_failure_triggers_catch(run, ledger: str) -> None:
    """An item failing inside a foreach under a trycatch runs the catch stages with that error."""
    outcome = await run({"stages": [
        {"id": "tc", "component": "trycatch", "config": {"try_stages": ["loop"], "catch_stages": ["handler"],
                                                         "error_scope": "continue"}},
        {"id": "loop", "component": "foreach",
         "config": {"items": [{"name": "ok", "bad": 0}, {"name": "broken", "bad": 1}], "loop_stages": ["work"]}},
        {"id": "work", "component": "fail",
         "config": {"fail_attempts": "{{context.item.bad}}", "message": "item {{context.item.name}} failed"}},
        rec("handler", ledger, {"message": "{{context.error.message}}", "stage": "{{context.error.stage}}"}),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert ran(ledger) == ["tc/handler"]
    seen = read_ledger(ledger)[0]["value"]
    assert seen["stage"] == "loop"
    assert "item broken failed" in seen["message"]
    assert outcome.results["tc/loop/0/work"].ok
    assert outcome.results["tc/loop/1/work"].status is StageStatus.FAILED
    assert outcome.results["tc"].output["status"] == "caught"


async def test_router_inside_foreach_routes_each_item_by_its_own_value(run, ledger: str) -> None:
    """A router in a loop body picks its route from each iteration's own item."""
    outcome = await run({"stages": [
        {"id": "loop", "component": "foreach",
         "config": {"items": ["csv", "json", "xml", "csv"], "loop_stages": ["route"], "parallel": True}},
        {"id": "route", "component": "router",
         "config": {"value": "{{context.item}}", "routes": {"csv": ["on_csv"], "json": ["on_json"]},
                    "default_route": ["on_other"]}},
        rec("on_csv", ledger, "{{context.index}}"),
        rec("on_json", ledger, "{{context.index}}"),
        rec("on_other", ledger, "{{context.index}}"),
    ]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert sorted(ran(ledger)) == ["loop/0/route/on_csv", "loop/1/route/on_json", "loop/2/route/on_other",
                                   "loop/3/route/on_csv"]
    assert [r["route"] for r in outcome.output["results"]] == ["csv", "json", "default", "csv"]
    assert outcome.results["loop/2/route/on_csv"].status is StageStatus.SKIPPED


async def test_conditional_branch_failure_fails_the_conditional(run, ledger: str) -> None:
    """A failing stage inside the taken branch fails the conditional and the run."""
    outcome = await run({"stages": [
        {"id": "cond", "component": "conditional",
         "config": {"condition": True, "true_branch_stages": ["bad"], "false_branch_stages": []}},
        {"id": "bad", "component": "fail", "config": {"error_type": "PERMISSION"}},
        rec("after", ledger, depends_on=["cond"]),
    ]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["cond"].error_type is ErrorType.PERMISSION
    assert ran(ledger) == []
