"""Provider configuration, API keys and the provider registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import structlog
from pydantic import ValidationError

from flowmasond.components.llm.providers import (
    LLMResponse,
    ProviderConfig,
    ProviderRegistry,
    build_providers,
    read_api_key,
)
from flowmasond.engine.interfaces import ErrorType, UsageMetrics
from flowmasond.errors import ComponentError, ConfigurationError

from .fake_chat import FakeChatServer, Received, Reply

SECRET = "sk-test-7f3a9c-DO-NOT-LEAK"


def config(**overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1", "default_model": "m"}
    values.update(overrides)
    return ProviderConfig(**values)


def test_key_is_read_from_the_named_environment_variable() -> None:
    """api_key_env names a variable whose stripped value becomes the key."""
    key = read_api_key("p", config(api_key_env="MY_KEY"), {"MY_KEY": f" {SECRET}\n"})
    assert key is not None and key.get_secret_value() == SECRET


def test_key_is_read_from_a_file(tmp_path: Path) -> None:
    """api_key_file names a file whose stripped content becomes the key."""
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    key = read_api_key("p", config(api_key_file=str(path)))
    assert key is not None and key.get_secret_value() == SECRET


def test_no_key_source_means_no_key() -> None:
    """A provider without api_key_env or api_key_file has no key (local servers)."""
    assert read_api_key("p", config()) is None


def test_missing_key_variable_is_a_configuration_error_naming_it() -> None:
    """An unset key variable fails at build time, naming the provider and the variable."""
    with pytest.raises(ConfigurationError) as info:
        build_providers({"openai": config(api_key_env="NOPE_KEY")}, environ={})
    assert info.value.context == {"provider": "openai", "api_key_env": "NOPE_KEY"}


def test_unreadable_key_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    """A key file that does not exist fails at build time, naming the provider and the path."""
    missing = tmp_path / "absent"
    with pytest.raises(ConfigurationError) as info:
        read_api_key("openai", config(api_key_file=str(missing)))
    assert info.value.context == {"provider": "openai", "api_key_file": str(missing)}


def test_empty_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A key file holding only whitespace is refused."""
    path = tmp_path / "key"
    path.write_text("\n")
    with pytest.raises(ConfigurationError, match="empty"):
        read_api_key("p", config(api_key_file=str(path)))


def test_both_key_sources_are_refused() -> None:
    """Setting api_key_env and api_key_file together is ambiguous and refused."""
    with pytest.raises(ValidationError, match="not both"):
        config(api_key_env="A", api_key_file="/b")


def test_unknown_config_keys_are_refused() -> None:
    """ProviderConfig forbids keys it does not declare (a typo is never silently ignored)."""
    with pytest.raises(ValidationError, match="api_kye_env"):
        config(api_kye_env="A")


def test_base_url_must_be_http_and_loses_its_trailing_slash() -> None:
    """base_url is checked for a scheme and normalised without a trailing slash."""
    assert config(base_url="https://api.example.com/v1/").base_url == "https://api.example.com/v1"
    with pytest.raises(ValidationError, match="http"):
        config(base_url="api.example.com/v1")


def test_cost_is_priced_per_million_tokens() -> None:
    """cost_usd = (input * input price + output * output price) / 1e6."""
    priced = config(price_per_million_input=2.0, price_per_million_output=8.0)
    assert priced.cost_usd(1000, 250) == 0.004
    assert config().cost_usd(1000, 250) == 0.0


def test_response_usage_carries_tokens_cost_provider_and_model() -> None:
    """LLMResponse.usage() is the engine's UsageMetrics for the call."""
    response = LLMResponse(text="x", input_tokens=3, output_tokens=4, model="m", provider="p",
                           cost_usd=0.5)
    assert response.usage() == UsageMetrics(input_tokens=3, output_tokens=4, cost_usd=0.5,
                                            provider="p", model="m")


def test_unknown_provider_is_named_with_the_known_ones() -> None:
    """get() of an unknown name raises ConfigurationError naming it and listing known providers."""
    registry = build_providers({"b": config(), "a": config()}, "a")
    with pytest.raises(ConfigurationError) as info:
        registry.get("gpt")
    assert "unknown LLM provider 'gpt'" in str(info.value)
    assert info.value.context == {"provider": "gpt", "known": ["a", "b"]}


def test_none_selects_the_default_provider() -> None:
    """get(None) returns the configured default_provider."""
    registry = build_providers({"a": config(), "b": config()}, "b")
    assert registry.get(None).name == "b"
    assert registry.get("a").name == "a"


def test_a_single_provider_is_the_default() -> None:
    """With one provider and no default_provider, that provider is the default."""
    assert build_providers({"only": config()}).get().name == "only"


def test_no_default_with_several_providers_fails_on_get_none() -> None:
    """Several providers and no default: a stage without provider gets a ConfigurationError."""
    registry = build_providers({"a": config(), "b": config()})
    with pytest.raises(ConfigurationError, match="no default_provider"):
        registry.get(None)


def test_default_provider_must_be_configured() -> None:
    """default_provider naming no configured provider is refused at build time."""
    with pytest.raises(ConfigurationError) as info:
        build_providers({"a": config()}, "z")
    assert info.value.context == {"default_provider": "z", "known": ["a"]}
    with pytest.raises(ConfigurationError):
        ProviderRegistry({}, "z")


def test_key_is_absent_from_reprs_and_descriptions() -> None:
    """No repr, str or describe() of a config, provider or registry contains the key."""
    cfg = config(api_key_env="K", extra_headers={"X-Api-Key": SECRET})
    registry = build_providers({"p": cfg}, environ={"K": SECRET})
    provider = registry.get("p")
    texts = [repr(cfg), str(cfg), repr(provider), str(provider), repr(registry), str(registry),
             repr(registry.describe()), repr(cfg.model_dump(exclude={"extra_headers"}))]
    assert all(SECRET not in text for text in texts)
    assert registry.describe()["providers"]["p"]["api_key"] == "env:K"
    assert "api_key=" in repr(provider)


async def test_key_never_reaches_logs_or_errors(fake_llm: FakeChatServer,
                                               local_config: Callable[..., ProviderConfig]) -> None:
    """A server echoing the rejected key: the key is sent, but no log line or error contains it."""
    from flowmasond.components.llm.providers import LLMRequest

    def echo(received: Received) -> Reply:
        return Reply(status=401, body={"error": {"message": f"bad key {received.headers['authorization']}"}})

    fake_llm.enqueue(echo)
    with structlog.testing.capture_logs() as logs:
        registry = build_providers({"p": local_config(api_key_env="K")}, environ={"K": SECRET})
        try:
            with pytest.raises(ComponentError) as info:
                await registry.get("p").complete(LLMRequest(prompt="hi"))
        finally:
            await registry.aclose()
    assert fake_llm.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    error = info.value
    assert error.error_type is ErrorType.PERMISSION
    assert "[redacted]" in str(error)
    assert logs, "the provider logs its configuration and the HTTP error"
    for text in (str(error), repr(error), repr(error.to_dict()), repr(error.args), repr(logs)):
        assert SECRET not in text
