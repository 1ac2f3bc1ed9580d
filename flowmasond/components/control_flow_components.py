"""Declarations of the built-in control-flow components (FlowMason's config names).

They carry no ``execute``: ``flowmasond.engine.control_flow_handlers.ControlFlowHandler`` runs them, because
they schedule other stages. Stage ids listed in their branch/loop/phase fields run *under* the
control-flow stage, not as ordinary DAG stages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from flowmasond.engine.registry import ComponentInput, ComponentOutput, control_flow


@control_flow("conditional", description="Run true_branch_stages or false_branch_stages by a condition.")
class Conditional:
    class Input(ComponentInput):
        condition: Any
        true_branch_stages: list[str] = Field(default_factory=list)
        false_branch_stages: list[str] = Field(default_factory=list)

    class Output(ComponentOutput):
        branch: bool
        executed: list[str]
        skipped: list[str]


@control_flow("router", description="Run the stages of the route whose key equals value.")
class Router:
    class Input(ComponentInput):
        value: Any
        routes: dict[str, list[str]]
        # A route key, or a list of stage ids, taken when no key matches.
        default_route: str | list[str] | None = None

    class Output(ComponentOutput):
        route: str | None
        executed: list[str]
        skipped: list[str]


@control_flow("foreach", description="Run loop_stages once per item, sequentially or in parallel.")
class ForEach:
    class Input(ComponentInput):
        items: Any
        loop_stages: list[str] = Field(min_length=1)
        item_variable: str = "item"
        index_variable: str = "index"
        parallel: bool = False
        max_parallel: int = Field(default=5, ge=1)
        break_on_error: bool = True

    class Output(ComponentOutput):
        results: list[Any]
        errors: list[dict[str, Any]]
        count: int


@control_flow("trycatch", description="Run try_stages; on failure catch_stages; always finally_stages.")
class TryCatch:
    class Input(ComponentInput):
        try_stages: list[str] = Field(min_length=1)
        catch_stages: list[str] = Field(default_factory=list)
        finally_stages: list[str] = Field(default_factory=list)
        # propagate: after catch/finally the trycatch still fails; continue: the error is handled.
        error_scope: Literal["propagate", "continue"] = "continue"

    class Output(ComponentOutput):
        status: Literal["success", "caught"]
        error: str | None
        error_type: str | None
        failed_stage: str | None


@control_flow("subpipeline", description="Run another pipeline as a child run and return its output.")
class SubPipeline:
    class Input(ComponentInput):
        pipeline_id: str
        input_data: dict[str, Any] = Field(default_factory=dict)

    class Output(ComponentOutput):
        child_run_id: str
        output: Any


@control_flow("return", description="End the run early; return_value becomes the run output.")
class Return:
    class Input(ComponentInput):
        condition: Any = True
        return_value: Any = None
        message: str | None = None

    class Output(ComponentOutput):
        returned: bool
        message: str | None


# The config fields of each control-flow type that name child stages.
CHILD_FIELDS: dict[str, tuple[str, ...]] = {
    "conditional": ("true_branch_stages", "false_branch_stages"),
    "router": ("routes", "default_route"),
    "foreach": ("loop_stages",),
    "trycatch": ("try_stages", "catch_stages", "finally_stages"),
    "subpipeline": (),
    "return": (),
}


def child_stage_ids(component_type: str, config: dict[str, Any]) -> dict[str, list[str]]:
    """The stage ids a control-flow stage owns, by config field (tolerant of malformed config)."""
    owned: dict[str, list[str]] = {}
    for field in CHILD_FIELDS.get(component_type, ()):
        value = config.get(field)
        if field == "routes" and isinstance(value, dict):
            for key, ids in value.items():
                if isinstance(ids, list):
                    owned[f"routes.{key}"] = [i for i in ids if isinstance(i, str)]
        elif isinstance(value, list):
            owned[field] = [i for i in value if isinstance(i, str)]
    return owned
