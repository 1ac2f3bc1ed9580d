"""A pinned pipeline's shape for viewers: stages, dependencies and control-flow ownership.

`runs.show` sends it so that a client can draw the DAG with control-flow children nested under
their owner without knowing which config fields of which component list child stages (that rule
lives in one place, ``child_stage_ids``).
"""

from __future__ import annotations

from typing import Any

from flowmasond.components.control_flow_components import child_stage_ids
from flowmasond.engine.models import PipelineConfig


def run_graph(pipeline: PipelineConfig) -> dict[str, Any]:
    """``{"top": [ids], "stages": [{id, component_type, name, depends_on, children, config}]}``.

    ``top`` lists the stages no control-flow stage owns, in file order; ``children`` maps a
    control-flow field (``loop_stages``, ``routes.high``...) to the stage ids it owns.
    """
    ids = {s.id for s in pipeline.stages}
    owned: set[str] = set()
    stages: list[dict[str, Any]] = []
    for stage in pipeline.stages:
        children = {field: [c for c in kids if c in ids and c != stage.id]
                    for field, kids in child_stage_ids(stage.component_type, stage.config).items()}
        for kids in children.values():
            owned.update(kids)
        stages.append({"id": stage.id, "component_type": stage.component_type, "name": stage.name,
                       "depends_on": list(stage.depends_on), "children": children, "config": stage.config})
    return {"top": [s.id for s in pipeline.stages if s.id not in owned], "stages": stages}
