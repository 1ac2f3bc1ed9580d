"""The OpenAI-compatible provider against a local chat-completions server: request shape, parsing, errors."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, AsyncIterator, Callable

import pytest
import structlog

from flowmasond.components.llm.openai_compat import MAX_RETRY_AFTER_S, parse_retry_after
from flowmasond.components.llm.providers import (
    LLMProvider,
    LLMRequest,
    ProviderConfig,
    build_providers,
)
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

from .fake_chat import FakeChatServer, Reply

MakeProvider = Callable[..., LLMProvider]


@pytest.fixture
async def make_provider(local_config: Callable[..., ProviderConfig]) -> AsyncIterator[MakeProvider]:
    """Builds a provider named 'local' from config overrides; closes them after the test."""
    registries = []

    def make(environ: dict[str, str] | None = None, **overrides: Any) -> LLMProvider:
        registry = build_providers({"local": local_config(**overrides)}, environ=environ or {})
        registries.append(registry)
        return registry.get("local")

    yield make
    for registry in registries:
        await registry.aclose()


async def failure(provider: LLMProvider) -> ComponentError:
    with pytest.raises(ComponentError) as info:
        await provider.complete(LLMRequest(prompt="hi"))
    return info.value


async def test_request_has_the_chat_completions_shape(fake_llm: FakeChatServer,
                                                      make_provider: MakeProvider) -> None:
    """POST /v1/chat/completions with model, system+user messages, temperature, max_tokens, stop, top_p."""
    await make_provider().complete(LLMRequest(
        prompt="Write a haiku", system_prompt="You are terse.", model="big-model", temperature=0.2,
        max_tokens=64, stop=("\n\n", "END"), top_p=0.9))
    [received] = fake_llm.requests
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.body == {
        "model": "big-model",
        "messages": [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Write a haiku"}],
        "temperature": 0.2, "max_tokens": 64, "stop": ["\n\n", "END"], "top_p": 0.9,
    }
    assert received.headers["content-type"] == "application/json"
    assert "authorization" not in received.headers


async def test_unset_settings_use_the_provider_defaults(fake_llm: FakeChatServer,
                                                        make_provider: MakeProvider) -> None:
    """Without model/temperature/max_tokens the provider's defaults are sent; unset extras are omitted."""
    provider = make_provider(default_temperature=0.1, default_max_tokens=32,
                             extra_headers={"X-Team": "blue"})
    await provider.complete(LLMRequest(prompt="hi"))
    [received] = fake_llm.requests
    assert received.body == {"model": "test-model", "messages": [{"role": "user", "content": "hi"}],
                             "temperature": 0.1, "max_tokens": 32}
    assert received.headers["x-team"] == "blue"


async def test_earlier_messages_sit_between_system_and_prompt(fake_llm: FakeChatServer,
                                                              make_provider: MakeProvider) -> None:
    """LLMRequest.messages are sent after the system prompt and before the user prompt."""
    history = ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"})
    await make_provider().complete(LLMRequest(prompt="c", system_prompt="s", messages=history))
    assert [m["content"] for m in fake_llm.requests[0].body["messages"]] == ["s", "a", "b", "c"]


async def test_bearer_key_is_sent_when_configured(fake_llm: FakeChatServer,
                                                  make_provider: MakeProvider) -> None:
    """A configured key goes in `Authorization: Bearer <key>`."""
    await make_provider(environ={"K": "sk-1"}, api_key_env="K").complete(LLMRequest(prompt="hi"))
    assert fake_llm.requests[0].headers["authorization"] == "Bearer sk-1"


async def test_answer_text_tokens_model_and_cost_are_parsed(fake_llm: FakeChatServer,
                                                            make_provider: MakeProvider) -> None:
    """Text, usage tokens, model, finish reason come from the body; cost from the configured prices."""
    fake_llm.enqueue(Reply.completion("An answer.", prompt_tokens=1000, completion_tokens=250,
                                      model="test-model-0613", finish_reason="length"))
    response = await make_provider().complete(LLMRequest(prompt="hi"))
    assert (response.text, response.input_tokens, response.output_tokens) == ("An answer.", 1000, 250)
    assert (response.model, response.finish_reason, response.provider) == ("test-model-0613", "length", "local")
    assert response.cost_usd == 0.004  # (1000 * 2 + 250 * 8) / 1e6


async def test_missing_usage_counts_zero_tokens(fake_llm: FakeChatServer, make_provider: MakeProvider) -> None:
    """A server that reports no usage yields a response with zero tokens and zero cost."""
    body = Reply.completion("x").body
    del body["usage"]
    fake_llm.enqueue(Reply(body=body))
    response = await make_provider().complete(LLMRequest(prompt="hi"))
    assert (response.input_tokens, response.output_tokens, response.cost_usd) == (0, 0, 0.0)


async def test_429_is_a_rate_limit_with_retry_after_seconds(fake_llm: FakeChatServer,
                                                            make_provider: MakeProvider) -> None:
    """HTTP 429 with `Retry-After: 7` is a retryable RATE_LIMIT carrying retry_after_s=7."""
    fake_llm.enqueue(Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}))
    error = await failure(make_provider())
    assert error.error_type is ErrorType.RATE_LIMIT and error.error_type.retryable
    assert error.retry_after_s == 7.0
    assert error.context == {"provider": "local", "status": 429, "model": "test-model"}
    assert "slow down" in str(error)


async def test_429_honours_an_http_date_retry_after(fake_llm: FakeChatServer,
                                                    make_provider: MakeProvider) -> None:
    """`Retry-After` as an HTTP-date becomes the seconds until that date."""
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    fake_llm.enqueue(Reply(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    error = await failure(make_provider())
    assert error.retry_after_s is not None and 100 < error.retry_after_s <= 120


def test_retry_after_forms_are_parsed() -> None:
    """Seconds, milliseconds, past and future dates, garbage and huge values all parse sensibly."""
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"retry-after": "3"}, now=now) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, now=now) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, now=now) is None
    assert parse_retry_after({"retry-after": "-4"}, now=now) is None
    assert parse_retry_after({}, now=now) is None
    assert parse_retry_after({"retry-after": "86400"}, now=now) == MAX_RETRY_AFTER_S


async def test_5xx_is_a_retryable_component_error(fake_llm: FakeChatServer,
                                                  make_provider: MakeProvider) -> None:
    """HTTP 500 is a retryable COMPONENT error, and the provider itself does not retry."""
    fake_llm.default = Reply(status=500, body="upstream exploded")
    error = await failure(make_provider())
    assert error.error_type is ErrorType.COMPONENT and error.error_type.retryable
    assert error.context["status"] == 500 and "upstream exploded" in str(error)
    assert len(fake_llm.requests) == 1


async def test_503_passes_its_retry_after_on(fake_llm: FakeChatServer, make_provider: MakeProvider) -> None:
    """A retryable 5xx with Retry-After carries retry_after_s too."""
    fake_llm.enqueue(Reply(status=503, headers={"Retry-After": "2"}))
    assert (await failure(make_provider())).retry_after_s == 2.0


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_other_4xx_is_a_configuration_error(fake_llm: FakeChatServer, make_provider: MakeProvider,
                                                  status: int) -> None:
    """Other 4xx answers are CONFIGURATION errors that no retry can fix, even with Retry-After."""
    fake_llm.enqueue(Reply(status=status, body={"error": {"message": "model not found"}},
                           headers={"Retry-After": "5"}))
    error = await failure(make_provider())
    assert error.error_type is ErrorType.CONFIGURATION and not error.error_type.retryable
    assert error.retry_after_s is None
    assert error.context["status"] == status and "model not found" in str(error)


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_are_permission_errors(fake_llm: FakeChatServer, make_provider: MakeProvider,
                                                 status: int) -> None:
    """A refused credential is a PERMISSION error, not retried."""
    fake_llm.enqueue(Reply(status=status, body={"error": {"message": "invalid key"}}))
    error = await failure(make_provider())
    assert error.error_type is ErrorType.PERMISSION and not error.error_type.retryable


@pytest.mark.parametrize(("body", "why"), [
    ("<html>gateway</html>", "not JSON"),
    ([1, 2], "not a JSON object"),
    ({"choices": []}, "'choices' is missing or empty"),
    ({"object": "chat.completion"}, "'choices' is missing or empty"),
    ({"choices": [{"text": "legacy"}]}, "'choices[0].message' is missing"),
    ({"choices": [{"message": {"content": None}}]}, "content' is not a string"),
    ({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "ten"}},
     "'usage.prompt_tokens' is not a non-negative integer"),
    ({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1, "completion_tokens": -1}},
     "'usage.completion_tokens' is not a non-negative integer"),
    ({"choices": [{"message": {"content": "x"}}], "usage": [3]}, "'usage' is not an object"),
])
async def test_malformed_body_is_a_validation_error_naming_the_provider(
        fake_llm: FakeChatServer, make_provider: MakeProvider, body: Any, why: str) -> None:
    """A 200 whose body is not a chat completion is a VALIDATION error that says what is wrong."""
    fake_llm.enqueue(Reply(body=body))
    error = await failure(make_provider())
    assert error.error_type is ErrorType.VALIDATION and not error.error_type.retryable
    assert "provider 'local' returned a malformed response" in str(error) and why in str(error)
    assert error.context["provider"] == "local"


async def test_slow_server_is_a_timeout(fake_llm: FakeChatServer, make_provider: MakeProvider) -> None:
    """No answer within timeout_s is a retryable TIMEOUT error."""
    fake_llm.enqueue(Reply(delay_s=30, body=Reply.completion("late").body))  # released at teardown
    error = await failure(make_provider(timeout_s=0.2))
    assert error.error_type is ErrorType.TIMEOUT and error.error_type.retryable
    assert "within 0.2s" in str(error)


async def test_unreachable_server_is_a_connectivity_error(make_provider: MakeProvider) -> None:
    """A refused connection is a retryable CONNECTIVITY error naming the provider."""
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await failure(make_provider(base_url=f"http://127.0.0.1:{port}/v1"))
    assert error.error_type is ErrorType.CONNECTIVITY and error.error_type.retryable
    assert "cannot reach provider 'local'" in str(error)


async def test_http_errors_are_logged_with_provider_and_status(fake_llm: FakeChatServer,
                                                               make_provider: MakeProvider) -> None:
    """An HTTP error leaves one warning with provider, status and classification."""
    fake_llm.enqueue(Reply(status=429, headers={"Retry-After": "1"}))
    provider = make_provider()
    with structlog.testing.capture_logs() as logs:
        await failure(provider)
    [entry] = [e for e in logs if e["event"] == "llm_http_error"]
    assert (entry["provider"], entry["status"], entry["error_type"], entry["retry_after_s"]) == \
        ("local", 429, "RATE_LIMIT", 1.0)
