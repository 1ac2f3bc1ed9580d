"""UpstreamVisibility: the one rule for which upstream outputs a stage may see.

A stage reads its upstream through ``{{upstream.<id>}}``. What it finds there is decided here and
nowhere else, whether the result was just committed, restored on resume, skipped, or belongs to a
branch that was not taken:

* a stage that succeeded shows its output; a failed or skipped one shows ``None`` (the key exists,
  so a template can test it, but there is no output to read), except that a stage that failed
  under ``on_error: continue`` shows its ``fallback_output`` when it has one (FlowMason's field);
* the stages nested under a control-flow stage that run once (not inside a foreach: those have one
  result per item) are visible to its siblings too, each with its own committed result;
* a stage that never ran (a branch not taken, a catch after a clean try) shows ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Mapping, MutableMapping

from flowmasond.engine.interfaces import ComponentResult, StageStatus

if TYPE_CHECKING:
    from flowmasond.engine.plan import ExecutionPlan


def visible_output(result: ComponentResult | None) -> Any:
    """What a downstream stage sees of ``result``: its output if it succeeded, else None."""
    if result is None or result.status is not StageStatus.SUCCESS:
        return None
    return result.output


class UpstreamVisibility:
    """Publishes results into a frame's upstream mapping by the rule in this module's docstring."""

    __slots__ = ("plan",)

    def __init__(self, plan: ExecutionPlan) -> None:
        self.plan = plan

    def visible(self, member: str, result: ComponentResult) -> Any:
        """What dependents of ``member`` see of ``result`` (``fallback_output`` included)."""
        if result.status is StageStatus.FAILED and result.handled:
            stage = self.plan.stages.get(member)
            if stage is not None and stage.on_error == "continue" and stage.fallback_output is not None:
                return stage.fallback_output
        return visible_output(result)

    def publish(self, upstream: MutableMapping[str, Any], member: str, result: ComponentResult) -> None:
        """``member`` (at the frame's level) finished with ``result``."""
        upstream[member] = self.visible(member, result)

    def publish_nested(self, upstream: MutableMapping[str, Any], member: str, prefix: str,
                       committed: Mapping[str, ComponentResult]) -> None:
        """The stages nested under control-flow ``member`` (at ``prefix``), from their committed results."""
        for path, child in self.plan.flat_descendants(member, prefix):
            result = committed.get(path)
            if result is not None:
                upstream[child] = self.visible(child, result)
            else:
                upstream.setdefault(child, None)

    def restore(self, upstream: MutableMapping[str, Any], member: str, prefix: str, result: ComponentResult,
                committed: Mapping[str, ComponentResult]) -> None:
        """``member`` was committed before a resume: it and what ran under it become visible again."""
        self.publish(upstream, member, result)
        if member in self.plan.children:
            self.publish_nested(upstream, member, prefix, committed)

    def hide(self, upstream: MutableMapping[str, Any], member: str, prefix: str) -> None:
        """``member`` did not run (skipped, or a branch not taken): it and its nested stages show None."""
        upstream[member] = None
        for _, child in self.plan.flat_descendants(member, prefix):
            upstream.setdefault(child, None)

    def hide_all(self, upstream: MutableMapping[str, Any], members: list[str], prefix: str) -> None:
        """Every stage of ``members`` that is not already visible shows None (a phase that never ran)."""
        for member in members:
            if member in self.plan.stages:
                upstream.setdefault(member, None)
                for _, child in self.plan.flat_descendants(member, prefix):
                    upstream.setdefault(child, None)
