"""ControlFlowState: the one typed, versioned record a control-flow stage journals at its path.

A control-flow stage's decisions (the branch or route taken and the skip set, a loop's item list, a
trycatch entering its catch phase, a subpipeline's child run id, a return that fired) are what a
resumed run must replay instead of taking again. Handlers produce these records; the DAG executor
commits them (``DAGExecutor.commit``), together with the stage result that caused them when there
is one. The journal stores ``to_json()``; ``from_json`` also reads the untyped version-1 dicts that
journals written before version 2 hold, so old runs resume unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

from flowmasond.errors import JournalError

if TYPE_CHECKING:
    # interfaces.py imports this module (Record carries a ControlFlowState): annotation only.
    from flowmasond.engine.interfaces import ComponentResult

# 1: untyped dicts keyed by "type" (before issue 11). 2: this record, keyed by "v" and "kind".
FLOW_STATE_VERSION = 2


class TryPhase(str, Enum):
    """Where a trycatch stands; only the catch phase is journaled (try is where every trycatch starts)."""

    TRY = "try"
    CATCH = "catch"


@dataclass(frozen=True, slots=True)
class CaughtError:
    """The failure a trycatch caught: shown to its catch stages as ``context.error``."""

    message: str | None
    error_type: str | None
    stage: str | None
    path: str | None


@dataclass(frozen=True, slots=True)
class ControlFlowState:
    """The journaled state of one control-flow stage (only the fields of its ``kind`` are set)."""

    kind: str  # the component type: conditional, router, foreach, trycatch, subpipeline, return
    version: int = FLOW_STATE_VERSION
    # conditional / router: the branch or route taken, the stages it selected and the skip set
    branch: bool | None = None
    route: str | None = None
    selected: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    # router: the value compared with the route keys (after value_expression and case folding)
    matched_value: Any = None
    # foreach: the loop's items, fixed when the loop starts (progress is its committed iterations),
    # and how many there were before filter_expression selected them
    items: tuple[Any, ...] | None = None
    total_items: int | None = None
    # trycatch
    phase: TryPhase | None = None
    caught: CaughtError | None = None
    # subpipeline
    pipeline_id: str | None = None
    child_run_id: str | None = None
    # return
    returned: bool = False
    return_value: Any = None
    message: str | None = None
    # Fields a newer version wrote that this one does not know; kept so a rewrite loses nothing.
    extra: Mapping[str, Any] = field(default_factory=dict)

    # -- constructors: what each handler decides ----------------------------------------------------
    @classmethod
    def branch_taken(cls, kind: str, *, selected: list[str], skipped: list[str], branch: bool | None = None,
                     route: str | None = None, matched_value: Any = None) -> ControlFlowState:
        """A conditional's branch or a router's route, with the stages it runs and those it skips."""
        return cls(kind=kind, branch=branch, route=route, selected=tuple(selected), skipped=tuple(skipped),
                   matched_value=matched_value)

    @classmethod
    def loop(cls, items: list[Any], total_items: int | None = None) -> ControlFlowState:
        """A foreach's item list (after filter_expression), journaled before its first iteration."""
        return cls(kind="foreach", items=tuple(items), total_items=total_items)

    @classmethod
    def caught_failure(cls, failed_path: str, result: ComponentResult) -> ControlFlowState:
        """A trycatch entering its catch phase because the try stage at ``failed_path`` failed."""
        return cls(kind="trycatch", phase=TryPhase.CATCH, caught=CaughtError(
            message=result.error, error_type=result.error_type.value if result.error_type else None,
            stage=result.stage_id, path=failed_path))

    @classmethod
    def child_run(cls, pipeline_id: str, child_run_id: str) -> ControlFlowState:
        """A subpipeline's child run, named before it is created so a resume finds it again."""
        return cls(kind="subpipeline", pipeline_id=pipeline_id, child_run_id=child_run_id)

    @classmethod
    def return_fired(cls, value: Any, message: str | None) -> ControlFlowState:
        """A return whose condition held: the run ends with ``value``."""
        return cls(kind="return", returned=True, return_value=value, message=message)

    @classmethod
    def return_withdrawn(cls) -> ControlFlowState:
        """A return that fired in a catch phase which no longer stands (a resume ran the try stages
        again and they succeeded): it supersedes the journaled one, so a later resume does not end
        the run with it."""
        return cls(kind="return", returned=False, message="withdrawn: the try stages succeeded on resume")

    # -- encoding -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The journaled form: version, kind and the fields this kind uses."""
        data: dict[str, Any] = {**self.extra, "v": self.version, "kind": self.kind}
        kind = self.kind
        if kind in ("conditional", "router"):
            if kind == "conditional":
                data["branch"] = self.branch
            else:
                data["route"] = self.route
                if self.matched_value is not None:
                    data["matched_value"] = self.matched_value
            data["selected"] = list(self.selected)
            data["skipped"] = list(self.skipped)
        elif kind == "foreach":
            data["items"] = None if self.items is None else list(self.items)
            if self.total_items is not None:
                data["total_items"] = self.total_items
        elif kind == "trycatch":
            data["phase"] = self.phase.value if self.phase else None
            c = self.caught
            data["caught"] = None if c is None else {"message": c.message, "error_type": c.error_type,
                                                     "stage": c.stage, "path": c.path}
        elif kind == "subpipeline":
            data["pipeline_id"] = self.pipeline_id
            data["child_run_id"] = self.child_run_id
        elif kind == "return":
            data["returned"] = self.returned
            data["return_value"] = self.return_value
            data["message"] = self.message
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControlFlowState:
        """Decode a journaled state of any known version; JournalError for one it cannot read."""
        if not isinstance(data, Mapping):
            raise JournalError("a control-flow state is not a JSON object", value=repr(data)[:200])
        version = data.get("v", 1)
        if version == 1:
            return _from_v1(data)
        if version != FLOW_STATE_VERSION:
            raise JournalError(f"control-flow state version {version} is newer than this daemon reads "
                               f"({FLOW_STATE_VERSION})", version=version)
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise JournalError("a control-flow state names no kind", value=repr(dict(data))[:200])
        caught = data.get("caught")
        known = {"v", "kind", "branch", "route", "matched_value", "selected", "skipped", "items", "total_items",
                 "phase", "caught",
                 "pipeline_id", "child_run_id", "returned", "return_value", "message"}
        items = data.get("items")
        return cls(
            kind=kind, branch=data.get("branch"), route=data.get("route"),
            selected=tuple(data.get("selected") or ()), skipped=tuple(data.get("skipped") or ()),
            items=None if items is None else tuple(items), total_items=data.get("total_items"),
            matched_value=data.get("matched_value"),
            phase=TryPhase(data["phase"]) if data.get("phase") else None,
            caught=None if not caught else CaughtError(caught.get("message"), caught.get("error_type"),
                                                       caught.get("stage"), caught.get("path")),
            pipeline_id=data.get("pipeline_id"), child_run_id=data.get("child_run_id"),
            returned=bool(data.get("returned")), return_value=data.get("return_value"),
            message=data.get("message"),
            extra={k: v for k, v in data.items() if k not in known})


def _from_v1(data: Mapping[str, Any]) -> ControlFlowState:
    """Read the untyped dicts of version 1 (``{"type": ...}``), written before ControlFlowState."""
    kind = data.get("type")
    if kind == "conditional":
        return ControlFlowState(kind=kind, branch=bool(data.get("branch")))
    if kind == "router":
        return ControlFlowState(kind=kind, route=data.get("route"), selected=tuple(data.get("stages") or ()))
    if kind == "foreach":
        return ControlFlowState(kind=kind, items=tuple(data.get("items") or ()))
    if kind == "trycatch":
        return ControlFlowState(kind=kind, phase=TryPhase(data.get("phase") or "catch"), caught=CaughtError(
            data.get("error"), data.get("error_type"), data.get("failed_stage"), data.get("failed_path")))
    if kind == "subpipeline":
        return ControlFlowState(kind=kind, pipeline_id=data.get("pipeline_id"),
                                child_run_id=data.get("child_run_id"))
    if kind == "return":
        return ControlFlowState(kind=kind, returned=bool(data.get("returned")), return_value=data.get("value"),
                                message=data.get("message"))
    raise JournalError(f"unknown control-flow decision type {kind!r} in a version-1 record", type=kind)
