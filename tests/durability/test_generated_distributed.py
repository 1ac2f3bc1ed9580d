"""Generated nested pipelines with every leaf stage distributed, against the same pipelines run locally.

hypothesis builds random pipelines (gen_pipelines.py: foreach, trycatch, conditional, router,
subpipeline, return, failing and flaky leaves); each runs twice in-process: once locally (the oracle)
and once with `"distribute": true` on every pipeline and a StageDispatcher whose "worker" is a second
component executor. Both must end alike (status, output, every stage's status, output and attempts,
the same side effects), and exactly the leaf stages that ran must have gone through the dispatcher:
control-flow stages never.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import gen_components
from gen_checks import normalise
from gen_pipelines import cases
from hypothesis import HealthCheck, event, given, settings

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.executor import UniversalExecutor
from flowmasond.engine.interfaces import ComponentResult, StageTask
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.testing import build_registry, run_pipeline

LEAVES = frozenset({"gen_step", "gen_unsafe_step"})


class WorkerDispatcher:
    """Runs each handed-over stage as a worker node would: config re-validated from JSON, the
    normal component executor, its own attempt store; records what it was given."""

    def __init__(self, registry: ComponentRegistry) -> None:
        self.registry = registry
        self.worker = UniversalExecutor()
        self.tasks: list[StageTask] = []

    def epoch_of(self, run_id: str) -> int | None:
        return 1

    async def dispatch(self, task: StageTask) -> ComponentResult:
        self.tasks.append(task)
        meta = self.registry.meta(task.stage.component_type)
        config = json.loads(json.dumps(task.config))  # what crosses the database
        return await self.worker.execute(
            run_id=task.run_id, pipeline_id=task.pipeline_id, path=task.path, stage=task.stage, meta=meta,
            instance=self.registry.instance(task.stage.component_type),
            input=meta.input_model.model_validate(config), cancellation=CancellationToken(),
            store=MemoryRunStore(), attempt_base=task.attempt_base, variables=task.variables)


def _run(case: dict[str, Any], ledger: Path, dispatcher: WorkerDispatcher | None) -> tuple[Any, list[str]]:
    pipelines = {pid: {**definition, "distribute": dispatcher is not None}
                 for pid, definition in case["pipelines"].items()}
    root = {"id": case["root"], **pipelines[case["root"]]}
    children = {pid: d for pid, d in pipelines.items() if pid != case["root"]}
    registry = dispatcher.registry if dispatcher is not None else build_registry(gen_components)
    outcome = asyncio.run(run_pipeline(root, {"ledger": str(ledger)}, registry=registry, pipelines=children,
                                       stage_dispatcher=dispatcher, run_id="root"))
    entries = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    return outcome, entries


def _view(outcome: Any) -> dict[str, Any]:
    return {"status": outcome.status.value, "output": normalise(outcome.output),
            "error": normalise((outcome.error or {}).get("message")),
            "stages": {path: (r.status.value, normalise(r.output), r.attempts, r.handled)
                       for path, r in outcome.results.items()}}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
@given(case=cases())
def test_distributing_every_leaf_stage_changes_nothing_but_where_it_runs(
        case: dict[str, Any], tmp_path_factory: Any) -> None:
    """A generated pipeline with every leaf distributed ends exactly as when run locally, with the
    same side effects, and only leaf stages went through the dispatcher."""
    base = tmp_path_factory.mktemp("dist")
    local, local_ledger = _run(case, base / "local.jsonl", None)
    dispatcher = WorkerDispatcher(build_registry(gen_components))
    distributed, dist_ledger = _run(case, base / "dist.jsonl", dispatcher)

    assert _view(distributed) == _view(local)
    side_effects = Counter((e["path"], e["attempt"]) for e in dist_ledger)
    assert side_effects == Counter((e["path"], e["attempt"]) for e in local_ledger)
    handed = Counter((t.run_id, t.path) for t in dispatcher.tasks)
    event(f"dispatched {min(len(handed), 10) // 5 * 5}+")
    assert all(n == 1 for n in handed.values()), handed
    assert {t.stage.component_type for t in dispatcher.tasks} <= LEAVES
    root_leaves = {("root", path) for path, r in distributed.results.items()
                   if r.component_type in LEAVES and r.attempts > 0}
    assert root_leaves <= set(handed)
    # Every leaf attempt of every run (children included) happened through the dispatcher.
    assert sum(t.stage.component_type in LEAVES for t in dispatcher.tasks) == len(
        {(e["run_id"], e["path"]) for e in dist_ledger})
