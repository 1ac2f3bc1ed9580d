"""Built-in components."""

from __future__ import annotations

# Modules whose decorated classes ComponentRegistry.with_builtins() registers.
BUILTIN_MODULES: tuple[str, ...] = (
    "flowmasond.components.control_flow_components",
    "flowmasond.components.operators.shell",
    "flowmasond.components.operators.http",
    "flowmasond.components.operators.data",
    "flowmasond.components.operators.misc",
    "flowmasond.components.operators.routing",
    "flowmasond.components.llm.nodes",
)
