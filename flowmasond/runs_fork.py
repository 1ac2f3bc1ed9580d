"""Rerun and fork: which committed results of a source run a new run may reuse.

``flowmason rerun RUN --from STAGE`` (DBOS ``fork --step``, Temporal ``reset``) makes a new run
that keeps the source's committed results of every stage that does not depend, directly or
transitively, on STAGE, and runs STAGE and everything downstream of it again. The reused results
are copied into the new run's journal in the transaction that creates it, so the new run is a
run like any other: it resumes, shows and prunes on its own, and the engine never executes a
reused stage (a committed stage is never executed again), so its side effects do not repeat.

A stage nested under a control-flow stage (a branch, a loop body, a try block) cannot be re-run
alone: its control-flow stage decides whether and how often it runs, so the whole control-flow
stage is re-run.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowmasond.engine.interfaces import Record, RunSnapshot
from flowmasond.engine.plan import ExecutionPlan
from flowmasond.engine.interfaces import StageStatus
from flowmasond.errors import StageNotFoundError


@dataclass(frozen=True, slots=True)
class ForkPlan:
    """What a fork re-runs and what it copies."""

    from_stage: str
    rerun_top: frozenset[str]  # top-level stages that run again (the from stage's top and its dependents)
    seed: list[Record]  # the source's records the new run starts with


def top_level_of(plan: ExecutionPlan, stage_id: str) -> str:
    """The top-level stage ``stage_id`` runs under (itself when it is top-level)."""
    while stage_id in plan.owner:
        stage_id = plan.owner[stage_id]
    return stage_id


def downstream(plan: ExecutionPlan, stage_id: str) -> frozenset[str]:
    """``stage_id``'s top-level stage and every top-level stage depending on it, transitively."""
    start = top_level_of(plan, stage_id)
    seen = {start}
    todo = [start]
    while todo:
        for dependent in plan.top.dependents.get(todo.pop(), ()):
            if dependent not in seen:
                seen.add(dependent)
                todo.append(dependent)
    return frozenset(seen)


def fork_plan(plan: ExecutionPlan, snapshot: RunSnapshot, from_stage: str, *, run_id: str) -> ForkPlan:
    """The records a fork from ``from_stage`` reuses; ``StageNotFoundError`` for an unknown stage."""
    if from_stage not in plan.stages:
        raise StageNotFoundError(f"no stage {from_stage!r} in run {run_id}'s pipeline",
                                 run_id=run_id, stage=from_stage, stages=sorted(plan.stages))
    rerun = downstream(plan, from_stage)

    def reused(path: str) -> bool:
        return path.split("/", 1)[0] not in rerun

    seed: list[Record] = []
    for path, result in snapshot.results.items():
        # An unhandled failure is not a result to keep: that stage must run again.
        if reused(path) and (result.status is not StageStatus.FAILED or result.handled):
            seed.append(Record.of_result(path, result))
    for path, state in snapshot.states.items():
        if reused(path):
            seed.append(Record.of_state(path, state))
    return ForkPlan(from_stage=from_stage, rerun_top=rerun, seed=seed)
