"""Prometheus metrics: an optional HTTP listener (``[metrics] listen = "127.0.0.1:9464"``).

Counters and histograms are fed by execution hooks (runs, stages, retries, LLM usage) and by the
journal writer's commit observer; queue depth and the schedules' next fires are read from the
daemon when Prometheus scrapes. prometheus_client serves ``/metrics`` from its own thread, so a
scrape asks the event loop for the live values and waits at most ``SCRAPE_TIMEOUT_S``.

Label sets are bounded: pipeline ids, component types, statuses, providers and models, schedule
names. Stage paths are never labels (a foreach over a thousand items would be a thousand series).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flowmasond.config import parse_listen
from flowmasond.engine.interfaces import ExecutionHooks
from flowmasond.engine.interfaces import RunStatus
from flowmasond.errors import ConfigurationError, FlowmasonError

if TYPE_CHECKING:
    from flowmasond.daemon import Daemon
    from flowmasond.engine.models import PipelineConfig, StageConfig
    from flowmasond.engine.interfaces import ComponentResult

log = structlog.get_logger("flowmasond.metrics")

# A scrape waits this long for the event loop; a wedged loop shows as missing gauges, not a hung scrape.
SCRAPE_TIMEOUT_S = 2.0
# Stage durations span a 1 ms json_transform to an hour-long shell job.
STAGE_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# A commit is one fsync: sub-millisecond on tmpfs, tens of ms on a busy disk.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# From "on time" to "the daemon was down for a day".
LAG_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600, 86400)


class Metrics:
    """Every metric of one daemon, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter("flowmason_runs_started", "Run executions started (a resume starts one again).",
                                    ["pipeline"], registry=r)
        self.runs_finished = Counter("flowmason_runs_finished", "Run executions that ended, by final status.",
                                     ["pipeline", "status"], registry=r)
        self.stage_duration = Histogram("flowmason_stage_duration_seconds",
                                        "Duration of finished stage executions (all attempts).",
                                        ["pipeline", "component_type", "status"], buckets=STAGE_BUCKETS, registry=r)
        self.stage_retries = Counter("flowmason_stage_retries", "Stage attempts that failed and were retried.",
                                     ["pipeline", "component_type"], registry=r)
        self.commit_seconds = Histogram("flowmason_journal_commit_seconds",
                                        "Time to commit one journal group transaction (its fsync included).",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.commit_group = Histogram("flowmason_journal_commit_group_size",
                                      "Requests committed together in one journal transaction.",
                                      buckets=GROUP_BUCKETS, registry=r)
        self.schedule_lag = Histogram("flowmason_schedule_lag_seconds",
                                      "From a schedule's fire time to its run starting to execute.",
                                      ["pipeline", "schedule"], buckets=LAG_BUCKETS, registry=r)
        self.llm_tokens = Counter("flowmason_llm_tokens", "LLM tokens used by finished stages.",
                                  ["pipeline", "provider", "model", "direction"], registry=r)
        self.llm_cost = Counter("flowmason_llm_cost_usd", "LLM cost of finished stages, in US dollars.",
                                ["pipeline", "provider", "model"], registry=r)

    def observe_commit(self, seconds: float, requests: int) -> None:
        """The journal writer's commit observer."""
        self.commit_seconds.observe(seconds)
        self.commit_group.observe(requests)


class MetricsHooks(ExecutionHooks):
    """Feeds the run, stage, retry, schedule-lag and LLM metrics from execution callbacks."""

    def __init__(self, metrics: Metrics, daemon: Daemon) -> None:
        self.metrics = metrics
        self.daemon = daemon
        self._pipeline: dict[str, str] = {}  # run id -> pipeline id, while it executes

    async def on_run_start(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> None:
        self._pipeline[run_id] = pipeline.id
        self.metrics.runs_started.labels(pipeline.id).inc()
        try:
            row = await self.daemon.journal.get_run(run_id)
        except FlowmasonError:  # an engine run without a journal row (not the daemon's case)
            return
        # Lag is measured once per fire: not again when the run is resumed or recovered.
        if (row.schedule_id and isinstance(row.fire_time, (int, float))
                and not row.resumed_count and not row.recovery_attempts):
            self.metrics.schedule_lag.labels(pipeline.id, row.schedule_id).observe(
                max(time.time() - row.fire_time, 0.0))

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None:
        self.metrics.stage_retries.labels(self._pipeline.get(run_id, ""), stage.component_type).inc()

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig, result: ComponentResult) -> None:
        pipeline = self._pipeline.get(run_id, "")
        self.metrics.stage_duration.labels(pipeline, result.component_type, result.status.value).observe(
            max(result.finished_at - result.started_at, 0.0))
        usage = result.usage
        if usage.input_tokens or usage.output_tokens or usage.cost_usd:
            provider, model = usage.provider or "", usage.model or ""
            self.metrics.llm_tokens.labels(pipeline, provider, model, "input").inc(usage.input_tokens)
            self.metrics.llm_tokens.labels(pipeline, provider, model, "output").inc(usage.output_tokens)
            self.metrics.llm_cost.labels(pipeline, provider, model).inc(usage.cost_usd)

    async def on_run_complete(self, run_id: str, outcome: Any) -> None:
        pipeline = self._pipeline.pop(run_id, outcome.pipeline_id)
        status = outcome.status
        # The run manager journals a run cancelled by the daemon's own shutdown as interrupted.
        if status is RunStatus.CANCELLED and self.daemon.stopping:
            status = RunStatus.INTERRUPTED
        self.metrics.runs_finished.labels(pipeline, status.value).inc()


class LiveCollector(Collector):
    """Gauges read from the daemon at scrape time: queue depth and the schedules' fire times."""

    def __init__(self, daemon: Daemon, loop: asyncio.AbstractEventLoop) -> None:
        self.daemon = daemon
        self.loop = loop

    async def _snapshot(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        counts = self.daemon.runs.counts() if self.daemon.runs is not None else {"running": 0, "queued": 0}
        schedules = await self.daemon.scheduler.list_schedules() if self.daemon.scheduler is not None else []
        return counts, schedules

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts, schedules = asyncio.run_coroutine_threadsafe(self._snapshot(), self.loop).result(SCRAPE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the loop does not
            log.warning("metrics_snapshot_failed", error=str(exc) or type(exc).__name__)
            return
        running = GaugeMetricFamily("flowmason_runs_running", "Runs executing now (holding a concurrency slot).")
        running.add_metric([], counts["running"])
        queued = GaugeMetricFamily("flowmason_runs_queued", "Runs waiting for a concurrency slot (queue depth).")
        queued.add_metric([], counts["queued"])
        next_fire = GaugeMetricFamily("flowmason_schedule_next_fire_timestamp_seconds",
                                      "When each active schedule fires next (Unix time).", labels=["schedule"])
        last_fire = GaugeMetricFamily("flowmason_schedule_last_fire_timestamp_seconds",
                                      "When each schedule last fired (Unix time).", labels=["schedule"])
        paused = GaugeMetricFamily("flowmason_schedule_paused", "1 when the schedule is paused.", labels=["schedule"])
        for s in schedules:
            name = str(s.get("name") or f"{s.get('pipeline_id')}/{s.get('id')}")
            if isinstance(s.get("next_fire"), (int, float)):
                next_fire.add_metric([name], s["next_fire"])
            if isinstance(s.get("last_fire"), (int, float)):
                last_fire.add_metric([name], s["last_fire"])
            paused.add_metric([name], 1.0 if s.get("paused") else 0.0)
        yield from (running, queued, next_fire, last_fire, paused)


class MetricsServer:
    """The ``/metrics`` listener; started with the daemon, closed on stop."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        self.metrics = metrics
        self.host, self.port = parse_listen(listen)
        self._server: Any = None

    def start(self, daemon: Daemon) -> None:
        """Register the live gauges and listen; an address in use is a configuration error."""
        self.metrics.registry.register(LiveCollector(daemon, asyncio.get_running_loop()))
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen for metrics on {self.host}:{self.port}: "
                                     f"{exc.strerror or exc}", key="metrics.listen") from None
        log.info("metrics_listening", address=f"{self.host}:{self.port}")

    async def close(self) -> None:
        """Stop serving; off the loop, since a scrape in progress may be waiting for the loop."""
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
