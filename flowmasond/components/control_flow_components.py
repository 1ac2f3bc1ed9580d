"""Declarations of the built-in control-flow components (FlowMason's config names).

They carry no ``execute``: ``flowmasond.engine.control_flow_handlers.ControlFlowHandler`` runs them, because
they schedule other stages. Stage ids listed in their branch/loop/phase fields run *under* the
control-flow stage, not as ordinary DAG stages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flowmasond.engine.expressions import ExpressionError, compile_expression
from flowmasond.engine.registry import ComponentInput, ComponentOutput, control_flow
from flowmasond.engine.interfaces import ErrorType


def _check_expression(value: str | None) -> str | None:
    """Compile a FlowMason expression field at load time, so a syntax error names the field."""
    if value is not None:
        try:
            compile_expression(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
    return value


@control_flow("conditional", description="Run true_branch_stages or false_branch_stages by a condition.")
class Conditional:
    class Input(ComponentInput):
        condition: Any = None
        # FlowMason: an expression (sandboxed) over input, upstream, context, env and `condition`.
        condition_expression: str | None = None
        true_branch_stages: list[str] = Field(default_factory=list)
        false_branch_stages: list[str] = Field(default_factory=list)
        pass_data: Any = None  # returned as `data`

        _expression = field_validator("condition_expression")(_check_expression)

        @model_validator(mode="after")
        def _has_condition(self) -> Any:
            if "condition" not in self.model_fields_set and self.condition_expression is None:
                raise ValueError("set condition or condition_expression")
            return self

    class Output(ComponentOutput):
        branch_taken: Literal["true", "false"]
        condition_result: bool
        condition_value: Any = None
        data: Any = None
        branch: bool  # this project's earlier name for condition_result
        executed: list[str]
        skipped: list[str]


@control_flow("router", description="Run the stages of the route whose key equals value.")
class Router:
    class Input(ComponentInput):
        value: Any = None
        # FlowMason: an expression (sandboxed) over input, upstream, context, env and `value`.
        value_expression: str | None = None
        routes: dict[str, list[str]]
        # A route key, or a list of stage ids, taken when no key matches.
        default_route: str | list[str] | None = None
        case_insensitive: bool = False
        pass_data: Any = None  # returned as `data`

        _expression = field_validator("value_expression")(_check_expression)

    class Output(ComponentOutput):
        route_taken: str  # the matched key, else "default" (as in FlowMason)
        original_value: Any = None
        matched_value: Any = None  # the value compared with the keys (after value_expression, case folding)
        stages_to_execute: list[str]
        stages_to_skip: list[str]
        data: Any = None
        route: str | None  # this project's earlier name for route_taken
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
        # FlowMason: keep only the items for which this expression (over the item variable,
        # `item`, input, upstream, context, env) is true; evaluated once, before the loop.
        filter_expression: str | None = None
        collect_results: bool = True  # False: `results` stays empty (large loops)

        _expression = field_validator("filter_expression")(_check_expression)

    class Output(ComponentOutput):
        results: list[Any]
        errors: list[dict[str, Any]]
        count: int  # items selected for the loop
        total_items: int  # items before filter_expression
        processed_items: int  # iterations that ran
        skipped_items: int  # filtered out, or not run after a break
        is_complete: bool  # every selected item was processed
        current_item: Any = None  # the last item processed
        current_index: int = 0


@control_flow("trycatch", description="Run try_stages; on failure catch_stages; always finally_stages.")
class TryCatch:
    class Input(ComponentInput):
        try_stages: list[str] = Field(min_length=1)
        catch_stages: list[str] = Field(default_factory=list)
        finally_stages: list[str] = Field(default_factory=list)
        # propagate (FlowMason's default): after catch/finally the trycatch still fails;
        # continue: the error is handled.
        error_scope: Literal["propagate", "continue"] = "propagate"
        # Only failures of these ErrorTypes are caught (empty: every failure).
        catch_error_types: list[str] = Field(default_factory=list)
        # Retries of each failing try stage that has no retry_config of its own.
        max_retries: int = Field(default=0, ge=0, le=100)
        retry_delay_ms: int = Field(default=1000, ge=0)
        pass_data: Any = None  # returned as `data`

        @field_validator("catch_error_types")
        @classmethod
        def _known_types(cls, value: list[str]) -> list[str]:
            names = {t.value for t in ErrorType}
            normalised = [v.strip().upper() for v in value]
            unknown = [v for v in normalised if v not in names]
            if unknown:
                raise ValueError(f"unknown error type(s) {unknown} (known: {', '.join(sorted(names))})")
            return normalised

    class Output(ComponentOutput):
        status: Literal["success", "caught", "error"]  # error: a failure catch_error_types let through
        error_occurred: bool
        error_message: str | None
        recovered: bool  # caught, the catch stages succeeded and error_scope is continue
        error: str | None  # this project's earlier name for error_message
        error_type: str | None
        failed_stage: str | None
        try_result: dict[str, Any] = Field(default_factory=dict)
        catch_result: dict[str, Any] = Field(default_factory=dict)
        data: Any = None


@control_flow("subpipeline", description="Run another pipeline as a child run and return its output.")
class SubPipeline:
    class Input(ComponentInput):
        pipeline_id: str
        input_data: dict[str, Any] = Field(default_factory=dict)
        pipeline_version: str | None = None  # the child's `version` must equal it
        timeout_ms: int | None = Field(default=None, gt=0)  # the child run is cancelled after it
        # propagate: a failed child fails this stage; continue: this stage succeeds with
        # status "failed" and `result` = default_result.
        on_error: Literal["propagate", "continue"] = "propagate"
        default_result: Any = None
        # A durable child run is always awaited and always isolated (it sees only input_data).
        async_execution: Literal[False] = False
        isolated: bool = False
        inherit_context: bool = True

    class Output(ComponentOutput):
        pipeline_id: str
        run_id: str
        status: Literal["completed", "failed", "timeout"]
        result: Any = None
        execution_time_ms: int | None = None
        error: str | None = None
        child_run_id: str  # this project's earlier name for run_id
        output: Any = None  # this project's earlier name for result


@control_flow("return", description="End the run early; return_value becomes the run output.")
class Return:
    class Input(ComponentInput):
        condition: Any = True
        # FlowMason: an expression (sandboxed) over input, upstream, context and env.
        condition_expression: str | None = None
        return_value: Any = None
        message: str | None = None
        status: str = "completed"

        _expression = field_validator("condition_expression")(_check_expression)

    class Output(ComponentOutput):
        should_return: bool
        return_value: Any = None
        message: str | None
        status: str
        returned: bool  # this project's earlier name for should_return


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
