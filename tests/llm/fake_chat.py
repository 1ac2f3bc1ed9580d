"""A chat-completions server for tests: real socket on 127.0.0.1, scripted replies, recorded requests."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


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

            def _send(self, reply: Reply) -> None:
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
