"""Engine test fixtures: a registry with the test components, a ledger file, a hook recorder."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Iterator, Protocol

import pytest

from flowmasond import testing
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.dag import RunOutcome
from flowmasond.engine.registry import ComponentInput, ComponentRegistry, operator
from flowmasond.testing import EventRecorder, run_pipeline

# Component metadata timeout of `meta_timeout_sleep`; tests compare it with stage-level overrides.
META_TIMEOUT_MS = 150


@operator("meta_timeout_sleep", description="Sleep; its metadata sets a short default timeout.",
          timeout_ms=META_TIMEOUT_MS)
class MetaTimeoutSleep:
    """Sleep ``seconds`` under a component-level default timeout of META_TIMEOUT_MS."""

    class Input(ComponentInput):
        seconds: float

    async def execute(self, input: Input, context: ExecutionContext) -> dict[str, Any]:
        await asyncio.sleep(input.seconds)
        return {"slept": input.seconds}


class Run(Protocol):
    def __call__(self, definition: dict[str, Any], inputs: dict[str, Any] | None = None,
                 **kwargs: Any) -> Awaitable[RunOutcome]: ...


@pytest.fixture(autouse=True)
def _fresh_testing_state() -> Iterator[None]:
    """Barrier and counter state never leaks from one test into the next."""
    testing.reset()
    yield
    testing.reset()


@pytest.fixture
def registry() -> ComponentRegistry:
    """Built-ins, flowmasond.testing's components and this directory's test components."""
    registry = testing.build_registry()
    registry.register(MetaTimeoutSleep)
    return registry


@pytest.fixture
def ledger(tmp_path: Any) -> str:
    """Path of the side-effect ledger that `record` stages append to."""
    return str(tmp_path / "ledger.jsonl")


@pytest.fixture
def recorder() -> EventRecorder:
    """Records every hook callback of the runs it is attached to."""
    return EventRecorder()


@pytest.fixture
def run(registry: ComponentRegistry, recorder: EventRecorder) -> Run:
    """Run a pipeline dict on a fresh DAGExecutor observed by ``recorder``."""
    async def go(definition: dict[str, Any], inputs: dict[str, Any] | None = None, **kwargs: Any) -> RunOutcome:
        kwargs.setdefault("hooks", recorder)
        return await run_pipeline(definition, inputs, registry=registry, **kwargs)
    return go
