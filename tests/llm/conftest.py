"""Fixtures: the fake chat-completions server, providers pointing at it, and a direct node runner."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from flowmasond.components.llm.providers import ProviderConfig, ProviderRegistry, build_providers
from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.models import StageConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.interfaces import UsageMetrics

from .fake_chat import FakeChatServer

# Prices used by the `providers` fixture (USD per million tokens).
PRICE_IN = 2.0
PRICE_OUT = 8.0


@pytest.fixture
def fake_llm() -> Iterator[FakeChatServer]:
    """A running fake chat-completions server, closed after the test."""
    server = FakeChatServer()
    yield server
    server.close()


@pytest.fixture
def local_config(fake_llm: FakeChatServer) -> Callable[..., ProviderConfig]:
    """Makes provider configs pointing at the fake server, with the test prices."""

    def make(**overrides: Any) -> ProviderConfig:
        values: dict[str, Any] = {"base_url": fake_llm.base_url, "default_model": "test-model",
                                  "price_per_million_input": PRICE_IN,
                                  "price_per_million_output": PRICE_OUT, "timeout_s": 5.0}
        values.update(overrides)
        return ProviderConfig(**values)

    return make


@pytest.fixture
async def providers(local_config: Callable[..., ProviderConfig]) -> AsyncIterator[ProviderRegistry]:
    """One provider, ``local``, pointing at the fake server; the default."""
    registry = build_providers({"local": local_config()}, "local")
    yield registry
    await registry.aclose()


@pytest.fixture
def components() -> ComponentRegistry:
    """A registry holding the LLM nodes only."""
    registry = ComponentRegistry()
    registry.register_module("flowmasond.components.llm.nodes")
    return registry


RunStage = Callable[..., Awaitable[tuple[Any, list[UsageMetrics]]]]


@pytest.fixture
def run_stage(components: ComponentRegistry, providers: ProviderRegistry) -> RunStage:
    """Run one stage's node directly: ``await run_stage({...stage...})`` -> (output, usage reports).

    ``usage`` collects the reports when the node raises.
    """

    async def run(stage: dict[str, Any], *, registry: ProviderRegistry | None = None,
                  services: dict[str, Any] | None = None,
                  usage: list[UsageMetrics] | None = None) -> tuple[Any, list[UsageMetrics]]:
        config = StageConfig.model_validate(stage)
        meta = components.meta(config.component_type)
        usage = [] if usage is None else usage
        if services is None:
            services = {"providers": registry or providers, "usage_sink": usage.append}
        context = ExecutionContext(
            run_id="run-1", pipeline_id="p", stage_id=config.id, stage_path=config.id, attempt=1,
            cancellation=CancellationToken(), stage=config, services=services,
        )
        output = await components.instance(config.component_type).execute(
            meta.input_model.model_validate(config.config), context)
        return output, usage

    return run
