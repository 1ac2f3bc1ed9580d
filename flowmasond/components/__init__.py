"""Built-in components."""

from __future__ import annotations

# Each built-in component type and the module declaring it. ComponentRegistry.with_builtins() knows
# every name from this table but imports a module only when a pipeline uses one of its types, so a
# cold run-once of a logger stage does not import the LLM, HTTP or data operators (issue 15).
# tests/registry/test_builtin_table.py checks the table against the modules' own declarations.
BUILTIN_COMPONENTS: dict[str, str] = {
    **dict.fromkeys(("conditional", "router", "foreach", "trycatch", "subpipeline", "return"),
                    "flowmasond.components.control_flow_components"),
    "shell": "flowmasond.components.operators.shell",
    "http_request": "flowmasond.components.operators.http",
    **dict.fromkeys(("json_transform", "filter", "variable_set", "schema_validate"),
                    "flowmasond.components.operators.data"),
    **dict.fromkeys(("logger", "sleep", "fail"), "flowmasond.components.operators.misc"),
    **dict.fromkeys(("loop", "output_router", "error_router"), "flowmasond.components.operators.routing"),
    **dict.fromkeys(("generator", "critic", "improver", "selector", "synthesizer"),
                    "flowmasond.components.llm.nodes"),
}

# Modules whose decorated classes are the built-in components, in declaration order.
BUILTIN_MODULES: tuple[str, ...] = tuple(dict.fromkeys(BUILTIN_COMPONENTS.values()))
