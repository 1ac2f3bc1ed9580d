"""A hypothesis strategy for random nested pipelines whose stages append to a ledger (issue 11).

A case is a root pipeline plus the child pipelines its subpipeline stages call. Stages of one group
form a chain (each depends on the previous sibling) so that what runs, and in what order, does not
depend on timing; concurrency comes from parallel foreach loops. Nesting goes ``MAX_DEPTH`` levels
deep: foreach (sequential and parallel), trycatch (failing try, catch and finally stages, both error
scopes), conditional, router, subpipeline, return (firing or not), and leaves that succeed, fail for
good (propagating or continuing), fail a few times within their retries, or are not safe to repeat.
Leaves read earlier stages' outputs (``{{upstream.x}}``), nested ones included, so what a resumed
run sees of its upstream is compared with the uninterrupted run too.

Timing-dependent shapes are not generated: no return under a parallel foreach (which iterations
started before it fired depends on timing), no ``break_on_error`` in a parallel foreach, and no
failure that runs out of retries on one attempt count but not on another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

MAX_DEPTH = 3
# Stages per case (all pipelines together), so the number of commit boundaries stays in reach.
STAGE_BUDGET = 16
ROOT = "gen"

_RETRY = {"initial_delay_ms": 1, "max_delay_ms": 2, "jitter": False}


@dataclass
class _Case:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: int = 0
    children: int = 0

    def room(self) -> bool:
        return self.stages < STAGE_BUDGET


@dataclass
class _Pipeline:
    stages: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0

    def new_id(self) -> str:
        self.n += 1
        return f"s{self.n}"


@dataclass(frozen=True)
class _Where:
    """Where a block is generated: nesting depth, loop context, and the leaves it may read."""

    depth: int
    looped: bool = False
    parallel: bool = False  # under a parallel foreach of the same run: no return here
    refs: tuple[str, ...] = ()


def _leaf(draw: Any, case: _Case, p: _Pipeline, where: _Where) -> tuple[str, tuple[str, ...]]:
    sid = p.new_id()
    kind = draw(st.sampled_from(["ok", "ok", "flaky", "fail", "unsafe"]))
    value: Any = sid
    if where.looped:
        value = {"id": sid, "item": "{{context.item}}"}
    if where.refs and draw(st.booleans()):
        value = {"id": sid, "saw": "{{upstream." + draw(st.sampled_from(where.refs)) + "}}"}
    stage: dict[str, Any] = {"id": sid, "component": "gen_step",
                             "config": {"ledger": "{{input.ledger}}", "value": value}}
    if kind == "flaky":
        fails = draw(st.integers(1, 2))
        stage["config"]["fail_attempts"] = fails
        stage["retry_config"] = {"max_retries": fails + draw(st.integers(0, 1)), **_RETRY}
    elif kind == "fail":
        stage["config"]["fail_attempts"] = 1000
        stage["on_error"] = draw(st.sampled_from(["propagate", "continue"]))
        retries = draw(st.integers(0, 1))
        if retries:
            stage["retry_config"] = {"max_retries": retries, **_RETRY}
    elif kind == "unsafe":
        stage["component"] = "gen_unsafe_step"
    p.stages.append(stage)
    case.stages += 1
    return sid, (sid,)


def _block(draw: Any, case: _Case, p: _Pipeline, where: _Where, lo: int = 1,
           hi: int = 3) -> tuple[list[str], tuple[str, ...]]:
    """A chain of sibling stages; returns their ids and the leaves nested in them that run once."""
    size = draw(st.integers(lo, hi)) if case.room() else min(lo, 1)
    ids: list[str] = []
    leaves: tuple[str, ...] = ()
    refs = where.refs
    for _ in range(size):
        sid, own = _node(draw, case, p, _Where(where.depth, where.looped, where.parallel, refs))
        stage = next(s for s in p.stages if s["id"] == sid)
        if ids:
            stage["depends_on"] = [ids[-1]]
        ids.append(sid)
        leaves += own
        refs = refs + own
    return ids, leaves


def _node(draw: Any, case: _Case, p: _Pipeline, where: _Where) -> tuple[str, tuple[str, ...]]:
    kinds = ["leaf"]
    if where.depth < MAX_DEPTH and case.room():
        kinds += ["conditional", "router", "foreach", "trycatch", "subpipeline"]
    if not where.parallel:
        kinds.append("return")
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return _leaf(draw, case, p, where)
    sid = p.new_id()
    stage: dict[str, Any] = {"id": sid, "component": kind, "config": {}}
    p.stages.append(stage)
    case.stages += 1
    inner = _Where(where.depth + 1, where.looped, where.parallel, where.refs)
    config = stage["config"]
    if kind == "return":
        config.update(condition=draw(st.booleans()), return_value={"returned_by": sid})
        return sid, ()
    if kind == "conditional":
        yes, yes_leaves = _block(draw, case, p, inner, 0, 2)
        no, no_leaves = _block(draw, case, p, inner, 0, 2)
        config.update(condition=draw(st.booleans()), true_branch_stages=yes, false_branch_stages=no)
        return sid, yes_leaves + no_leaves
    if kind == "router":
        a, a_leaves = _block(draw, case, p, inner, 0, 2)
        b, b_leaves = _block(draw, case, p, inner, 0, 2)
        config.update(value=draw(st.sampled_from(["a", "b", "none"])), routes={"a": a, "b": b},
                      default_route=draw(st.sampled_from([None, "a"])))
        return sid, a_leaves + b_leaves
    if kind == "foreach":
        parallel = draw(st.booleans())
        body, _ = _block(draw, case, p, _Where(where.depth + 1, True, where.parallel or parallel, where.refs))
        config.update(items=list(range(draw(st.integers(1, 3)))), loop_stages=body, parallel=parallel,
                      max_parallel=2, break_on_error=False if parallel else draw(st.booleans()))
        return sid, ()  # one result per item: nothing nested is visible outside the loop
    if kind == "trycatch":
        tried, try_leaves = _block(draw, case, p, inner)
        after_try = _Where(inner.depth, inner.looped, inner.parallel, inner.refs + try_leaves)
        catch, catch_leaves = _block(draw, case, p, after_try, 0, 2)
        after_catch = _Where(inner.depth, inner.looped, inner.parallel, after_try.refs + catch_leaves)
        fin, fin_leaves = _block(draw, case, p, after_catch, 0, 2)
        config.update(try_stages=tried, catch_stages=catch, finally_stages=fin,
                      error_scope=draw(st.sampled_from(["continue", "propagate"])))
        return sid, try_leaves + catch_leaves + fin_leaves
    # subpipeline: a child pipeline of its own, one level deeper
    case.children += 1
    child_id = f"{ROOT}_c{case.children}"
    _pipeline(draw, case, child_id, where.depth + 1)
    config.update(pipeline_id=child_id, input_data={"ledger": "{{input.ledger}}"})
    return sid, ()


def _pipeline(draw: Any, case: _Case, pipeline_id: str, depth: int) -> None:
    p = _Pipeline()
    case.pipelines[pipeline_id] = {"stages": p.stages}  # filled in place
    _block(draw, case, p, _Where(depth), 1, 4 if depth == 0 else 3)


@st.composite
def cases(draw: Any) -> dict[str, Any]:
    """A root pipeline (id ``gen``) and its child pipelines, as FlowMason pipeline dicts."""
    case = _Case()
    _pipeline(draw, case, ROOT, 0)
    return {"root": ROOT, "pipelines": case.pipelines}
