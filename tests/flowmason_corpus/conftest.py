"""Fixtures of the FlowMason corpus: the local API, the fake LLM answering by role, the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from flowmasond.components.llm.providers import ProviderConfig, ProviderRegistry, build_providers
from flowmasond.engine.dag import DAGExecutor
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.pipelines.catalog import PipelineCatalog
from llm.fake_chat import FakeChatServer

from .corpus_support import CORPUS, LocalApi, llm_by_role


@pytest.fixture
def api() -> Iterator[LocalApi]:
    """The local HTTP API the corpus's http-request stages call."""
    server = LocalApi()
    yield server
    server.close()


@pytest.fixture
def fake_llm() -> Iterator[FakeChatServer]:
    """The fake chat-completions server, answering every request by the node's role."""
    server = FakeChatServer()
    server.default = llm_by_role
    yield server
    server.close()


@pytest.fixture(scope="module")
def registry() -> ComponentRegistry:
    """Every built-in component."""
    return ComponentRegistry.with_builtins()


@pytest.fixture(scope="module")
def catalog(registry: ComponentRegistry) -> PipelineCatalog:
    """The corpus folder loaded strictly: a FlowMason file must not even need a warning."""
    catalog = PipelineCatalog(registry, [CORPUS], strict=True)
    catalog.load_all()
    return catalog


@pytest.fixture
async def providers(fake_llm: FakeChatServer) -> AsyncIterator[ProviderRegistry]:
    """One provider pointing at the fake server."""
    registry = build_providers({"local": ProviderConfig(base_url=fake_llm.base_url, default_model="test-model",
                                                        timeout_s=5.0)}, "local")
    yield registry
    await registry.aclose()


@pytest.fixture
def executor(registry: ComponentRegistry, catalog: PipelineCatalog, providers: ProviderRegistry) -> DAGExecutor:
    """An executor whose subpipelines come from the corpus folder."""
    return DAGExecutor(registry, pipelines=catalog.get, providers=providers, default_provider="local")
