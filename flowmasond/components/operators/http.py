"""The ``http_request`` operator: one HTTP request with httpx, failures classified for retry.

As in FlowMason, an answered request is a successful stage: a 404 returns ``status_code`` 404 and
``success: false``. Two exceptions keep retries meaningful: a status that asking again may fix
(429, 408, 5xx) fails the stage, and when ``expected_status`` is set every other status fails it.
Classification of a failing status: 429 -> RATE_LIMIT (honouring Retry-After), 408 -> TIMEOUT,
5xx -> COMPONENT (retryable); 400/422 -> VALIDATION, 401/403 -> PERMISSION and every other status
-> CONFIGURATION (not retryable: a 404 or 405 will not fix itself by asking again).
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field, field_validator, model_validator

from flowmasond.components.operators import shadowing_fields
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentInput, ComponentOutput, operator
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

if TYPE_CHECKING:
    import httpx  # imported where a request is made: ~40 ms that a run without HTTP stages skips

# Below the operators' 30 s stage timeout, so a slow peer is reported by httpx with its phase.
DEFAULT_TIMEOUT_S = 25.0
# How much of an error response's body a failure quotes.
ERROR_BODY_CHARS = 500
# The largest body a stage accepts unless it sets max_response_bytes: the body becomes the stage's
# output, which is journaled and held in memory by every later stage of the run.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024

QueryValue = str | int | float | bool | None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building the default context loads the CA bundle (~60 ms of CPU); do it once, not per request.
    import httpx

    return httpx.create_ssl_context()


@operator("http_request", description="Send an HTTP request; JSON responses are parsed.",
          safe_to_repeat=True)
class HttpRequest:
    """One HTTP request. Sends ``Idempotency-Key: <run_id>/<stage path>`` unless the stage sets one.

    Safe to repeat because that key is stable across retries and resumes, so a peer that honours
    it can deduplicate a request repeated after a crash.
    """

    class Input(ComponentInput):
        url: str = Field(min_length=1)
        method: str = "GET"
        headers: dict[str, str] | None = None
        # `query_params` is the spelling of FlowMason's own templates.
        params: dict[str, QueryValue | list[QueryValue]] | None = Field(
            default=None, validation_alias=AliasChoices("params", "query_params"))
        json_body: Any = None
        # FlowMason: a JSON object or list is sent as JSON; a string is sent as it is.
        body: Any = None
        timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
        timeout: float | None = Field(default=None, gt=0)  # FlowMason's name (seconds)
        verify_ssl: bool = True
        # None: 4xx answers are outputs (success false), 408/429/5xx fail; a list: others fail.
        expected_status: list[int] | None = None
        parse_json: bool | None = None  # None: when the Content-Type says JSON
        follow_redirects: bool = True
        max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, gt=0)

        @field_validator("method")
        @classmethod
        def _method_token(cls, value: str) -> str:
            value = value.strip().upper()
            if not value.isalpha():
                raise ValueError(f"not an HTTP method: {value!r}")
            return value

        @model_validator(mode="after")
        def _one_body(self) -> HttpRequest.Input:
            if self.json_body is not None and self.body is not None:
                raise ValueError("set json_body or body, not both")
            return self

        @property
        def seconds(self) -> float:
            return self.timeout if self.timeout is not None else self.timeout_s

    with shadowing_fields():
        class Output(ComponentOutput):
            status_code: int
            headers: dict[str, str]
            body: Any = None  # FlowMason: the parsed JSON, else the text
            text: str
            json: Any = None
            success: bool  # a 2xx status
            elapsed_ms: int
            url: str  # after redirects

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        headers = dict(input.headers or {})
        json_body, content = input.json_body, None
        if isinstance(input.body, str):
            content = input.body.encode()
        elif input.body is not None:
            json_body = input.body
        if not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = context.idempotency_key
        trace = context.services.get("traceparent")
        parent = trace(context.run_id, context.stage_path) if trace is not None else None
        if parent and not any(name.lower() == "traceparent" for name in headers):
            headers["traceparent"] = parent  # W3C trace context: the callee's spans join the run's trace
        where: dict[str, Any] = {"stage": context.stage_path, "method": input.method, "url": input.url}
        import httpx

        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=input.seconds, verify=_tls_context() if input.verify_ssl else False,
                                         follow_redirects=input.follow_redirects) as client:
                async with client.stream(
                    input.method, input.url, headers=headers, params=input.params or None,
                    json=json_body, content=content,
                ) as response:
                    body, truncated = await _read_body(response, input.max_response_bytes)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            raise ComponentError(f"invalid request: {exc}", error_type=ErrorType.CONFIGURATION,
                                 **where) from exc
        except httpx.TimeoutException as exc:
            raise ComponentError(f"request timed out ({type(exc).__name__}) after {input.seconds} s",
                                 error_type=ErrorType.TIMEOUT, **where) from exc
        except httpx.TooManyRedirects as exc:
            raise ComponentError(f"too many redirects: {exc}", error_type=ErrorType.CONFIGURATION,
                                 **where) from exc
        except httpx.TransportError as exc:
            raise ComponentError(f"cannot reach peer: {type(exc).__name__}: {exc}",
                                 error_type=ErrorType.CONNECTIVITY, **where) from exc
        except httpx.HTTPError as exc:  # DecodingError and the like: the peer sent something broken
            raise ComponentError(f"bad response: {exc}", error_type=ErrorType.COMPONENT, **where) from exc

        elapsed_ms = int((time.monotonic() - started) * 1000)
        status = response.status_code
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if input.expected_status is not None:
            expected = status in input.expected_status
        else:
            expected = status < 400 or not classify_status(status).retryable
        if not expected:
            raise _status_error(response, text, where)
        if truncated:
            raise ComponentError(
                f"response body is larger than max_response_bytes ({input.max_response_bytes} bytes)",
                error_type=ErrorType.VALIDATION, status_code=status,
                max_response_bytes=input.max_response_bytes, **where)
        parsed = _json_of(response, body, text, input.parse_json, where)
        return self.Output(status_code=status, headers=_flat_headers(response.headers), text=text,
                           json=parsed, body=parsed if parsed is not None else text,
                           success=200 <= status < 300, elapsed_ms=elapsed_ms, url=str(response.url))


async def _read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The (decoded) body, at most ``limit`` bytes of it; True when there was more.

    Stops reading as soon as the limit is passed, so an endless or huge body costs no more than
    ``limit`` bytes of memory.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[:limit - (size - len(chunk))])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def classify_status(status: int) -> ErrorType:
    """The ErrorType of an unexpected HTTP status (see the module docstring)."""
    if status == 429:
        return ErrorType.RATE_LIMIT
    if status == 408:
        return ErrorType.TIMEOUT
    if status >= 500:
        return ErrorType.COMPONENT
    if status in (400, 422):
        return ErrorType.VALIDATION
    if status in (401, 403):
        return ErrorType.PERMISSION
    return ErrorType.CONFIGURATION


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    # A date in the past means "now"; NaN and negative delays mean nothing useful.
    return max(0.0, seconds) if seconds == seconds else None


def _status_error(response: httpx.Response, text: str, where: dict[str, Any]) -> ComponentError:
    status = response.status_code
    error_type = classify_status(status)
    retry_after = parse_retry_after(response.headers.get("retry-after")) if error_type.retryable else None
    reason = response.reason_phrase or ""
    return ComponentError(f"HTTP {status} {reason}".rstrip(), error_type=error_type,
                          retry_after_s=retry_after, status_code=status,
                          body=text[:ERROR_BODY_CHARS] or None, **where)


def _flat_headers(headers: httpx.Headers) -> dict[str, str]:
    # Repeated headers are joined the way HTTP allows (RFC 9110 5.3).
    flat: dict[str, str] = {}
    for name, value in headers.multi_items():
        flat[name] = f"{flat[name]}, {value}" if name in flat else value
    return flat


def _json_of(response: httpx.Response, body: bytes, text: str, parse_json: bool | None,
             where: dict[str, Any]) -> Any:
    if parse_json is None:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        parse_json = content_type == "application/json" or content_type.endswith("+json")
        strict = False
    else:
        strict = True
    if not parse_json or not body.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        if not strict:
            return None  # the peer mislabelled its body; `text` still has it
        raise ComponentError(f"response body is not valid JSON: {exc}", error_type=ErrorType.VALIDATION,
                             status_code=response.status_code, body=text[:ERROR_BODY_CHARS],
                             **where) from exc
