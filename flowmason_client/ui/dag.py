"""Layout of a run's DAG and timing bars for the web view: plain data, drawn as SVG by the templates.

Top-level stages are placed in columns by their longest dependency chain; a control-flow stage is
a taller box listing the stage executions under it (loop iterations, the branch taken, try/catch
phases), each a link to its own page. The layout is computed here, on the server, so the page needs
no graph library and no script to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping, Sequence

# Geometry in SVG user units (pixels at 100 %).
NODE_W = 210
HEADER_H = 44
CHILD_H = 19
COL_GAP = 64
ROW_GAP = 22
MARGIN = 12
# A foreach over thousands of items must not draw thousands of lines inside one box.
MAX_CHILD_LINES = 14
BAR_ROW_H = 20
BAR_LABEL_W = 230
BAR_W = 520
MAX_BARS = 300

FINISHED_RUN = {"succeeded", "failed", "cancelled", "interrupted"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildLine:
    """One execution under a control-flow stage (``0/transform``), or a stage not run yet."""

    path: str  # full stage path, for the link and for tests
    label: str  # the path relative to the owner
    status: str
    duration: str
    y: int
    linked: bool  # False for a "+N more" line or a stage that never ran


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A top-level stage box."""

    path: str
    label: str
    component_type: str
    status: str
    duration: str
    x: int
    y: int
    h: int
    children: tuple[ChildLine, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """A dependency arrow, as an SVG path."""

    d: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One stage execution on the timeline."""

    path: str
    status: str
    y: int
    x: float
    w: float
    duration: str


@dataclass(slots=True, kw_only=True)
class Layout:
    """Everything the DAG and timeline templates draw."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    bars: list[Bar] = field(default_factory=list)
    bars_height: int = 0
    bars_hidden: int = 0
    span: str = ""


def display_status(row: Mapping[str, Any], run_status: str | None) -> str:
    """A stage row's status as shown: an attempt left open by a finished run was interrupted."""
    status = str(row.get("status") or "not_started")
    if status == "running" and run_status in FINISHED_RUN:
        return "interrupted"
    return status


def format_duration(ms: float | None) -> str:
    """``850 ms``, ``3.2 s``, ``4 min 05 s``; empty for no value."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def row_duration_ms(row: Mapping[str, Any], now: float) -> float | None:
    """Finished rows report their duration; a running one has lasted since it started."""
    if row.get("duration_ms") is not None:
        return float(row["duration_ms"])
    started = row.get("started_at")
    if isinstance(started, (int, float)) and row.get("status") == "running":
        return max(now - started, 0.0) * 1000.0
    return None


def layout(graph: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]], *,
           run_status: str | None, now: float) -> Layout:
    """Place the top-level stages of ``graph`` and the executions in ``rows`` (from `runs.show`)."""
    graph = graph or {"top": [], "stages": []}
    stages = {s["id"]: s for s in graph.get("stages", [])}
    by_path = {str(r["path"]): r for r in rows}
    top = [sid for sid in graph.get("top", []) if sid in stages]
    if not top:  # an older daemon sent no graph: draw the rows we have, unconnected
        top = [p for p in by_path if "/" not in p]
    owner = {child: sid for sid, s in stages.items() for kids in s.get("children", {}).values() for child in kids}

    def top_of(stage_id: str) -> str:
        seen = 0
        while stage_id in owner and seen <= len(owner):
            stage_id, seen = owner[stage_id], seen + 1
        return stage_id

    top_set = set(top)
    deps = {sid: sorted({top_of(d) for d in stages.get(sid, {}).get("depends_on", [])} & top_set - {sid},
                        key=top.index) for sid in top}
    depth: dict[str, int] = {}

    def depth_of(sid: str, trail: frozenset[str] = frozenset()) -> int:
        if sid not in depth:
            # A validated pipeline has no cycles; the trail only keeps a broken one from recursing forever.
            depth[sid] = 1 + max((depth_of(d, trail | {sid}) for d in deps[sid] if d not in trail), default=-1)
        return depth[sid]

    columns: dict[int, list[str]] = {}
    for sid in top:
        columns.setdefault(depth_of(sid), []).append(sid)

    out = Layout()
    placed: dict[str, Node] = {}
    for col in sorted(columns):
        y = MARGIN
        for sid in columns[col]:
            node = _node(sid, stages.get(sid, {}), by_path, owner, x=MARGIN + col * (NODE_W + COL_GAP), y=y,
                         run_status=run_status, now=now)
            placed[sid] = node
            out.nodes.append(node)
            y += node.h + ROW_GAP
        out.height = max(out.height, y - ROW_GAP + MARGIN)
    out.width = MARGIN * 2 + (max(columns, default=0) + 1) * (NODE_W + COL_GAP) - COL_GAP
    for sid in top:
        for dep in deps[sid]:
            a, b = placed[dep], placed[sid]
            x1, y1, x2, y2 = a.x + NODE_W, a.y + HEADER_H // 2, b.x, b.y + HEADER_H // 2
            mid = (x1 + x2) / 2
            out.edges.append(Edge(d=f"M{x1},{y1} C{mid:.0f},{y1} {mid:.0f},{y2} {x2 - 6},{y2}"))
    _timeline(out, rows, run_status=run_status, now=now)
    return out


def _node(sid: str, stage: Mapping[str, Any], by_path: Mapping[str, Mapping[str, Any]], owner: Mapping[str, str],
          *, x: int, y: int, run_status: str | None, now: float) -> Node:
    row = by_path.get(sid, {"status": "not_started"})
    children: list[ChildLine] = []
    if stage.get("children"):
        executed = sorted((p for p in by_path if p.startswith(sid + "/")), key=lambda p: (_start_key(by_path[p]), p))
        entries: list[tuple[str, str, str, bool]] = []
        for path in executed:
            child = by_path[path]
            entries.append((path, path[len(sid) + 1:], display_status(child, run_status), True))
        if not entries:
            # Not run yet: list what it owns, by field, so the box shows what will happen.
            for field_name, kids in stage["children"].items():
                for kid in kids:
                    entries.append((kid, f"{field_name}: {kid}", "not_started", False))
        shown = entries[:MAX_CHILD_LINES]
        for i, (path, label, status, linked) in enumerate(shown):
            child_row = by_path.get(path, {})
            children.append(ChildLine(path=path, label=label, status=status, linked=linked,
                                      duration=format_duration(row_duration_ms(child_row, now)) if linked else "",
                                      y=y + HEADER_H + i * CHILD_H))
        if len(entries) > len(shown):
            children.append(ChildLine(path="", label=f"+{len(entries) - len(shown)} more", status="more",
                                      duration="", linked=False, y=y + HEADER_H + len(shown) * CHILD_H))
    h = HEADER_H + (len(children) * CHILD_H + 6 if children else 0)
    return Node(path=sid, label=sid,
                component_type=str(stage.get("component_type") or row.get("component_type") or ""),
                status=display_status(row, run_status), duration=format_duration(row_duration_ms(row, now)),
                x=x, y=y, h=h, children=tuple(children))


def _start_key(row: Mapping[str, Any]) -> float:
    """When a row started; rows not started yet sort last."""
    started = row.get("started_at")
    return float(started) if isinstance(started, (int, float)) else float("inf")


def _timeline(out: Layout, rows: Sequence[Mapping[str, Any]], *, run_status: str | None, now: float) -> None:
    timed = [r for r in rows if isinstance(r.get("started_at"), (int, float))]
    if not timed:
        return
    timed.sort(key=lambda r: (r["started_at"], str(r["path"])))
    t0 = min(r["started_at"] for r in timed)
    ends = [_end(r, now) for r in timed]
    span = max(max(ends) - t0, 1e-3)
    out.span = format_duration(span * 1000.0)
    out.bars_hidden = max(len(timed) - MAX_BARS, 0)
    for i, (r, end) in enumerate(zip(timed[:MAX_BARS], ends[:MAX_BARS], strict=True)):
        x = BAR_LABEL_W + (r["started_at"] - t0) / span * BAR_W
        w = max((end - r["started_at"]) / span * BAR_W, 2.0)
        out.bars.append(Bar(path=str(r["path"]), status=display_status(r, run_status), y=i * BAR_ROW_H,
                            x=x, w=w, duration=format_duration(row_duration_ms(r, now))))
    out.bars_height = len(out.bars) * BAR_ROW_H


def _end(row: Mapping[str, Any], now: float) -> float:
    finished = row.get("finished_at")
    if isinstance(finished, (int, float)):
        return float(finished)
    return now if row.get("status") == "running" else float(row["started_at"])
