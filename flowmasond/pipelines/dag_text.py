"""A pipeline's DAG as data a terminal can draw: levels of the top-level DAG, nested stages under
the control-flow stage that runs them (``flowmason pipelines show ID``)."""

from __future__ import annotations

from typing import Any

from flowmasond.engine.plan import ExecutionPlan


def dag_rows(plan: ExecutionPlan) -> list[dict[str, Any]]:
    """One row per stage, in drawing order: top-level stages by level (longest dependency chain
    before them, as the executor's waves), each followed by the stages nested under it."""
    top = plan.top
    level: dict[str, int] = {}

    def level_of(member: str, trail: frozenset[str] = frozenset()) -> int:
        if member not in level:
            deps = [d for d in top.deps.get(member, ()) if d not in trail]
            level[member] = 1 + max((level_of(d, trail | {member}) for d in deps), default=-1)
        return level[member]

    rows: list[dict[str, Any]] = []

    def add(stage_id: str, depth: int, lvl: int, branch: str | None) -> None:
        stage = plan.stages[stage_id]
        rows.append({"id": stage_id, "component_type": stage.component_type, "level": lvl, "depth": depth,
                     "branch": branch, "depends_on": list(stage.depends_on)})
        for field, children in plan.children.get(stage_id, {}).items():
            for child in children:
                if child in plan.stages and plan.owner.get(child) == stage_id:
                    add(child, depth + 1, lvl, field)

    for member in sorted(top.members, key=lambda m: (level_of(m), top.order[m])):
        add(member, 0, level_of(member), None)
    return rows

