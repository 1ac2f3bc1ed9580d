"""The OpenAI-compatible chat-completions provider (OpenAI, vLLM, llama.cpp's server, Ollama...).

Every failure is a ``ComponentError`` whose ``ErrorType`` decides whether the engine retries:
timeouts, connection errors, 429 and 5xx are retryable (a ``Retry-After`` becomes
``retry_after_s``, the floor of the engine's next delay); other 4xx and malformed bodies are not.
The provider itself never retries.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx
import structlog
from pydantic import SecretStr

from flowmasond.components.llm.providers import LLMRequest, LLMResponse, ProviderConfig, TokenCallback
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

log = structlog.get_logger("flowmasond.llm")

# A peer asking for more than this is capped: the stage's remaining retries still get their chance,
# and a misbehaving gateway cannot park a run for hours.
MAX_RETRY_AFTER_S = 300.0
# How much of an error body goes into the error message (enough for the provider's explanation).
ERROR_DETAIL_CHARS = 300
_REDACTED = "[redacted]"


class OpenAICompatProvider:
    """POSTs ``{base_url}/chat/completions`` through one shared ``httpx.AsyncClient``."""

    def __init__(self, name: str, config: ProviderConfig, *, api_key: SecretStr | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.config = config
        self._api_key = api_key
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        key = "'**********'" if self._api_key is not None else "None"
        return (f"OpenAICompatProvider(name={self.name!r}, base_url={self.config.base_url!r}, "
                f"default_model={self.config.default_model!r}, api_key={key})")

    @property
    def url(self) -> str:
        return f"{self.config.base_url}/chat/completions"

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so that it belongs to the event loop that runs the pipelines.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_s),
                                             transport=self._transport, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        """Close the shared client; a later call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        """The chat-completions JSON body; unset settings fall back to this provider's defaults."""
        messages: list[dict[str, Any]] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        messages.extend(dict(m) for m in request.messages or ())
        if request.prompt:
            messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {"model": request.model or self.config.default_model, "messages": messages}
        temperature = request.temperature if request.temperature is not None else self.config.default_temperature
        if temperature is not None:
            body["temperature"] = temperature
        max_tokens = request.max_tokens if request.max_tokens is not None else self.config.default_max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self.config.extra_headers}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    async def complete(self, request: LLMRequest, *, on_token: TokenCallback | None = None) -> LLMResponse:
        """One chat completion; raises ``ComponentError`` classified for the engine's retry policy.

        With ``stream = true`` in the provider's configuration the answer arrives as server-sent
        events and each piece goes to ``on_token`` as it comes; the response is the whole answer.
        """
        body = self.build_body(request)
        model = body["model"]
        if not body["messages"]:
            raise ComponentError("the request has neither a prompt nor messages",
                                 error_type=ErrorType.VALIDATION, provider=self.name, model=model)
        log.debug("llm_request", provider=self.name, model=model, url=self.url, stream=self.config.stream)
        try:
            if self.config.stream:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
                async with self._http().stream("POST", self.url, json=body, headers=self._headers()) as streamed:
                    if streamed.is_success and \
                            streamed.headers.get("content-type", "").startswith("text/event-stream"):
                        return await self._read_stream(streamed, model, on_token)
                    # An error, or a server that ignores "stream" and answers in one piece.
                    response = await self._bounded(streamed, model)
            else:
                response = await self._post(body)
        except httpx.HTTPError as exc:
            self._request_failed(exc, model)
        if not response.is_success:
            self._raise_for_status(response, model)
        return self._parse(response, model)

    def _request_failed(self, exc: httpx.HTTPError, model: str) -> NoReturn:
        """An httpx failure as the ``ComponentError`` the retry policy classifies."""
        if isinstance(exc, httpx.TimeoutException):
            raise ComponentError(
                f"provider {self.name!r} did not answer within {self.config.timeout_s:g}s "
                f"({type(exc).__name__})",
                error_type=ErrorType.TIMEOUT, provider=self.name, model=model) from exc
        if isinstance(exc, httpx.DecodingError):
            self._malformed(f"the body could not be decoded ({type(exc).__name__})", model, None)
        raise ComponentError(
            f"cannot reach provider {self.name!r} at {self.url}: "
            f"{self._redact(str(exc)) or type(exc).__name__}",
            error_type=ErrorType.CONNECTIVITY, provider=self.name, model=model) from exc

    async def _read_stream(self, response: httpx.Response, requested_model: str,
                           on_token: TokenCallback | None) -> LLMResponse:
        """Collect a chat-completions event stream: content deltas, finish reason, final usage."""
        status = response.status_code
        parts: list[str] = []
        usage: Any = None
        finish_reason: str | None = None
        model: str | None = None
        done = False
        size = 0
        async for line in response.aiter_lines():
            size += len(line) + 1
            self._check_size(size, requested_model, status)  # the same bound as a one-piece answer
            if not line.startswith("data:"):
                continue  # blank separators, comments (keep-alives), event:/id: fields
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                self._malformed("a streamed event is not JSON", requested_model, status)
            if not isinstance(chunk, dict):
                self._malformed("a streamed event is not a JSON object", requested_model, status)
            if chunk.get("error") is not None:
                error = chunk["error"]
                detail = error.get("message") if isinstance(error, dict) else str(error)
                raise ComponentError(f"provider {self.name!r} failed mid-stream: {self._redact(str(detail))}",
                                     error_type=ErrorType.COMPONENT, provider=self.name, model=requested_model)
            if isinstance(chunk.get("model"), str):
                model = chunk["model"]
            if chunk.get("usage") is not None:
                usage = chunk["usage"]
            choices = chunk.get("choices") or []
            if not isinstance(choices, list):
                self._malformed("'choices' of a streamed event is not a list", requested_model, status)
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                content = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(content, str) and content:
                    parts.append(content)
                    if on_token is not None:
                        try:
                            on_token(content)
                        except Exception:  # noqa: BLE001 - a listener must never break the call
                            log.exception("llm_token_listener_failed", provider=self.name)
                if isinstance(choice.get("finish_reason"), str):
                    finish_reason = choice["finish_reason"]
        if not done and finish_reason is None:
            # The connection ended cleanly but early: another attempt may get the whole answer.
            raise ComponentError(f"provider {self.name!r} ended the stream before the answer was complete",
                                 error_type=ErrorType.CONNECTIVITY, provider=self.name, model=requested_model)
        input_tokens, output_tokens = self._usage(usage, requested_model, status)
        return LLMResponse(
            text="".join(parts), input_tokens=input_tokens, output_tokens=output_tokens,
            model=model or requested_model, provider=self.name, finish_reason=finish_reason,
            cost_usd=self.config.cost_usd(input_tokens, output_tokens),
        )

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST and read the answer, at most ``max_response_bytes`` of its (decoded) body."""
        async with self._http().stream("POST", self.url, json=body, headers=self._headers()) as streamed:
            return await self._bounded(streamed, body["model"])

    async def _bounded(self, streamed: httpx.Response, model: str) -> httpx.Response:
        """The rest of an open response, read into memory up to ``max_response_bytes``."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in streamed.aiter_bytes():
            size += len(chunk)
            self._check_size(size, model, streamed.status_code)
            chunks.append(chunk)
        # The body is decoded already: a Content-Encoding header would make httpx decode it again.
        headers = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(streamed.status_code, headers=headers, content=b"".join(chunks),
                              request=streamed.request, extensions=streamed.extensions)

    def _check_size(self, size: int, model: str, status: int) -> None:
        limit = self.config.max_response_bytes
        if size > limit:
            raise ComponentError(
                f"provider {self.name!r} sent a response larger than max_response_bytes ({limit} bytes)",
                error_type=ErrorType.VALIDATION, provider=self.name, model=model,
                max_response_bytes=limit, status=status)

    def _raise_for_status(self, response: httpx.Response, model: str) -> NoReturn:
        status = response.status_code
        if status == 429:
            error_type = ErrorType.RATE_LIMIT
        elif status >= 500:
            error_type = ErrorType.COMPONENT  # the provider's own failure: another attempt may work
        elif status in (401, 403):
            error_type = ErrorType.PERMISSION
        elif status == 408:
            error_type = ErrorType.TIMEOUT  # the peer gave up waiting for us: transient by nature
        else:
            error_type = ErrorType.CONFIGURATION  # wrong model, bad parameter, wrong URL...
        retry_after = parse_retry_after(response.headers) if error_type.retryable else None
        detail = self._error_detail(response)
        log.warning("llm_http_error", provider=self.name, model=model, status=status,
                    error_type=error_type.value, retry_after_s=retry_after, detail=detail)
        raise ComponentError(f"provider {self.name!r} answered HTTP {status}: {detail}",
                             error_type=error_type, retry_after_s=retry_after,
                             provider=self.name, status=status, model=model)

    def _error_detail(self, response: httpx.Response) -> str:
        """The provider's own explanation: ``error.message`` when JSON, else the start of the body."""
        text = ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                text = error["message"]
            elif isinstance(error, str):
                text = error
        if not text:
            try:
                text = response.text
            except (UnicodeDecodeError, LookupError):
                text = ""
        text = " ".join(text.split())
        if len(text) > ERROR_DETAIL_CHARS:
            text = text[:ERROR_DETAIL_CHARS] + "..."
        return self._redact(text) or response.reason_phrase or "no detail"

    def _redact(self, text: str) -> str:
        # Some servers echo the credential they rejected; it must not reach a log or the journal.
        if self._api_key is not None:
            secret = self._api_key.get_secret_value()
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def _malformed(self, why: str, model: str, status: int | None) -> NoReturn:
        raise ComponentError(f"provider {self.name!r} returned a malformed response: {why}",
                             error_type=ErrorType.VALIDATION, provider=self.name, model=model,
                             status=status)

    def _parse(self, response: httpx.Response, requested_model: str) -> LLMResponse:
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            self._malformed("the body is not JSON", requested_model, status)
        if not isinstance(data, dict):
            self._malformed("the body is not a JSON object", requested_model, status)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            self._malformed("'choices' is missing or empty", requested_model, status)
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            self._malformed("'choices[0].message' is missing", requested_model, status)
        text = message.get("content")
        if not isinstance(text, str):
            self._malformed("'choices[0].message.content' is not a string", requested_model, status)
        finish_reason = first.get("finish_reason")
        if finish_reason is not None and not isinstance(finish_reason, str):
            self._malformed("'choices[0].finish_reason' is not a string", requested_model, status)
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            self._malformed("'model' is not a string", requested_model, status)
        input_tokens, output_tokens = self._usage(data.get("usage"), requested_model, status)
        return LLMResponse(
            # A provider echoing our credential must not put it into the run's output.
            text=self._redact(text), input_tokens=input_tokens, output_tokens=output_tokens,
            model=model or requested_model, provider=self.name, finish_reason=finish_reason,
            cost_usd=self.config.cost_usd(input_tokens, output_tokens),
        )

    def _usage(self, usage: Any, model: str, status: int) -> tuple[int, int]:
        if usage is None:
            # Some servers omit usage; the call still succeeded, but its cost is unknown.
            log.warning("llm_usage_missing", provider=self.name, model=model)
            return 0, 0
        if not isinstance(usage, dict):
            self._malformed("'usage' is not an object", model, status)
        counts = []
        for key in ("prompt_tokens", "completion_tokens"):
            value = usage.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self._malformed(f"'usage.{key}' is not a non-negative integer", model, status)
            counts.append(value)
        return counts[0], counts[1]


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds a peer asked us to wait: ``retry-after-ms``, or ``Retry-After`` (seconds or HTTP-date).

    Unparsable values are ignored; the result is capped at ``MAX_RETRY_AFTER_S``.
    """
    seconds: float | None = None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _non_negative(millis, scale=1000.0)
    value = headers.get("retry-after")
    if seconds is None and value is not None:
        seconds = _non_negative(value, scale=1.0)
        if seconds is None:
            try:
                when = email.utils.parsedate_to_datetime(value.strip())
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return None if seconds is None else min(seconds, MAX_RETRY_AFTER_S)


def _non_negative(text: str, *, scale: float) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number / scale
