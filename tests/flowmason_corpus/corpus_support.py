"""What the FlowMason corpus runs against: a local HTTP API and scripted LLM answers by role.

The HTTP server is real (127.0.0.1, a thread); the LLM answers come from tests/llm/fake_chat.py,
chosen by the node's system prompt so that stages running concurrently get the right answer
whatever the order of their requests.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from llm.fake_chat import Received, Reply

CORPUS = Path(__file__).resolve().parent / "pipelines"


class LocalApi:
    """GET /users/1, GET /missing (404), POST /echo (body and query), GET /flaky (503 once), POST /hook."""

    def __init__(self) -> None:
        self.hooks: list[Any] = []
        self.flaky_calls = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass

            def _send(self, status: int, body: Any) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path == "/users/1":
                    self._send(200, {"id": 1, "name": "Ada", "tags": ["math", "engines"]})
                elif self.path == "/flaky":
                    with api._lock:
                        api.flaky_calls += 1
                        first = api.flaky_calls == 1
                    if first:
                        self._send(503, "warming up")
                    else:
                        self._send(200, {"ok": True})
                else:
                    self._send(404, "not here")

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                path = urlsplit(self.path).path
                if path == "/echo":
                    self._send(200, {"received": body, "content_type": self.headers.get("Content-Type"),
                                     "query": dict(parse_qsl(urlsplit(self.path).query))})
                elif path == "/hook":
                    with api._lock:
                        api.hooks.append(body)
                    self._send(200, {"ok": True})
                else:
                    self._send(404, "not here")

        return Handler


def _messages(received: Received) -> tuple[str, str]:
    messages = received.body.get("messages") or []
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    return system, user


def llm_by_role(received: Received) -> Reply:
    """The scripted answer of each LLM node, recognised by its system prompt."""
    system, user = _messages(received)
    if "expert reviewer" in system:
        answer: Any = {"score": 0.8, "feedback": "Tighten the intro", "strengths": ["clear"],
                       "improvements": ["shorter intro"], "criterion_scores": {"clarity": 0.9}}
    elif "expert editor" in system:
        content = re.search(r"Original content:\n<<<\n(.*?)\n>>>", user, re.DOTALL)
        answer = {"improved_content": (content.group(1) if content else "?") + " (polished)",
                  "changes_made": ["tightened the intro"], "improvement_summary": "shorter"}
    elif "expert judge" in system:
        answer = {"selected_index": 0, "explanation": "most relevant", "confidence": 0.9,
                  "rankings": [{"index": 2, "score": 0.1, "reason": "off topic"},
                               {"index": 0, "score": 0.9, "reason": "on topic"},
                               {"index": 1, "score": 0.6, "reason": "terse"}]}
    elif "synthesize" in system:
        answer = {"synthesized": "Both views favour a shorter intro.", "key_themes": ["brevity", "relevance"]}
    else:
        return Reply.completion(f"Draft: {user}")
    return Reply.completion(json.dumps(answer))
