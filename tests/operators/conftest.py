"""Fixtures for calling built-in operators directly, the way the engine does."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

import pytest

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentRegistry

OPERATOR_MODULES = (
    "flowmasond.components.operators.shell",
    "flowmasond.components.operators.http",
    "flowmasond.components.operators.data",
    "flowmasond.components.operators.misc",
)


class RunOperator(Protocol):
    def __call__(self, name: str, config: dict[str, Any], **context: Any) -> Awaitable[Any]: ...


@pytest.fixture
def registry() -> ComponentRegistry:
    """A fresh registry holding only the operator modules."""
    registry = ComponentRegistry()
    for module in OPERATOR_MODULES:
        registry.register_module(module)
    return registry


@pytest.fixture
def make_context() -> Callable[..., ExecutionContext]:
    """Build an ExecutionContext with test defaults; keyword arguments override fields."""
    def make(**overrides: Any) -> ExecutionContext:
        fields: dict[str, Any] = {
            "run_id": "run-1", "pipeline_id": "pipe", "stage_id": "step", "stage_path": "step",
            "attempt": 1, "cancellation": CancellationToken(),
        }
        fields.update(overrides)
        return ExecutionContext(**fields)
    return make


@pytest.fixture
def run_operator(registry: ComponentRegistry, make_context: Callable[..., ExecutionContext]) -> RunOperator:
    """Validate ``config`` with the operator's Input model and await its ``execute``."""
    async def run(name: str, config: dict[str, Any], **context: Any) -> Any:
        meta = registry.meta(name)
        data = meta.input_model.model_validate(config)
        return await registry.instance(name).execute(data, make_context(**context))
    return run
