"""LLM nodes (FlowMason's generator, critic, improver, selector, synthesizer) and their providers.

Providers are named in the daemon's configuration (``providers`` + ``default_provider``) and built
once with ``build_providers``; nodes reach them through ``context.services["providers"]``.

The names below are imported from their modules at first use (PEP 562): importing a submodule
such as ``llm.settings`` (the pipeline validator does) does not import the providers (issue 15).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF = {
    "LLMProvider": "providers", "LLMRequest": "providers", "LLMResponse": "providers",
    "ProviderConfig": "providers", "ProviderRegistry": "providers", "build_providers": "providers",
    "read_api_key": "providers", "LLMSettings": "settings",
}

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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
