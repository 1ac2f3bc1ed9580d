"""LLM providers: their configuration, the request/response types, and the registry nodes use.

API keys are read once, when the providers are built, and kept as ``SecretStr``: no repr, log line,
error message or ``describe()`` output ever contains one. A key read from ``api_key_env`` is then
removed from the daemon's environment, so no stage process or ``{{env.X}}`` template can reach it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from flowmasond.engine.interfaces import UsageMetrics
from flowmasond.environment import remove_secret
from flowmasond.errors import ConfigurationError

log = structlog.get_logger("flowmasond.llm")

_PER_MILLION = 1_000_000
# Largest provider response body read unless the provider sets max_response_bytes.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024


class ProviderConfig(BaseModel):
    """One named provider in the daemon's configuration (``[providers.<name>]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["openai_compatible"] = "openai_compatible"
    base_url: str = Field(min_length=1)  # e.g. https://api.openai.com/v1, http://127.0.0.1:8080/v1
    default_model: str = Field(min_length=1)
    api_key_env: str | None = None  # name of the environment variable holding the key
    api_key_file: str | None = None  # path of a file holding the key (systemd credentials, secrets)
    price_per_million_input: float = Field(default=0.0, ge=0)  # USD
    price_per_million_output: float = Field(default=0.0, ge=0)  # USD
    timeout_s: float = Field(default=60.0, gt=0)
    # A chat completion is a few KB; a gateway streaming without end must not fill our memory.
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, gt=0)
    default_temperature: float | None = Field(default=None, ge=0, le=2)
    default_max_tokens: int | None = Field(default=None, ge=1)
    # Ask for server-sent events ("stream": true) so that followers see tokens as they arrive.
    # Off by default: the cost of a streamed call is known only from servers that honour
    # stream_options.include_usage (OpenAI, vLLM, llama.cpp's server do).
    stream: bool = False
    # Hidden from repr: some gateways take their credential in a custom header.
    extra_headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderConfig:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set api_key_env or api_key_file, not both")
        return self

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What a call with these token counts costs at this provider's prices."""
        # One division of an exact sum keeps the result correctly rounded.
        return (input_tokens * self.price_per_million_input
                + output_tokens * self.price_per_million_output) / _PER_MILLION

    @property
    def key_source(self) -> str | None:
        """Where the key comes from (``env:VAR`` / ``file:PATH``), never the key itself."""
        if self.api_key_env:
            return f"env:{self.api_key_env}"
        if self.api_key_file:
            return f"file:{self.api_key_file}"
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-safe view for the socket and the CLI: no key, no header values."""
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "default_model": self.default_model,
            "api_key": self.key_source,
            "price_per_million_input": self.price_per_million_input,
            "price_per_million_output": self.price_per_million_output,
            "timeout_s": self.timeout_s,
            "max_response_bytes": self.max_response_bytes,
            "default_temperature": self.default_temperature,
            "default_max_tokens": self.default_max_tokens,
            "stream": self.stream,
            "extra_headers": sorted(self.extra_headers),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMRequest:
    """One completion request; ``None`` settings fall back to the provider's defaults."""

    prompt: str
    system_prompt: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    top_p: float | None = None
    # Earlier turns ({"role": ..., "content": ...}) placed between the system prompt and ``prompt``.
    messages: tuple[Mapping[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMResponse:
    """A provider's answer, with the tokens it billed and what they cost."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str
    provider: str
    finish_reason: str | None = None
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def usage(self) -> UsageMetrics:
        """This call's usage in the engine's terms (the engine adds the duration)."""
        return UsageMetrics(input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                            cost_usd=self.cost_usd, provider=self.provider, model=self.model)


class TokenCallback(Protocol):
    """Receives each piece of a streamed answer as it arrives (not durable; may be dropped)."""

    def __call__(self, text: str) -> None: ...


class LLMProvider(Protocol):
    """What a provider offers the nodes. Providers never retry: the engine's retry policy does."""

    name: str
    config: ProviderConfig

    async def complete(self, request: LLMRequest, *, on_token: TokenCallback | None = None) -> LLMResponse:
        """Run one completion; failures raise ``ComponentError`` with a classifying ``ErrorType``.

        A streaming provider hands each piece of the answer to ``on_token`` as it arrives; the
        response still holds the whole answer.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def read_api_key(name: str, config: ProviderConfig,
                 environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """The key named by ``api_key_env`` or ``api_key_file``, or None when none is configured."""
    if config.api_key_env:
        value = (os.environ if environ is None else environ).get(config.api_key_env, "")
        if not value.strip():
            raise ConfigurationError("the API key environment variable is not set or empty",
                                     provider=name, api_key_env=config.api_key_env)
        return SecretStr(value.strip())
    if config.api_key_file:
        path = Path(config.api_key_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            # Only the reason: an OSError's text names the path, never the content.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigurationError(f"cannot read the API key file: {reason}",
                                     provider=name, api_key_file=str(path)) from None
        if not value.strip():
            raise ConfigurationError("the API key file is empty", provider=name, api_key_file=str(path))
        if mode & stat.S_IROTH:
            log.warning("api_key_file_world_readable", provider=name, api_key_file=str(path))
        return SecretStr(value.strip())
    return None


@dataclass(slots=True)
class ProviderRegistry:
    """Providers by name, and the one a stage without ``provider`` uses."""

    providers: dict[str, LLMProvider] = field(default_factory=dict)
    default: str | None = None

    def __post_init__(self) -> None:
        if self.default is not None and self.default not in self.providers:
            raise ConfigurationError("default_provider names no configured provider",
                                     default_provider=self.default, known=self.names())

    def names(self) -> list[str]:
        return sorted(self.providers)

    def __contains__(self, name: object) -> bool:
        return name in self.providers

    def __len__(self) -> int:
        return len(self.providers)

    def get(self, name: str | None = None) -> LLMProvider:
        """The provider called ``name``, or the default one for ``None``."""
        if name is None:
            if self.default is None:
                raise ConfigurationError("the stage names no provider and no default_provider is configured",
                                         known=self.names())
            name = self.default
        try:
            return self.providers[name]
        except KeyError:
            raise ConfigurationError(f"unknown LLM provider {name!r}", provider=name,
                                     known=self.names()) from None

    def describe(self) -> dict[str, Any]:
        """A JSON-safe view of every provider (no keys) and the default."""
        return {"default": self.default,
                "providers": {n: p.config.describe() for n, p in sorted(self.providers.items())}}

    async def aclose(self) -> None:
        """Close every provider's connections."""
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception:  # noqa: BLE001 - one provider's close must not keep others open
                log.exception("provider_close_failed", provider=provider.name)


def build_providers(configs: Mapping[str, ProviderConfig], default: str | None = None, *,
                    environ: Mapping[str, str] | None = None,
                    transport: Any = None) -> ProviderRegistry:
    """Build every configured provider, reading API keys now so a missing key fails at start.

    With one provider and no ``default``, that provider is the default. ``transport`` (an
    ``httpx.AsyncBaseTransport``) is for embedding and tests.
    """
    # Imported here: openai_compat imports this module's types.
    from flowmasond.components.llm.openai_compat import OpenAICompatProvider

    if default is not None and default not in configs:
        raise ConfigurationError("default_provider names no configured provider",
                                 default_provider=default, known=sorted(configs))
    if default is None and len(configs) == 1:
        default = next(iter(configs))
    providers: dict[str, LLMProvider] = {}
    for name, config in configs.items():
        key = read_api_key(name, config, environ)
        providers[name] = OpenAICompatProvider(name, config, api_key=key, transport=transport)
        log.info("llm_provider_configured", provider=name, base_url=config.base_url,
                 model=config.default_model, api_key=config.key_source)
    if environ is None:
        # Only once every provider has read its key: two providers may share one variable.
        for config in configs.values():
            if config.api_key_env:
                remove_secret(config.api_key_env)
    return ProviderRegistry(providers, default)

