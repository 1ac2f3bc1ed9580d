"""The DAG layout of the web view, on generated graphs: every dependency points right, no boxes overlap."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowmason_client.ui.dag import COL_GAP, MAX_CHILD_LINES, NODE_W, layout


@st.composite
def graphs(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A random acyclic pipeline graph (each stage depends on earlier ones), some stages owning children."""
    count = draw(st.integers(min_value=1, max_value=12))
    ids = [f"s{i}" for i in range(count)]
    stages = []
    for i, sid in enumerate(ids):
        deps = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=3)) if i else []
        stages.append({"id": sid, "component_type": "shell", "depends_on": deps, "children": {}})
    rows = [{"path": sid, "status": draw(st.sampled_from(["success", "failed", "running", "skipped"]))}
            for sid in ids]
    owner = draw(st.sampled_from(ids))
    iterations = draw(st.integers(min_value=0, max_value=40))
    kid = {"id": "kid", "component_type": "shell", "depends_on": [], "children": {}}
    next(s for s in stages if s["id"] == owner)["children"] = {"loop_stages": ["kid"]}
    rows += [{"path": f"{owner}/{n}/kid", "status": "success", "started_at": float(n), "finished_at": n + 0.5,
              "duration_ms": 500.0} for n in range(iterations)]
    return {"top": ids, "stages": [*stages, kid]}, rows


@settings(max_examples=150, deadline=None)
@given(graph=graphs())
def test_dependencies_point_right_and_boxes_do_not_overlap(graph: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    """Each stage sits in a column right of all its dependencies; boxes are disjoint and inside the canvas."""
    definition, rows = graph
    drawn = layout(definition, rows, run_status="running", now=100.0)
    nodes = {n.path: n for n in drawn.nodes}
    assert set(nodes) == set(definition["top"]), "every top-level stage is drawn once; children are nested"
    for stage in definition["stages"]:
        for dep in stage["depends_on"]:
            assert nodes[dep].x + NODE_W + COL_GAP <= nodes[stage["id"]].x
    boxes = sorted(drawn.nodes, key=lambda n: (n.x, n.y))
    for a in boxes:
        assert 0 <= a.x and a.x + NODE_W <= drawn.width and 0 <= a.y and a.y + a.h <= drawn.height
        for b in boxes:
            if a is not b and a.x == b.x:
                assert a.y + a.h <= b.y or b.y + b.h <= a.y, (a.path, b.path)
    assert len(drawn.edges) == sum(len(s["depends_on"]) for s in definition["stages"])


@settings(max_examples=50, deadline=None)
@given(graph=graphs())
def test_a_control_flow_box_lists_its_executions_up_to_a_bound(
        graph: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    """The owner box shows each child execution (or '+N more' past the bound) and each gets a timing bar."""
    definition, rows = graph
    owner = next(s["id"] for s in definition["stages"] if s["children"])
    executions = [r["path"] for r in rows if r["path"].startswith(owner + "/")]
    drawn = layout(definition, rows, run_status="succeeded", now=100.0)
    lines = next(n for n in drawn.nodes if n.path == owner).children
    if not executions:
        assert [line.label for line in lines] == ["loop_stages: kid"]
    elif len(executions) <= MAX_CHILD_LINES:
        assert [line.path for line in lines] == executions
    else:
        assert [line.path for line in lines[:-1]] == executions[:MAX_CHILD_LINES]
        assert lines[-1].label == f"+{len(executions) - MAX_CHILD_LINES} more"
    assert [b.path for b in drawn.bars] == executions  # only the timed rows get bars, in start order
