"""A chat-completions server for tests: real socket on 127.0.0.1, scripted replies, recorded requests."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from collections.abc import Callable


@dataclass
class Received:
    """One request the fake server received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON
    at: float  # time.monotonic() on arrival


@dataclass
class Reply:
    """What the fake server answers to one request."""

    status: int = 200
    body: Any = None  # dict/list: sent as JSON; str/bytes: sent raw
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering (cut short when the server closes)
    # Server-sent events instead of a body: each is sent as one `data:` line and flushed.
    events: list[Any] | None = None
    # With ``events``: after this many events, wait for ``gate`` before sending the rest.
    gate: threading.Event | None = None
    gate_after: int = 0

    @classmethod
    def completion(cls, content: str, *, prompt_tokens: int = 10, completion_tokens: int = 5,
                   model: str = "test-model", finish_reason: str = "stop") -> Reply:
        return cls(body={
            "id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


    @classmethod
    def streamed(cls, pieces: list[str], *, prompt_tokens: int = 10, completion_tokens: int = 5,
                 model: str = "test-model", gate: threading.Event | None = None, gate_after: int = 0,
                 include_usage: bool = True, done: bool = True) -> Reply:
        """A chat-completions event stream: one delta per piece, the finish reason, usage, [DONE]."""
        events: list[Any] = [{"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                              "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
        events += [{"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                   for piece in pieces]
        if done:
            events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if include_usage:
                events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                               "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                        "completion_tokens": completion_tokens,
                                                        "total_tokens": prompt_tokens + completion_tokens}})
            events.append("[DONE]")
        return cls(events=events, gate=gate, gate_after=gate_after + 1)  # +1: the role-only first event


ReplySource = Reply | Callable[[Received], Reply]


class QuietHTTPServer(ThreadingHTTPServer):
    """A client that gave up (a timeout test) is expected here, not a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeChatServer:
    """Speaks POST /v1/chat/completions on 127.0.0.1; answers queued replies, then ``default``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default: ReplySource = Reply.completion("ok")
        self._queue: deque[ReplySource] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: ReplySource) -> None:
        with self._lock:
            self._queue.extend(replies)

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            source = self._queue.popleft() if self._queue else self.default
        return source(received) if callable(source) else source

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                received = Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                    body, time.monotonic())
                if self.path != "/v1/chat/completions":
                    self._send(Reply(status=404, body={"error": {"message": "no such route"}}))
                    return
                reply = server._next(received)
                if reply.delay_s:
                    server._closing.wait(reply.delay_s)
                self._send(reply)

            def _send_events(self, reply: Reply) -> None:
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "close")  # the body ends when the connection does
                    self.end_headers()
                    self.close_connection = True
                    for i, event in enumerate(reply.events or []):
                        if reply.gate is not None and i == reply.gate_after:
                            reply.gate.wait(30)
                        data = event if isinstance(event, str) else json.dumps(event)
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up

            def _send(self, reply: Reply) -> None:
                if reply.events is not None:
                    self._send_events(reply)
                    return
                if isinstance(reply.body, (dict, list)):
                    payload = json.dumps(reply.body).encode()
                    content_type = "application/json"
                elif isinstance(reply.body, bytes):
                    payload, content_type = reply.body, "application/octet-stream"
                else:
                    payload, content_type = (reply.body or "").encode(), "text/plain"
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout tests)

        return Handler
