"""Which results a fork reuses, against a brute-force reachability oracle on generated DAGs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowmasond.engine.checkpoint import MemoryRunStore, RunSnapshot
from flowmasond.engine.dag import DAGExecutor
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.plan import ExecutionPlan
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.interfaces import ComponentResult, RunStatus, StageStatus
from flowmasond.runs_fork import fork_plan
from flowmasond.testing import build_registry, pipeline, read_ledger

REGISTRY = ComponentRegistry.with_builtins()


@st.composite
def dags(draw: st.DrawFn) -> tuple[PipelineConfig, str]:
    """A DAG of 1-9 logger stages (each depends on some earlier ones) and a stage to fork from."""
    n = draw(st.integers(1, 9))
    stages = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        stages.append({"id": f"s{i}", "component_type": "logger", "config": {"message": "m"},
                       "depends_on": [f"s{d}" for d in deps]})
    return PipelineConfig.model_validate({"id": "p", "stages": stages}), f"s{draw(st.integers(0, n - 1))}"


def _depends_on(pipeline: PipelineConfig, stage: str, target: str) -> bool:
    """Brute force: does ``stage`` reach ``target`` by following depends_on (or is it ``target``)?"""
    if stage == target:
        return True
    by_id = {s.id: s for s in pipeline.stages}
    return any(_depends_on(pipeline, d, target) for d in by_id[stage].depends_on)


@settings(max_examples=150, deadline=None)
@given(dags())
def test_fork_reuses_exactly_the_stages_that_do_not_depend_on_the_fork_stage(case: tuple[PipelineConfig, str]) -> None:
    """Every committed stage not depending (transitively) on the fork stage is reused; no other is."""
    pipeline, from_stage = case
    snapshot = RunSnapshot()
    for stage in pipeline.stages:
        snapshot.results[stage.id] = ComponentResult(stage_id=stage.id, component_type="logger",
                                                     status=StageStatus.SUCCESS, output={}, attempts=1)
    plan = fork_plan(ExecutionPlan(pipeline, REGISTRY), snapshot, from_stage, run_id="r")
    reused = {r.path for r in plan.seed}
    expected = {s.id for s in pipeline.stages if not _depends_on(pipeline, s.id, from_stage)}
    assert reused == expected


def test_fork_drops_an_unhandled_failure_of_a_reused_stage() -> None:
    """A stage that failed (unhandled) in the source is not reused even when it is independent."""
    pipeline = PipelineConfig.model_validate({"id": "p", "stages": [
        {"id": "a", "component_type": "logger", "config": {"message": "m"}},
        {"id": "b", "component_type": "logger", "config": {"message": "m"}}]})
    snapshot = RunSnapshot()
    snapshot.results["a"] = ComponentResult(stage_id="a", component_type="logger", status=StageStatus.FAILED,
                                            error="boom", attempts=1)
    plan = fork_plan(ExecutionPlan(pipeline, REGISTRY), snapshot, "b", run_id="r")
    assert plan.seed == []


@st.composite
def record_dags(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """1-7 `record` stages, each depending on some earlier ones and echoing their outputs, and a fork stage."""
    n = draw(st.integers(1, 7))
    stages = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        value = {"me": f"s{i}", "from": [f"{{{{upstream.s{d}}}}}" for d in deps], "x": "{{input.x}}"}
        stages.append({"id": f"s{i}", "component": "record", "config": {"ledger": "LEDGER", "value": value},
                       "depends_on": [f"s{d}" for d in deps]})
    return {"id": "p", "stages": stages}, f"s{draw(st.integers(0, n - 1))}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=record_dags())
def test_a_forked_run_executes_only_the_dependents_and_ends_like_the_source(case: tuple[dict[str, Any], str],
                                                                            tmp_path_factory: Any) -> None:
    """A fork seeded by fork_plan executes exactly the stages depending on the fork stage (brute force) and
    produces the source run's output (the uninterrupted run is the oracle)."""
    definition, from_stage = case
    ledger = str(tmp_path_factory.mktemp("fork") / "ledger.jsonl")
    text = json.dumps(definition).replace('"LEDGER"', json.dumps(ledger))
    config = pipeline(json.loads(text))
    registry = build_registry()

    async def scenario() -> None:
        source_store = MemoryRunStore()
        source = await DAGExecutor(registry).execute(config, {"x": 1}, store=source_store)
        assert source.status is RunStatus.SUCCEEDED
        before = len(read_ledger(ledger))
        plan = fork_plan(ExecutionPlan(config, registry), source_store.snapshot, from_stage, run_id="src")
        seed = RunSnapshot()
        for record in plan.seed:
            seed.apply(record)
        forked = await DAGExecutor(registry).execute(config, {"x": 1}, snapshot=seed)
        assert forked.status is RunStatus.SUCCEEDED
        executed = {e["path"] for e in read_ledger(ledger)[before:]}
        assert executed == {s.id for s in config.stages if _depends_on(config, s.id, from_stage)}
        assert forked.output == source.output

    asyncio.run(scenario())


def test_fork_from_a_loop_body_stage_reruns_its_whole_loop(tmp_path: Any) -> None:
    """Forking from a stage inside a foreach re-runs the foreach (every iteration) and what follows; the
    stage before the loop is reused."""
    ledger = str(tmp_path / "ledger.jsonl")
    config = pipeline({"id": "p", "stages": [
        {"id": "a", "component": "record", "config": {"ledger": ledger, "value": [1, 2]}},
        {"id": "loop", "component": "foreach", "depends_on": ["a"],
         "config": {"items": "{{upstream.a}}", "loop_stages": ["body"]}},
        {"id": "body", "component": "record", "config": {"ledger": ledger, "value": "{{context.item}}"}},
        {"id": "c", "component": "record", "depends_on": ["loop"], "config": {"ledger": ledger, "value": "end"}},
    ]})
    registry = build_registry()

    async def scenario() -> list[str]:
        store = MemoryRunStore()
        assert (await DAGExecutor(registry).execute(config, {}, store=store)).status is RunStatus.SUCCEEDED
        before = len(read_ledger(ledger))
        plan = fork_plan(ExecutionPlan(config, registry), store.snapshot, "body", run_id="src")
        assert plan.rerun_top == {"loop", "c"}
        seed = RunSnapshot()
        for record in plan.seed:
            seed.apply(record)
        assert (await DAGExecutor(registry).execute(config, {}, snapshot=seed)).status is RunStatus.SUCCEEDED
        return [e["path"] for e in read_ledger(ledger)[before:]]

    assert sorted(asyncio.run(scenario())) == ["c", "loop/0/body", "loop/1/body"]
