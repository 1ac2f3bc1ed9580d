"""The ``http_request`` operator against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Awaitable, Callable, Iterator

import pytest
from pydantic import ValidationError

from flowmasond.components.operators.http import classify_status, parse_retry_after
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

RunOperator = Callable[..., Awaitable[Any]]


class Handler(BaseHTTPRequestHandler):
    """Routes by path; ``/status/<code>`` answers with that code, ``/echo`` describes the request."""

    release: threading.Event  # set by the fixture on teardown so /slow never outlives the test

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        path = self.path.split("?")[0]
        if path == "/json":
            self._send(200, b'{"ok": true, "items": [1, 2]}', "application/json; charset=utf-8")
        elif path == "/echo":
            echo = {"method": self.command, "path": self.path, "body": body,
                    "headers": {k.lower(): v for k, v in self.headers.items()}}
            self._send(200, json.dumps(echo).encode(), "application/json")
        elif path == "/text":
            self._send(200, b"hello", headers={"X-Multi": "a"})
        elif path == "/mislabelled":
            self._send(200, b"not json", "application/json")
        elif path == "/ratelimit":
            self._send(429, b"slow down", headers={"Retry-After": "7"})
        elif path == "/ratelimit-date":
            self._send(429, b"", headers={"Retry-After": formatdate(time.time() + 120, usegmt=True)})
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"status body")
        elif path == "/redirect":
            self._send(302, headers={"Location": "/json"})
        elif path.startswith("/big/"):
            self._send(200, b"b" * int(path.rsplit("/", 1)[1]))
        elif path.startswith("/unsized/"):
            # No Content-Length: the body ends when the connection closes (HTTP/1.0).
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            chunk = b"u" * 65536
            for _ in range(int(path.rsplit("/", 1)[1]) // len(chunk)):
                self.wfile.write(chunk)
        elif path == "/slow":
            self.release.wait(10)
            self._send(200, b"late")
        else:
            self._send(404, b"no such route")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class QuietHTTPServer(ThreadingHTTPServer):
    """A client that gave up (a timeout test) is expected here, not a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@pytest.fixture
def server() -> Iterator[str]:
    """A threaded HTTP server on an ephemeral 127.0.0.1 port; yields its base URL."""
    release = threading.Event()
    handler = type("BoundHandler", (Handler,), {"release": release})
    httpd = QuietHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL whose port is bound but not listening, so connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


async def test_json_response_is_parsed(run_operator: RunOperator, server: str) -> None:
    """A 200 with a JSON content type yields status, text and parsed json."""
    out = await run_operator("http_request", {"url": f"{server}/json"})
    assert out.status_code == 200
    assert out.json == {"ok": True, "items": [1, 2]}
    assert out.headers["content-type"].startswith("application/json")
    assert out.model_dump()["json"] == {"ok": True, "items": [1, 2]}


async def test_non_json_content_type_is_not_parsed_by_default(run_operator: RunOperator, server: str) -> None:
    """A text/plain body leaves json empty unless parse_json is asked for."""
    out = await run_operator("http_request", {"url": f"{server}/text"})
    assert (out.text, out.json) == ("hello", None)
    assert out.headers["x-multi"] == "a"


async def test_mislabelled_json_is_tolerated_in_auto_mode(run_operator: RunOperator, server: str) -> None:
    """A body labelled JSON that does not parse leaves json empty when parse_json is automatic."""
    out = await run_operator("http_request", {"url": f"{server}/mislabelled"})
    assert (out.text, out.json) == ("not json", None)


async def test_forced_parse_json_on_invalid_body_is_a_validation_error(run_operator: RunOperator,
                                                                       server: str) -> None:
    """parse_json=true on a body that is not JSON fails with VALIDATION."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/text", "parse_json": True})
    assert info.value.error_type is ErrorType.VALIDATION


async def test_idempotency_key_header_is_sent(run_operator: RunOperator, server: str) -> None:
    """The request carries Idempotency-Key: <run_id>/<stage path>."""
    out = await run_operator("http_request", {"url": f"{server}/echo"}, run_id="r-9", stage_path="loop/2/post")
    assert out.json["headers"]["idempotency-key"] == "r-9/loop/2/post"


async def test_user_idempotency_key_is_kept(run_operator: RunOperator, server: str) -> None:
    """A stage that sets its own idempotency-key header (any case) keeps it."""
    out = await run_operator("http_request", {"url": f"{server}/echo", "headers": {"idempotency-key": "mine"}})
    assert out.json["headers"]["idempotency-key"] == "mine"


async def test_method_params_and_json_body_are_sent(run_operator: RunOperator, server: str) -> None:
    """Method (case-insensitive), query params and a JSON body reach the server."""
    out = await run_operator("http_request", {"url": f"{server}/echo", "method": "post",
                                              "params": {"q": "a b", "n": 2, "tag": ["x", "y"]},
                                              "json_body": {"k": [1, None]}})
    assert out.json["method"] == "POST"
    assert out.json["path"] == "/echo?q=a+b&n=2&tag=x&tag=y"
    assert json.loads(out.json["body"]) == {"k": [1, None]}
    assert out.json["headers"]["content-type"] == "application/json"


async def test_raw_body_is_sent_as_is(run_operator: RunOperator, server: str) -> None:
    """body is sent verbatim with the stage's headers."""
    out = await run_operator("http_request", {"url": f"{server}/echo", "method": "PUT", "body": "a=1",
                                              "headers": {"Content-Type": "text/plain"}})
    assert (out.json["body"], out.json["headers"]["content-type"]) == ("a=1", "text/plain")


async def test_json_body_and_body_together_are_rejected(registry) -> None:
    """Setting both json_body and body fails Input validation."""
    with pytest.raises(ValidationError):
        registry.meta("http_request").input_model.model_validate(
            {"url": "http://x", "json_body": {}, "body": "x"})


async def test_429_is_rate_limit_with_retry_after_seconds(run_operator: RunOperator, server: str) -> None:
    """A 429 is RATE_LIMIT and carries the Retry-After delay."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/ratelimit"})
    assert info.value.error_type is ErrorType.RATE_LIMIT
    assert info.value.retry_after_s == 7.0
    assert info.value.context["status_code"] == 429


async def test_429_retry_after_as_http_date(run_operator: RunOperator, server: str) -> None:
    """A Retry-After HTTP date two minutes ahead becomes a positive delay of at most two minutes."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/ratelimit-date"})
    assert info.value.error_type is ErrorType.RATE_LIMIT
    assert 60 < info.value.retry_after_s <= 120


async def test_500_is_a_retryable_component_error(run_operator: RunOperator, server: str) -> None:
    """A 5xx is COMPONENT (retryable) and quotes the body."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/status/500"})
    assert info.value.error_type is ErrorType.COMPONENT
    assert info.value.error_type.retryable
    assert info.value.context["body"] == "status body"


async def test_404_is_an_answer_with_success_false(run_operator: RunOperator, server: str) -> None:
    """As in FlowMason, a 404 is a successful stage whose output says status_code 404, success false."""
    out = await run_operator("http_request", {"url": f"{server}/status/404"})
    assert (out.status_code, out.success, out.body, out.url) == (404, False, "status body", f"{server}/status/404")


async def test_404_is_a_non_retryable_configuration_error_when_not_expected(run_operator: RunOperator,
                                                                             server: str) -> None:
    """With expected_status set, a 404 is CONFIGURATION: asking again will not help."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/status/404", "expected_status": [200]})
    assert info.value.error_type is ErrorType.CONFIGURATION
    assert not info.value.error_type.retryable
    assert info.value.context["url"] == f"{server}/status/404"


@pytest.mark.parametrize(("status", "error_type"), [
    (400, ErrorType.VALIDATION), (422, ErrorType.VALIDATION), (401, ErrorType.PERMISSION),
    (403, ErrorType.PERMISSION), (408, ErrorType.TIMEOUT), (503, ErrorType.COMPONENT),
])
async def test_unexpected_status_classification(run_operator: RunOperator, server: str, status: int,
                                                error_type: ErrorType) -> None:
    """Each status outside expected_status maps to its documented ErrorType."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/status/{status}", "expected_status": [200]})
    assert info.value.error_type is error_type


@pytest.mark.parametrize("status", [408, 429, 503])
async def test_retryable_status_fails_without_expected_status(run_operator: RunOperator, server: str,
                                                              status: int) -> None:
    """408, 429 and 5xx fail the stage even without expected_status, so retry_config can retry them."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/status/{status}"})
    assert info.value.error_type.retryable


async def test_expected_status_accepts_a_non_2xx(run_operator: RunOperator, server: str) -> None:
    """A status listed in expected_status is a success."""
    out = await run_operator("http_request", {"url": f"{server}/status/404", "expected_status": [404]})
    assert (out.status_code, out.text) == (404, "status body")


async def test_expected_status_rejects_other_2xx(run_operator: RunOperator, server: str) -> None:
    """With expected_status set, a 2xx not in it is a failure."""
    with pytest.raises(ComponentError):
        await run_operator("http_request", {"url": f"{server}/status/201", "expected_status": [200]})


async def test_redirects_are_followed(run_operator: RunOperator, server: str) -> None:
    """A 302 is followed to its target by default."""
    out = await run_operator("http_request", {"url": f"{server}/redirect"})
    assert out.json == {"ok": True, "items": [1, 2]}


async def test_connection_refused_is_connectivity(run_operator: RunOperator, refused_url: str) -> None:
    """A refused connection is CONNECTIVITY (retryable)."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": refused_url})
    assert info.value.error_type is ErrorType.CONNECTIVITY


async def test_slow_peer_is_a_timeout(run_operator: RunOperator, server: str) -> None:
    """A peer that does not answer within timeout_s is TIMEOUT."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/slow", "timeout_s": 0.2})
    assert info.value.error_type is ErrorType.TIMEOUT


async def test_unsupported_scheme_is_configuration(run_operator: RunOperator) -> None:
    """A URL with a scheme httpx cannot speak is CONFIGURATION."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": "ftp://127.0.0.1/file"})
    assert info.value.error_type is ErrorType.CONFIGURATION


def test_parse_retry_after_forms() -> None:
    """Retry-After parses delay-seconds and HTTP dates; past dates clamp to 0; junk is None."""
    now = 1_700_000_000.0
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_classify_status_other_4xx_are_not_retryable() -> None:
    """Every 4xx except 408 and 429 classifies as non-retryable."""
    retryable = {s for s in range(400, 500) if classify_status(s).retryable}
    assert retryable == {408, 429}


async def test_a_body_larger_than_max_response_bytes_is_refused(run_operator: RunOperator,
                                                               server: str) -> None:
    """A response declaring more than max_response_bytes fails with VALIDATION naming the limit."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/big/2000", "max_response_bytes": 1000})
    assert info.value.error_type is ErrorType.VALIDATION
    assert "max_response_bytes (1000 bytes)" in str(info.value)
    assert info.value.context["max_response_bytes"] == 1000
    assert info.value.context["url"] == f"{server}/big/2000"


async def test_an_unsized_body_is_cut_off_at_the_limit(run_operator: RunOperator, server: str) -> None:
    """A body without Content-Length that runs past the limit is refused too."""
    with pytest.raises(ComponentError) as info:
        await run_operator("http_request", {"url": f"{server}/unsized/4194304",
                                            "max_response_bytes": 100_000})
    assert info.value.error_type is ErrorType.VALIDATION
    assert "max_response_bytes" in str(info.value)


async def test_a_body_exactly_at_the_limit_is_accepted(run_operator: RunOperator, server: str) -> None:
    """max_response_bytes is inclusive."""
    out = await run_operator("http_request", {"url": f"{server}/big/1000", "max_response_bytes": 1000})
    assert out.text == "b" * 1000
