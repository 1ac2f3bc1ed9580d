"""The real daemon exports its spans over OTLP/HTTP to a local collector, with the ids it journaled."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)

from daemon_support import DaemonProcess
from flowmasond.tracing import run_root_span_id, run_trace_id


class Collector:
    """A local OTLP/HTTP traces endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        outer.spans.extend(scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    yield found
    found.server.shutdown()
    found.server.server_close()


def test_spans_reach_the_otlp_collector_with_the_journaled_ids(
        collector: Collector, daemon_factory: Callable[..., DaemonProcess],
        write_pipeline: Callable[[dict[str, Any]], Any]) -> None:
    """After a run and a stop, the collector holds the run's root and one span per stage, as runs.show says."""
    write_pipeline({"id": "two", "stages": [
        {"id": "a", "component_type": "shell", "config": {"command": "true"}},
        {"id": "b", "component_type": "shell", "depends_on": ["a"], "config": {"command": "true"}}]})
    daemon = daemon_factory(config={"tracing": {"otlp_endpoint": collector.endpoint}}).start()
    with daemon.client() as client:
        run_id = client.runs_start("two").run_id
    info = daemon.wait_for_status(run_id, {"succeeded", "failed"})
    assert info["status"] == "succeeded"
    assert daemon.stop() == 0  # shutting down flushes the batched spans
    spans = {s.name: s for s in collector.spans if s.trace_id.hex() == run_trace_id(run_id)}
    assert set(spans) == {"run two", "shell a", "shell b"}
    root = spans["run two"]
    assert root.span_id.hex() == run_root_span_id(run_id) and root.parent_span_id == b""
    for row in info["stages"]:
        span = spans[f"shell {row['path']}"]
        assert (row["trace_id"], row["span_id"]) == (span.trace_id.hex(), span.span_id.hex())
        assert span.parent_span_id == root.span_id


def test_an_otlp_endpoint_that_is_not_http_is_a_configuration_error(tmp_path: Any) -> None:
    """`[tracing] otlp_endpoint` must be an http(s) URL: --check-config exits 78 naming the key."""
    import subprocess
    import sys

    from daemon_support import _toml

    config = tmp_path / "flowmasond.toml"
    config.write_text(_toml({"state_dir": str(tmp_path / "s"), "tracing": {"otlp_endpoint": "collector:4318"}}))
    done = subprocess.run([sys.executable, "-m", "flowmasond.cli", "--config", str(config), "--check-config"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "tracing.otlp_endpoint" in done.stdout + done.stderr
