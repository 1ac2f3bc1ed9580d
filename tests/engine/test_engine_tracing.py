"""Traces of a run that fails and is resumed: spans from the SDK's in-memory exporter, ids from the journal.

A real SQLite journal, real shell stages and a real local HTTP server; the tracer is the daemon's
execution hook with an OpenTelemetry SDK provider whose spans land in an InMemorySpanExporter.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flowmasond.engine.dag import DAGExecutor
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.interfaces import RunStatus
from flowmasond.journal import Journal
from flowmasond.tracing import RunTracer, run_root_span_id, run_trace_id, traceparent, tracer_provider

RUN = "r-traced"


class HeaderServer:
    """A local HTTP server that records the traceparent header of each request."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                outer.seen.append(self.headers.get("traceparent"))
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hello"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server() -> Iterator[HeaderServer]:
    server = HeaderServer()
    yield server
    server.close()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "journal.sqlite3")
    yield opened
    await opened.close()


def pipeline(tmp_path: Path, url: str) -> PipelineConfig:
    """fetch (writes $TRACEPARENT) -> loop over two items -> call (HTTP) -> flaky (fails once)."""
    return PipelineConfig.model_validate({"id": "traced", "stages": [
        {"id": "fetch", "component_type": "shell",
         "config": {"command": 'printf %s "$TRACEPARENT" > "$OUT"', "env": {"OUT": str(tmp_path / "tp")}}},
        {"id": "loop", "component_type": "foreach", "depends_on": ["fetch"],
         "config": {"items": [1, 2], "loop_stages": ["each"]}},
        {"id": "each", "component_type": "shell", "config": {"command": "true"}},
        {"id": "call", "component_type": "http_request", "depends_on": ["loop"], "config": {"url": url}},
        {"id": "flaky", "component_type": "shell", "depends_on": ["call"],
         "config": {"command": 'test -e "$M" || { touch "$M"; exit 1; }', "env": {"M": str(tmp_path / "marker")}}},
    ]})


async def run_and_resume(tmp_path: Path, journal: Journal, url: str, exporter: InMemorySpanExporter
                         ) -> tuple[Any, Any, PipelineConfig]:
    tracer = RunTracer(tracer_provider(processors=[SimpleSpanProcessor(exporter)]))
    executor = DAGExecutor(ComponentRegistry.with_builtins(), hooks=tracer,
                           services={"span_ids": tracer.span_ids, "traceparent": tracer.traceparent})
    definition = pipeline(tmp_path, url)
    await journal.create_run(RUN, definition, {})
    first = await executor.execute(definition, {}, run_id=RUN, store=journal.run_store(RUN))
    snapshot = (await journal.load_snapshot(RUN)).for_resume()
    second = await executor.execute(definition, {}, run_id=RUN, store=journal.run_store(RUN), snapshot=snapshot)
    return first, second, definition


def by_path(spans: list[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for span in spans:
        path = span.attributes.get("flowmason.stage_path")
        if path is not None:
            found.setdefault(path, []).append(span)
    return found


async def test_a_resumed_run_continues_its_trace_with_correct_parents(
        tmp_path: Path, journal: Journal, http_server: HeaderServer) -> None:
    """The first execution is the root, the resume its child; each stage is a child of its execution or owner."""
    exporter = InMemorySpanExporter()
    first, second, _ = await run_and_resume(tmp_path, journal, http_server.url, exporter)
    assert (first.status, second.status) == (RunStatus.FAILED, RunStatus.SUCCEEDED)
    spans = exporter.get_finished_spans()
    trace_id, root_id = int(run_trace_id(RUN), 16), int(run_root_span_id(RUN), 16)
    assert {s.context.trace_id for s in spans} == {trace_id}

    [exec1] = [s for s in spans if s.name == "run traced"]
    assert exec1.context.span_id == root_id and exec1.parent is None, "the first execution is the root"
    assert exec1.status.status_code is StatusCode.ERROR
    [exec2] = [s for s in spans if s.name == "resume traced"]
    assert exec2.parent.span_id == root_id and exec2.status.status_code is not StatusCode.ERROR

    stages = by_path(spans)
    assert [s.parent.span_id for s in stages["fetch"]] == [exec1.context.span_id]
    assert [s.parent.span_id for s in stages["loop"]] == [exec1.context.span_id]
    loop_id = stages["loop"][0].context.span_id
    assert [s.parent.span_id for s in stages["loop/0/each"] + stages["loop/1/each"]] == [loop_id, loop_id]
    failed, succeeded = sorted(stages["flaky"], key=lambda s: s.start_time)
    assert failed.parent.span_id == exec1.context.span_id and failed.status.status_code is StatusCode.ERROR
    assert succeeded.parent.span_id == exec2.context.span_id
    assert len({s.context.span_id for s in spans}) == len(spans), "every span id is unique"


async def test_journaled_results_carry_the_exported_span_ids(
        tmp_path: Path, journal: Journal, http_server: HeaderServer) -> None:
    """Each committed result's trace_id/span_id, read back from SQLite, is the span the SDK exported."""
    exporter = InMemorySpanExporter()
    await run_and_resume(tmp_path, journal, http_server.url, exporter)
    exported = {path: [f"{s.context.span_id:016x}" for s in spans]
                for path, spans in by_path(exporter.get_finished_spans()).items()}
    results = (await journal.load_snapshot(RUN)).results
    assert set(results) == {"fetch", "loop", "loop/0/each", "loop/1/each", "call", "flaky"}
    for path, result in results.items():
        assert result.trace_id == run_trace_id(RUN)
        assert result.span_id == exported[path][-1], path  # flaky: the resumed execution's span


async def test_shell_and_http_stages_receive_their_traceparent(
        tmp_path: Path, journal: Journal, http_server: HeaderServer) -> None:
    """A shell stage sees TRACEPARENT and an HTTP stage sends a traceparent header, each naming its own span."""
    exporter = InMemorySpanExporter()
    await run_and_resume(tmp_path, journal, http_server.url, exporter)
    results = (await journal.load_snapshot(RUN)).results
    trace_id = run_trace_id(RUN)
    assert (tmp_path / "tp").read_text() == traceparent(trace_id, results["fetch"].span_id or "")
    assert http_server.seen == [traceparent(trace_id, results["call"].span_id or "")]


async def test_a_run_that_ends_closes_its_own_open_stage_spans_only() -> None:
    """A run ending with stages still open (cut off by a cancel) ends their spans, as errors, with
    it; the open stage spans of another run are left open."""
    from flowmasond.engine.dag import RunOutcome

    exporter = InMemorySpanExporter()
    tracer = RunTracer(tracer_provider(processors=[SimpleSpanProcessor(exporter)]))
    definition = PipelineConfig.model_validate({"id": "two", "stages": [
        {"id": "a", "component_type": "shell", "config": {"command": "true"}},
        {"id": "b", "component_type": "shell", "config": {"command": "true"}}]})
    for run_id in ("r-cut", "r-going"):
        await tracer.on_run_start(run_id, definition, {})
        for stage in definition.stages:
            await tracer.on_stage_start(run_id, stage.id, stage, 1)

    await tracer.on_run_complete("r-cut", RunOutcome(run_id="r-cut", pipeline_id="two",
                                                     status=RunStatus.CANCELLED, error={"message": "stop"}))

    ended = {(s.attributes.get("flowmason.run_id"), s.attributes.get("flowmason.stage_path")): s
             for s in exporter.get_finished_spans()}
    assert set(ended) == {("r-cut", "a"), ("r-cut", "b"), ("r-cut", None)}
    assert all(ended[("r-cut", p)].status.status_code is StatusCode.ERROR for p in ("a", "b"))
    assert tracer.span_ids("r-cut", "a")[1] is None
    assert tracer.span_ids("r-going", "a")[1] is not None and tracer.span_ids("r-going", "b")[1] is not None
