"""Traces: every run is a trace and every stage execution a span, exported with OpenTelemetry.

The ids are the daemon's own, whether or not anything is exported: a run's trace id and its root
span id are derived from the run id, so a resumed run (after a cancel, a failure, a crash or a
restart) continues the same trace. The run's first execution is the root span (``run <pipeline>``);
each resume is a span under it (``resume <pipeline>``); each stage execution is a span under its
execution or under the control-flow stage that runs it (``loop/2/transform`` under ``loop``). The
engine stamps every committed result with its trace and span id (journaled), and HTTP and shell
stages receive the W3C ``traceparent``. (When the first execution died with the daemon, its root
span was never exported; the resumed spans still name it as their parent.)

With ``[tracing] otlp_endpoint`` set, spans go to that OTLP/HTTP collector through the
OpenTelemetry SDK (the ``otel`` extra); the SDK is given our ids, so the journal and the backend
agree.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Awaitable, Callable

import structlog

from flowmasond.engine.interfaces import ExecutionHooks
from flowmasond.engine.interfaces import RunStatus, StageStatus
from flowmasond.errors import ConfigurationError

if TYPE_CHECKING:
    from flowmasond.engine.models import PipelineConfig, StageConfig
    from flowmasond.engine.interfaces import ComponentResult

log = structlog.get_logger("flowmasond.tracing")

# Seconds one OTLP export may take, retries included.
EXPORT_TIMEOUT_S = 3.0

def run_trace_id(run_id: str) -> str:
    """The run's trace id: 32 hex digits derived from the run id (never all zeros)."""
    digest = hashlib.sha256(b"flowmason-trace\0" + run_id.encode()).hexdigest()[:32]
    return digest if int(digest, 16) else "1" * 32


def run_root_span_id(run_id: str) -> str:
    """The id of the run's root span: 16 hex digits derived from the run id (never all zeros)."""
    digest = hashlib.sha256(b"flowmason-root\0" + run_id.encode()).hexdigest()[:16]
    return digest if int(digest, 16) else "1" * 16


def traceparent(trace_id: str, span_id: str) -> str:
    """The W3C ``traceparent`` header value of a sampled span."""
    return f"00-{trace_id}-{span_id}-01"


# Span ids need to be unique, not secret: a PRNG seeded from the OS once, like the OpenTelemetry
# SDK's RandomIdGenerator (random.getrandbits), instead of an os.urandom system call per span.
_SPAN_IDS = random.Random()  # noqa: S311 - unique ids, not secrets


def _new_span_id() -> str:
    while True:
        value = _SPAN_IDS.getrandbits(64)
        if value:
            return f"{value:016x}"


@dataclass(slots=True, kw_only=True)
class OpenSpan:
    """A span that has started and not ended; ``otel`` is the SDK's span when exporting."""

    trace_id: str
    span_id: str
    parent_id: str | None
    otel: Any = None
    attempts: list[int] = field(default_factory=list)


class RunTracer(ExecutionHooks):
    """The execution hook that keeps span ids for runs and stages and, given an SDK provider, exports.

    ``span_ids`` and ``traceparent`` are the services the engine and components call.
    """

    def __init__(self, provider: Any = None, *,
                 first_execution: Callable[[str], Awaitable[bool]] | None = None) -> None:
        """``first_execution(run_id)`` says whether a run never executed before (the daemon asks
        its journal); without it, a run is new the first time this tracer sees it."""
        self._provider = provider
        self._tracer = provider.get_tracer("flowmasond") if provider is not None else None
        self._ids: Any = getattr(provider, "id_generator", None) if provider is not None else None
        self._first_execution = first_execution
        self._seen: set[str] = set()
        self._executions: dict[str, OpenSpan] = {}  # run id -> this execution's span
        self._stages: dict[tuple[str, str], OpenSpan] = {}
        # The open stage paths of each run: a run's end closes its own spans without scanning
        # every open span of every run (1,000 runs ending together made that quadratic).
        self._open_paths: dict[str, dict[str, None]] = {}  # insertion-ordered sets

    # -- services ---------------------------------------------------------------------------------
    def span_ids(self, run_id: str, path: str) -> tuple[str | None, str | None]:
        """(trace id, span id) of the stage execution at ``path``; the span is None if none is open."""
        span = self._stages.get((run_id, path))
        # The open span carries the trace id: no hash per stage.
        trace_id = span.trace_id if span is not None else run_trace_id(run_id)
        return trace_id, span.span_id if span is not None else None

    def traceparent(self, run_id: str, path: str) -> str | None:
        """The W3C ``traceparent`` to hand to what the stage at ``path`` calls."""
        span = self._stages.get((run_id, path)) or self._executions.get(run_id)
        return traceparent(span.trace_id, span.span_id) if span is not None else None

    # -- hooks ------------------------------------------------------------------------------------
    async def on_run_start(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> None:
        if self._first_execution is not None:
            try:
                first = await self._first_execution(run_id)
            except Exception:  # noqa: BLE001 - unknown: treat as a resume, never duplicate the root
                first = False
        else:
            first = run_id not in self._seen
            self._seen.add(run_id)
        attributes = {"flowmason.run_id": run_id, "flowmason.pipeline_id": pipeline.id}
        trace_id, root = run_trace_id(run_id), run_root_span_id(run_id)
        if first:
            self._executions[run_id] = self._start(f"run {pipeline.id}", trace_id, None, attributes, span_id=root)
        else:
            self._executions[run_id] = self._start(f"resume {pipeline.id}", trace_id, root, attributes)

    async def on_stage_start(self, run_id: str, path: str, stage: StageConfig, attempt: int) -> None:
        key = (run_id, path)
        span = self._stages.get(key)
        if span is None:
            parent = self._parent(run_id, path)
            if parent is None:
                return  # not a run this tracer saw start (an engine used without on_run_start)
            self._open_paths.setdefault(run_id, {})[path] = None
            span = self._stages[key] = self._start(
                f"{stage.component_type} {path}", parent.trace_id, parent.span_id,
                {"flowmason.run_id": run_id, "flowmason.stage_path": path, "flowmason.stage_id": stage.id,
                 "flowmason.component_type": stage.component_type})
        span.attempts.append(attempt)
        if span.otel is not None and len(span.attempts) > 1:
            span.otel.add_event("attempt", {"flowmason.attempt": attempt})

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None:
        span = self._stages.get((run_id, path))
        if span is not None and span.otel is not None:
            span.otel.add_event("retry", {"flowmason.attempt": attempt, "flowmason.error": error[:1000],
                                          "flowmason.delay_s": delay_s})

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig, result: ComponentResult) -> None:
        span = self._stages.pop((run_id, path), None)
        if span is not None:
            self._open_paths.get(run_id, {}).pop(path, None)
        if span is None or span.otel is None:
            return
        otel = span.otel
        otel.set_attribute("flowmason.status", result.status.value)
        otel.set_attribute("flowmason.attempts", result.attempts)
        if result.usage.input_tokens or result.usage.output_tokens:
            otel.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
            otel.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
        if result.status is StageStatus.FAILED:
            self._fail(otel, result.error or "failed")
        otel.end(end_time=int((result.finished_at or time.time()) * 1e9))

    async def on_run_complete(self, run_id: str, outcome: Any) -> None:
        execution = self._executions.pop(run_id, None)
        # Stages still open were cut off (cancelled in flight): end their spans with the execution.
        for path in self._open_paths.pop(run_id, {}):
            span = self._stages.pop((run_id, path))
            if span.otel is not None:
                self._fail(span.otel, f"ended with the run ({outcome.status.value})")
                span.otel.end()
        if execution is not None and execution.otel is not None:
            execution.otel.set_attribute("flowmason.status", outcome.status.value)
            if outcome.status is not RunStatus.SUCCEEDED:
                self._fail(execution.otel, (outcome.error or {}).get("message") or outcome.status.value)
            execution.otel.end()

    # -- plumbing ---------------------------------------------------------------------------------
    def _parent(self, run_id: str, path: str) -> OpenSpan | None:
        parts = path.split("/")
        for cut in range(len(parts) - 1, 0, -1):
            owner = self._stages.get((run_id, "/".join(parts[:cut])))
            if owner is not None:
                return owner
        return self._executions.get(run_id)

    def _start(self, name: str, trace_id: str, parent_id: str | None, attributes: dict[str, Any], *,
               span_id: str | None = None) -> OpenSpan:
        span_id = span_id or _new_span_id()
        otel = None
        if self._tracer is not None and self._ids is not None:
            from opentelemetry import trace
            from opentelemetry.context import Context
            from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

            if parent_id is None:
                parent = Context()  # a root: the SDK asks the id generator for the trace id too
                self._ids.next_trace_id = int(trace_id, 16)
            else:
                parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(
                    trace_id=int(trace_id, 16), span_id=int(parent_id, 16), is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED))))
            self._ids.next_span_id = int(span_id, 16)
            otel = self._tracer.start_span(name, context=parent, attributes=attributes)
        return OpenSpan(trace_id=trace_id, span_id=span_id, parent_id=parent_id, otel=otel)

    @staticmethod
    def _fail(span: Any, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, message[:1000]))


def _chosen_ids_class() -> type:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class ChosenIds(IdGenerator):
        """Hands the SDK the id we chose for the next span (set just before ``start_span``)."""

        def __init__(self) -> None:
            self.next_span_id: int | None = None
            self.next_trace_id: int | None = None
            self._random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            value, self.next_span_id = self.next_span_id, None
            return value if value is not None else self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            value, self.next_trace_id = self.next_trace_id, None
            return value if value is not None else self._random.generate_trace_id()

    return ChosenIds


def tracer_provider(*, service_name: str = "flowmasond", processors: list[Any] | None = None,
                    otlp_endpoint: str | None = None) -> Any:
    """An SDK ``TracerProvider`` that takes our ids, exporting to ``otlp_endpoint`` and/or ``processors``."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        raise ConfigurationError("tracing.otlp_endpoint needs the OpenTelemetry SDK: pip install 'flowmasond[otel]'",
                                 key="tracing.otlp_endpoint") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              id_generator=_chosen_ids_class()())
    for processor in processors or []:
        provider.add_span_processor(processor)
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigurationError("tracing.otlp_endpoint needs the OTLP exporter: pip install 'flowmasond[otel]'",
                                     key="tracing.otlp_endpoint") from None
        # A bounded timeout: at shutdown the last batch is sent once more, and an unreachable
        # collector must not eat the stop timeout systemd gives the daemon.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint,
                                                                        timeout=EXPORT_TIMEOUT_S)))
    return provider
