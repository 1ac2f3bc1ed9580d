"""The static shape of a pipeline as the executor needs it: ownership and dependency groups.

A control-flow stage *owns* the stages its config lists (branches, loop body, try/catch/finally);
those run under it, not in the top-level DAG. Each list of sibling stages forms a ``Group`` whose
dependencies are the stages' own ``depends_on`` *plus* those of everything nested under them,
mapped onto the sibling that contains the dependency: a top-level stage that depends on a branch
stage waits for the whole conditional, and a conditional whose branch reads an earlier stage waits
for that stage.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from collections.abc import Mapping

from flowmasond.components.control_flow_components import child_stage_ids
from flowmasond.engine.models import PipelineConfig, StageConfig
from flowmasond.engine.registry import ComponentMeta, ComponentRegistry
from flowmasond.errors import PipelineError


@dataclass(frozen=True, slots=True)
class Group:
    """Sibling stages scheduled together, with dependencies mapped into the group."""

    members: tuple[str, ...]  # in file order
    deps: Mapping[str, frozenset[str]]
    dependents: Mapping[str, tuple[str, ...]]
    sinks: tuple[str, ...]  # members no other member depends on
    # Each member's declared dependencies that lie inside the group, as paths relative to the
    # group's prefix ('fetch', or 'cond/branch_a' for a stage nested under member 'cond'): the
    # "all dependencies skipped" rule reads their results.
    declared: Mapping[str, tuple[str, ...]]
    order: Mapping[str, int]  # file position, for the stable sequential (Kahn) order


class ExecutionPlan:
    """Ownership, groups and metadata of one pipeline definition, computed once and cached."""

    def __init__(self, pipeline: PipelineConfig, registry: ComponentRegistry) -> None:
        self.pipeline = pipeline
        self.stages: dict[str, StageConfig] = {s.id: s for s in pipeline.stages}
        self.meta: dict[str, ComponentMeta] = {s.id: registry.meta(s.component_type) for s in pipeline.stages}
        self.position = {s.id: i for i, s in enumerate(pipeline.stages)}
        self.owner: dict[str, str] = {}
        self.children: dict[str, dict[str, list[str]]] = {}
        for stage in pipeline.stages:
            if self.meta[stage.id].kind != "control_flow":
                continue
            owned = child_stage_ids(stage.component_type, stage.config)
            self.children[stage.id] = owned
            for ids in owned.values():
                for child in ids:
                    if child in self.stages and child != stage.id:
                        self.owner.setdefault(child, stage.id)
        self._groups: dict[tuple[str, ...], Group] = {}
        self._desc_deps: dict[str, frozenset[str]] = {}
        self.top = self.group([s.id for s in pipeline.stages if s.id not in self.owner])
        from flowmasond.engine.visibility import UpstreamVisibility

        self.visibility = UpstreamVisibility(self)

    # -- ownership ---------------------------------------------------------------------------
    def owned(self, stage_id: str) -> list[str]:
        """Every stage directly owned by ``stage_id``."""
        return [c for ids in self.children.get(stage_id, {}).values() for c in ids if c in self.stages]

    def _all_deps(self, stage_id: str) -> frozenset[str]:
        """``depends_on`` of a stage and of everything nested under it."""
        cached = self._desc_deps.get(stage_id)
        if cached is None:
            deps = set(self.stages[stage_id].depends_on)
            for child in self.owned(stage_id):
                if child != stage_id:
                    deps |= self._all_deps(child)
            cached = self._desc_deps[stage_id] = frozenset(deps)
        return cached

    def _ancestor_in(self, stage_id: str, members: set[str]) -> str | None:
        seen = 0
        current: str | None = stage_id
        while current is not None and seen <= len(self.stages):
            if current in members:
                return current
            current = self.owner.get(current)
            seen += 1
        return None

    def _relative_path(self, stage_id: str, members: set[str]) -> str | None:
        """Path of ``stage_id`` below the group member holding it; None if outside or in a loop body."""
        chain = [stage_id]
        current = stage_id
        while current not in members:
            owner = self.owner.get(current)
            if owner is None or len(chain) > len(self.stages):
                return None
            if self.stages[owner].component_type == "foreach":
                return None  # runs once per item: no single result to read
            chain.append(owner)
            current = owner
        return "/".join(reversed(chain))

    def flat_descendants(self, stage_id: str, prefix: str) -> list[tuple[str, str]]:
        """(path, stage id) of stages nested under ``stage_id`` that run once (not inside a foreach)."""
        if self.stages[stage_id].component_type == "foreach":
            return []
        out: list[tuple[str, str]] = []
        for child in self.owned(stage_id):
            path = f"{prefix}{stage_id}/{child}"
            out.append((path, child))
            out.extend(self.flat_descendants(child, f"{prefix}{stage_id}/"))
        return out

    # -- groups ------------------------------------------------------------------------------
    def group(self, ids: list[str] | tuple[str, ...]) -> Group:
        """The scheduling group of sibling stages ``ids`` (cached)."""
        key = tuple(dict.fromkeys(i for i in ids if i in self.stages))
        cached = self._groups.get(key)
        if cached is not None:
            return cached
        members = set(key)
        deps: dict[str, frozenset[str]] = {}
        dependents: dict[str, list[str]] = {m: [] for m in key}
        for m in key:
            mapped = set()
            for dep in self._all_deps(m):
                target = self._ancestor_in(dep, members)
                if target is not None and target != m:
                    mapped.add(target)
            deps[m] = frozenset(mapped)
            for d in mapped:
                dependents[d].append(m)
        self._check_acyclic(key, deps)
        declared: dict[str, tuple[str, ...]] = {}
        for m in key:
            rels = []
            for dep in self.stages[m].depends_on:
                rel = self._relative_path(dep, members)
                if rel is not None:
                    rels.append(rel)
            declared[m] = tuple(rels)
        group = Group(
            members=key, deps=deps,
            dependents={m: tuple(v) for m, v in dependents.items()},
            sinks=tuple(m for m in key if not dependents[m]),
            order={m: self.position[m] for m in key},
            declared=declared,
        )
        self._groups[key] = group
        return group

    def _check_acyclic(self, members: tuple[str, ...], deps: Mapping[str, frozenset[str]]) -> None:
        indegree = {m: len(deps[m]) for m in members}
        rev: dict[str, list[str]] = {m: [] for m in members}
        for m in members:
            for d in deps[m]:
                rev[d].append(m)
        heap = [(self.position[m], m) for m in members if indegree[m] == 0]
        heapq.heapify(heap)
        visited = 0
        while heap:
            _, m = heapq.heappop(heap)
            visited += 1
            for n in rev[m]:
                indegree[n] -= 1
                if indegree[n] == 0:
                    heapq.heappush(heap, (self.position[n], n))
        if visited != len(members):
            stuck = sorted(m for m in members if indegree[m] > 0)
            raise PipelineError("dependency cycle (possibly through a control-flow stage's children)",
                                pipeline=self.pipeline.id, stages=stuck)
