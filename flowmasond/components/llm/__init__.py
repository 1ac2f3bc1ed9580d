"""LLM nodes (FlowMason's generator, critic, improver, selector, synthesizer) and their providers.

Providers are named in the daemon's configuration (``providers`` + ``default_provider``) and built
once with ``build_providers``; nodes reach them through ``context.services["providers"]``.
"""

from __future__ import annotations

from flowmasond.components.llm.providers import (
    LLMProvider,
    LLMRequest,
    LLMResponse,
    ProviderConfig,
    ProviderRegistry,
    build_providers,
    read_api_key,
)
from flowmasond.components.llm.settings import LLMSettings

__all__ = [
    "LLMProvider",
    "LLMRequest",
    "LLMResponse",
    "LLMSettings",
    "ProviderConfig",
    "ProviderRegistry",
    "build_providers",
    "read_api_key",
]
