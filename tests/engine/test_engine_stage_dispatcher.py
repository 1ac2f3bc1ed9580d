"""The StageDispatcher seam: leaf stages that opted in (`distribute`) are handed over, their results
come back and are committed like local ones; everything else runs locally, unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.executor import UniversalExecutor
from flowmasond.engine.interfaces import ComponentResult, RecordKind, RunSnapshot, RunStatus, StageTask
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import UnsafeToRepeatError
from flowmasond.pipelines.validation import validate_pipeline
from flowmasond.testing import pipeline, read_ledger, run_pipeline


class LoopbackDispatcher:
    """A dispatcher whose "other node" is a second executor in this process: it re-validates the
    task's config as a worker would and runs it through the normal component executor."""

    def __init__(self, registry: ComponentRegistry, epoch: int | None = 7) -> None:
        self.registry = registry
        self.epoch = epoch
        self.tasks: list[StageTask] = []
        self.worker = UniversalExecutor()

    def epoch_of(self, run_id: str) -> int | None:
        return self.epoch

    async def dispatch(self, task: StageTask) -> ComponentResult:
        self.tasks.append(task)
        if task.attempt_base and not task.safe_to_repeat and not task.force:
            raise UnsafeToRepeatError("in flight and not safe to repeat", path=task.path)
        meta = self.registry.meta(task.stage.component_type)
        return await self.worker.execute(
            run_id=task.run_id, pipeline_id=task.pipeline_id, path=task.path, stage=task.stage, meta=meta,
            instance=self.registry.instance(task.stage.component_type),
            input=meta.input_model.model_validate(task.config), cancellation=_token(), store=MemoryRunStore(),
            attempt_base=task.attempt_base, variables=task.variables)


def _token() -> Any:
    from flowmasond.engine.cancellation import CancellationToken

    return CancellationToken()


def _wave_and_foreach(ledger: str, **top: Any) -> dict[str, Any]:
    return {"id": "p", **top, "stages": [
        {"id": "a", "component": "record", "config": {"ledger": ledger, "value": "A"}},
        {"id": "b", "component": "record", "config": {"ledger": ledger, "value": "B"}, "distribute": False},
        {"id": "loop", "component": "foreach", "depends_on": ["a"],
         "config": {"items": ["x", "y", "z"], "loop_stages": ["body"], "parallel": True}},
        {"id": "body", "component": "record",
         "config": {"ledger": ledger, "value": "{{context.item}}-{{upstream.a}}"}},
    ]}


async def test_only_opted_in_leaf_stages_are_dispatched(registry: ComponentRegistry, ledger: str) -> None:
    """With `distribute` on the pipeline, its leaf stages and a parallel foreach's iterations are
    dispatched; the foreach itself and a stage with `distribute: false` run locally."""
    dispatcher = LoopbackDispatcher(registry)
    outcome = await run_pipeline(_wave_and_foreach(ledger, distribute=True), registry=registry,
                                 stage_dispatcher=dispatcher)

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert sorted(t.path for t in dispatcher.tasks) == ["a", "loop/0/body", "loop/1/body", "loop/2/body"]
    assert {t.epoch for t in dispatcher.tasks} == {7}
    iteration = next(t for t in dispatcher.tasks if t.path == "loop/1/body")
    assert iteration.config["value"] == "y-A" and iteration.variables["item"] == "y"


async def test_dispatched_results_are_committed_and_equal_local_execution(registry: ComponentRegistry,
                                                                         tmp_path: Any) -> None:
    """Every dispatched result is committed to the run's store, and the run's outputs are those of the
    same pipeline executed without a dispatcher."""
    store = MemoryRunStore()
    dispatched = await run_pipeline(_wave_and_foreach(str(tmp_path / "1.jsonl"), distribute=True),
                                    registry=registry, store=store,
                                    stage_dispatcher=LoopbackDispatcher(registry))
    local = await run_pipeline(_wave_and_foreach(str(tmp_path / "2.jsonl"), distribute=True), registry=registry)

    committed = {r.path for r in store.records if r.kind is RecordKind.RESULT}
    assert {"a", "loop/0/body", "loop/1/body", "loop/2/body"} <= committed
    assert dispatched.output == local.output
    assert {p: r.output for p, r in dispatched.results.items()} == {p: r.output for p, r in local.results.items()}


async def test_nothing_is_dispatched_without_an_epoch_or_without_opting_in(registry: ComponentRegistry,
                                                                          ledger: str) -> None:
    """A run this node holds no lease epoch for (a child run) and a pipeline that did not opt in
    run every stage locally."""
    no_lease = LoopbackDispatcher(registry, epoch=None)
    outcome = await run_pipeline(_wave_and_foreach(ledger, distribute=True), registry=registry,
                                 stage_dispatcher=no_lease)
    assert outcome.status is RunStatus.SUCCEEDED and no_lease.tasks == []

    not_opted = LoopbackDispatcher(registry)
    outcome = await run_pipeline(_wave_and_foreach(ledger), registry=registry, stage_dispatcher=not_opted)
    assert outcome.status is RunStatus.SUCCEEDED and not_opted.tasks == []
    assert len(read_ledger(ledger)) == 2 * 5


async def test_an_unsafe_stage_in_flight_is_the_dispatchers_decision(registry: ComponentRegistry,
                                                                     ledger: str) -> None:
    """A resumed unsafe stage that had started is handed to the dispatcher (which may adopt a task
    still running on a worker) with its attempt base; refusing stops the run as interrupted."""
    dispatcher = LoopbackDispatcher(registry)
    definition = {"id": "u", "distribute": True, "stages": [
        {"id": "charge", "component": "unsafe_record", "config": {"ledger": ledger}}]}
    outcome = await run_pipeline(definition, registry=registry, stage_dispatcher=dispatcher,
                                 snapshot=RunSnapshot(attempts={"charge": 1}))

    assert outcome.status is RunStatus.INTERRUPTED
    assert [(t.path, t.attempt_base, t.safe_to_repeat) for t in dispatcher.tasks] == [("charge", 1, False)]
    assert read_ledger(ledger) == []


def test_distribute_on_a_control_flow_stage_is_an_error_naming_stage_and_field(registry: ComponentRegistry) -> None:
    """`distribute` applies to leaf stages; on a foreach it is reported with the stage and the field."""
    config = pipeline({"id": "p", "stages": [
        {"id": "loop", "component": "foreach", "distribute": True,
         "config": {"items": [1], "loop_stages": ["body"]}},
        {"id": "body", "component": "record", "config": {"ledger": "/dev/null"}, "distribute": True}]})
    issues = [i for i in validate_pipeline(config, registry, "p.pipeline.json") if i.severity == "error"]

    assert [(i.stage, i.field) for i in issues] == [("loop", "distribute")]
    assert "leaf stages" in issues[0].message


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "on"])
def test_distribute_is_a_strict_flag_on_the_pipeline_and_on_a_stage(value: object) -> None:
    """`"distribute": "yes"` (or 1) is an error naming the field, not a quiet True (as for component flags)."""
    for document in ({"id": "p", "distribute": value, "stages": [{"id": "a", "component": "record"}]},
                     {"id": "p", "stages": [{"id": "a", "component": "record", "distribute": value}]}):
        with pytest.raises(ValidationError, match="distribute"):
            PipelineConfig.model_validate(document)


def test_a_pipeline_without_distribute_keeps_its_content_hash() -> None:
    """Pinned definitions written before the field existed keep their identity: an unset `distribute`
    is not part of the canonical JSON, a set one is."""
    plain = pipeline({"id": "p", "stages": [{"id": "s", "component": "record", "config": {"ledger": "x"}}]})
    assert "distribute" not in plain.canonical_json()
    opted = pipeline({"id": "p", "distribute": True,
                      "stages": [{"id": "s", "component": "record", "config": {"ledger": "x"}}]})
    assert opted.content_hash() != plain.content_hash()
    assert '"distribute":true' in opted.canonical_json()


def test_distribute_is_a_known_key_and_a_misspelling_of_it_still_warns() -> None:
    """`distribute` passes the unknown-key check at both levels; `distibute` is dropped with a warning
    that names the stage, the field and the key it resembles."""
    from flowmasond.pipelines.compat import unknown_keys

    data = {"id": "p", "distribute": True, "stages": [
        {"id": "s", "component": "record", "config": {}, "distribute": False},
        {"id": "t", "component": "record", "config": {}, "distibute": True}]}
    kept, warnings = unknown_keys(data, "p.pipeline.json")

    assert kept["distribute"] is True and kept["stages"][0]["distribute"] is False
    assert "distibute" not in kept["stages"][1]
    assert [(w.stage, w.field) for w in warnings] == [("t", "distibute")]
    assert "distribute" in warnings[0].message


async def test_a_stage_can_opt_in_alone(registry: ComponentRegistry, ledger: str) -> None:
    """In a pipeline that does not distribute, a stage with `distribute: true` is dispatched alone."""
    dispatcher = LoopbackDispatcher(registry)
    outcome = await run_pipeline({"id": "p", "stages": [
        {"id": "heavy", "component": "record", "config": {"ledger": ledger, "value": 1}, "distribute": True},
        {"id": "light", "component": "record", "config": {"ledger": ledger, "value": 2}}]},
        registry=registry, stage_dispatcher=dispatcher)

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert [t.path for t in dispatcher.tasks] == ["heavy"]
    assert outcome.results["heavy"].output == 1
