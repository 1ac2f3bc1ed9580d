"""The daemon's lifecycle: parts started in a fixed order, signals, readiness, graceful stop.

Start order (the exit stack tears down in reverse, so the journal opens first and closes last):
journal -> component registry -> pipeline catalog -> run manager -> control socket -> recovery ->
scheduler and hot reload -> READY. SIGTERM/SIGINT stop intake, give in-flight stages the shutdown
grace, mark the rest interrupted, checkpoint the WAL and exit 0; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from contextlib import AsyncExitStack
from typing import Any

import structlog

from flowmasond.config import DaemonConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import ConfigurationError, FlowmasonError
from flowmasond.sdnotify import (
    Notifier, is_unix_stream_listener, listen_fds, scrub_environment, watchdog_interval_s,
)
from flowmasond.streaming import TokenBroker
from flowmasond.tracing import RunTracer, tracer_provider

log = structlog.get_logger("flowmasond.daemon")

# How often finished runs past the retention period are pruned.
RETENTION_INTERVAL_S = 6 * 3600.0
# Without a systemd watchdog, how often STATUS= is refreshed (only sent when it changed).
STATUS_INTERVAL_S = 5.0
# Test hook, like the journal's crash failpoint: when set, startup recovery waits until the file it
# names exists, so a test can act while the socket listens and recovery has not finished.
HOLD_RECOVERY_ENV = "FLOWMASON_TEST_HOLD_RECOVERY"


class Daemon:
    """One flowmasond process."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.stopping = False
        self.ready = False  # True once recovery is done: `health` says "starting" until then
        self.started_monotonic = time.monotonic()
        # systemd's notify/watchdog/activation environment is read once, then removed so that
        # stage processes never inherit it (see flowmasond.sdnotify).
        self.notifier = Notifier()
        self._watchdog_s = watchdog_interval_s()
        self._listen_fds = listen_fds()
        self._hold_recovery = os.environ.pop(HOLD_RECOVERY_ENV, None)
        scrub_environment()
        self._last_status = ""
        self._reloads: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._signals = 0
        self.journal: Any = None
        self.catalog: Any = None
        self.runs: Any = None
        self.server: Any = None
        self.scheduler: Any = None
        self.cluster: Any = None  # flowmasond.cluster.ClusterNode when [cluster] is enabled
        self.stage_workers: Any = None  # flowmasond.cluster.stages.StageWorkers, with the cluster
        self.registry: ComponentRegistry | None = None
        # LLM tokens as they stream, for `runs.events --follow` (never journaled).
        self.tokens = TokenBroker()
        self.tracer: RunTracer = RunTracer()

    def schedule_count(self) -> int:
        return self.scheduler.count() if self.scheduler is not None else 0

    def request_stop(self) -> None:
        self._stop.set()

    def status_line(self) -> str:
        counts = self.runs.counts() if self.runs is not None else {"running": 0, "queued": 0}
        return (f"{counts['running']} runs active, {counts['queued']} queued, "
                f"{len(self.catalog.ids()) if self.catalog else 0} pipelines, {self.schedule_count()} schedules")

    async def _observers(self, stack: AsyncExitStack) -> list[Any]:
        """Execution hooks of the observability parts (token feed, metrics), started with the stack."""
        hooks: list[Any] = [self.tokens, self.tracer]
        if self.config.metrics.listen:
            from flowmasond.metrics import Metrics, MetricsHooks, MetricsServer

            metrics = Metrics()
            server = MetricsServer(metrics, self.config.metrics.listen)
            server.start(self)
            stack.push_async_callback(server.close)
            self.journal.writer.commit_observer = metrics.observe_commit
            hooks.append(MetricsHooks(metrics, self))
        return hooks

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        from flowmasond.api.methods import build_dispatcher
        from flowmasond.api.server import ControlServer
        from flowmasond.pipelines.catalog import PipelineCatalog
        from flowmasond.pipelines.loader import FileLimits
        from flowmasond.runs import RunManager

        config = self.config
        loop = asyncio.get_running_loop()
        _raise_fd_limit()
        async with AsyncExitStack() as stack:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.journal = await self._open_journal(stack)
            stack.push_async_callback(self._close_journal)

            self.registry = registry = ComponentRegistry.with_builtins()
            registry.load_entry_points()
            for module in config.component_modules:
                registry.register_module(module)

            self.catalog = PipelineCatalog(registry, config.pipeline_dirs, limits=FileLimits(
                max_bytes=config.limits.max_pipeline_file_bytes, max_depth=config.limits.max_json_depth),
                strict=config.strict)
            self.catalog.load_all()

            self.tracer = self._tracer(stack)
            services = await self._services(stack)
            self.runs = RunManager(journal=self.journal, catalog=self.catalog, registry=registry, config=config,
                                   services=services, hooks=await self._observers(stack), ownership=self.cluster)
            if self.cluster is not None:
                await self._start_stage_workers(stack)

            sock = self._activated_socket()
            self.server = ControlServer(
                build_dispatcher(self), None if sock else config.socket, sock=sock,
                allowed_uids=config.allowed_uids, daemon_uid=os.geteuid(),
                max_line_bytes=config.max_request_bytes, idle_timeout_s=config.client_idle_timeout_s,
                max_connections=config.limits.max_connections,
                max_connections_per_uid=config.limits.max_connections_per_uid,
                reserved_privileged=config.limits.reserved_privileged_connections,
                line_timeout_s=config.limits.line_timeout_s, socket_mode=config.socket_mode)
            await self.server.start()
            stack.push_async_callback(self.server.close)

            self._install_signals(loop)
            stack.callback(self._remove_signals, loop)

            if self._hold_recovery:
                await _wait_for_file(self._hold_recovery)
            if self.cluster is not None:
                # Instead of recovering every run found active (other nodes execute some), claim
                # the runs whose owner's lease expired, now and on every heartbeat.
                await self.cluster.start(self.runs)
                stack.push_async_callback(self.cluster.stop)
            else:
                await self.runs.recover()
            await self._start_scheduler(stack)
            if self.cluster is not None:
                self.cluster.attach_scheduler(self.scheduler)
            background = [asyncio.create_task(self._retention_loop(), name="retention")]
            # READY=1 only now: the journal is open, recovery is scheduled and the socket listens.
            self._last_status = self.status_line()
            self.ready = True
            self.notifier.ready(self._last_status)
            if self.notifier.enabled:
                background.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
            log.info("daemon_ready", pid=os.getpid(), socket=str(config.socket), state_dir=str(config.state_dir),
                     pipelines=len(self.catalog.ids()), version=_version())

            await self._stop.wait()

            self.stopping = True
            self.notifier.stopping(f"stopping: waiting up to {config.shutdown_grace_s:g} s for "
                                   f"{len(self.runs.active)} active runs")
            log.info("daemon_stopping", grace_s=config.shutdown_grace_s, active_runs=len(self.runs.active))
            if self.scheduler is not None:
                await self.scheduler.stop()
            summary = await self.runs.shutdown(config.shutdown_grace_s)
            await self.runs.stage_logs.close()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            log.info("daemon_stopped", **summary)
        self.notifier.close()
        return 0

    async def _open_journal(self, stack: AsyncExitStack) -> Any:
        """The configured journal: SQLite in the state directory, or PostgreSQL (same surface);
        with ``[cluster]``, PostgreSQL fenced by this node's leases (``self.cluster``)."""
        journal = self.config.journal
        if journal.backend == "postgresql":
            from flowmasond.journal.postgres import PgJournal

            dsn = journal.resolve_dsn()
            fence = self._join_cluster(stack, dsn) if self.config.cluster.enabled else None
            return await PgJournal.open(dsn, fence=fence, reconnect_timeout_s=journal.reconnect_timeout_s)
        from flowmasond.journal import Journal

        return await Journal.open(self.config.journal_path, synchronous=journal.synchronous,
                                  busy_timeout_ms=journal.busy_timeout_ms)

    def _join_cluster(self, stack: AsyncExitStack, dsn: str) -> Any:
        """This node's ``ClusterNode`` and the lease fence its journal checks (started after recovery)."""
        from flowmasond.cluster import ClusterNode, LeaseFence, resolve_node_id
        from flowmasond.journal.owner import OwnerLock

        config = self.config
        # One process per node id: a second daemon on this state dir would share its leases.
        lock = OwnerLock.acquire(config.state_dir / "node")
        stack.callback(lock.release)
        node_id = resolve_node_id(config.state_dir, config.cluster.node_id)
        fence = LeaseFence(node_id)
        self.cluster = ClusterNode(dsn=dsn, node_id=node_id, socket_path=str(config.socket), fence=fence,
                                   lease_s=config.cluster.lease_seconds,
                                   heartbeat_s=config.cluster.heartbeat_seconds,
                                   recovery_auto=config.recovery == "auto")
        return fence

    async def _start_stage_workers(self, stack: AsyncExitStack) -> None:
        """This node's stage workers, and the dispatcher of its runs' `distribute` stages."""
        from flowmasond.cluster.stages import StageWorkers

        cluster = self.config.cluster
        self.stage_workers = StageWorkers(
            dsn=self.cluster.dsn, node_id=self.cluster.node_id, fence=self.cluster.fence,
            registry=self.runs.executor.registry, services=self.runs.executor.services,
            workers=cluster.stage_workers, claim_s=cluster.lease_seconds, poll_s=cluster.heartbeat_seconds)
        await self.stage_workers.start()
        stack.push_async_callback(self.stage_workers.stop)
        self.runs.executor.stage_dispatcher = self.stage_workers

    async def _close_journal(self) -> None:
        await self.journal.close()

    def _tracer(self, stack: AsyncExitStack) -> RunTracer:
        """Span ids for every run (journaled, passed on as traceparent); exported when configured."""
        provider = None
        if self.config.tracing.otlp_endpoint:
            provider = tracer_provider(service_name=self.config.tracing.service_name,
                                       otlp_endpoint=self.config.tracing.otlp_endpoint)
            stack.callback(provider.shutdown)  # flushes the spans still batched

        async def first_execution(run_id: str) -> bool:
            return await self.runs.first_execution(run_id)

        return RunTracer(provider, first_execution=first_execution)

    async def _services(self, stack: AsyncExitStack) -> dict[str, Any]:
        # Shell stages inherit these names of our environment on top of their clean base.
        base: dict[str, Any] = {"env_allow": tuple(self.config.env_allow),
                                "max_stage_output_bytes": self.config.limits.max_stage_output_bytes}
        # The tracer's ids: journaled with each result, and passed on as traceparent.
        base.update({"span_ids": self.tracer.span_ids, "traceparent": self.tracer.traceparent})
        if not self.config.providers:
            return base
        from flowmasond.components.llm.providers import ProviderConfig, build_providers

        configs = {name: ProviderConfig.model_validate(raw) for name, raw in self.config.providers.items()}
        providers = build_providers(configs, self.config.default_provider)
        stack.push_async_callback(providers.aclose)
        return {**base, "providers": providers, "default_provider": self.config.default_provider,
                "token_sink": self.tokens.publish}

    async def _start_scheduler(self, stack: AsyncExitStack) -> None:
        """Start the cron scheduler (after its catch-up) and the pipeline folder watcher."""
        if self.config.scheduler.enabled:
            from flowmasond.scheduling.scheduler import Scheduler

            scheduler = Scheduler(self)
            await scheduler.start()
            # Published only once started: `schedules.list` then already reflects the catch-up.
            self.scheduler = scheduler
        if self.config.hot_reload:
            from flowmasond.pipelines.watch import PipelineWatcher

            watcher = PipelineWatcher(self.catalog, on_change=self._pipelines_changed)
            await watcher.start()
            stack.push_async_callback(watcher.stop)

    def _activated_socket(self) -> socket.socket | None:
        """The control socket systemd passed (flowmasond.socket), or None to bind our own."""
        fds = self._listen_fds
        if not fds:
            return None
        first, extra = fds[0], fds[1:]
        for fd in extra:
            # One control socket is all we serve; an extra ListenStream= would only sit unanswered.
            log.warning("activation_socket_ignored", fd=fd, listen_fds=len(fds))
            with contextlib.suppress(OSError):
                os.close(fd)
        if not is_unix_stream_listener(first):
            raise ConfigurationError("the socket passed by systemd (LISTEN_FDS) is not a listening "
                                     "AF_UNIX stream socket; use ListenStream= with a path", fd=first)
        sock = socket.socket(fileno=first)
        sock.setblocking(False)
        return sock

    # -- signals ---------------------------------------------------------------------------------
    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal_received", signal=sig.name, action="graceful stop")
            self._stop.set()
        else:
            log.warning("signal_received", signal=sig.name, action="stop now")
            if self.runs is not None:
                self.runs.stop_now()

    def _on_reload_signal(self) -> None:
        self.notifier.reloading()
        log.info("signal_received", signal="SIGHUP", action="reload pipelines")
        task = asyncio.get_running_loop().create_task(self._reload_for_signal())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload_for_signal(self) -> None:
        # systemd holds the unit in "reloading" until READY=1, so it follows even a failed reload.
        try:
            await self.reload()
        except Exception as exc:  # noqa: BLE001 - a failed reload keeps the last good pipelines
            log.error("reload_failed", error=str(exc))
        finally:
            self._last_status = self.status_line()
            self.notifier.ready(self._last_status)

    async def reload(self) -> list[str]:
        """Reload every pipeline folder (SIGHUP)."""
        changed = self.catalog.load_all() if self.catalog is not None else []
        await self._pipelines_changed(changed)
        return changed

    async def _pipelines_changed(self, changed: list[str]) -> None:
        """After the catalog changed (SIGHUP or the folder watcher): schedules follow the definitions."""
        if self.scheduler is not None:
            await self.scheduler.sync()

    # -- background ----------------------------------------------------------------------------------
    async def _retention_loop(self) -> None:
        days = self.config.journal.retention_days
        if days is None:
            return
        while True:
            try:
                pruned = await self.journal.prune(older_than_days=days)
                if pruned.runs or pruned.pipelines:
                    log.info("journal_pruned", runs=pruned.runs, pipelines=pruned.pipelines,
                             pages_freed=pruned.pages_freed, older_than_days=days)
            except FlowmasonError as exc:
                log.error("journal_prune_failed", error=str(exc))
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def _watchdog_loop(self) -> None:
        """WATCHDOG=1 every half watchdog period while healthy; STATUS= whenever it changed."""
        # Pinged from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        interval = self._watchdog_s
        loop = asyncio.get_running_loop()
        while not self.stopping:
            started = loop.time()
            # The journal must answer within the watchdog timeout (twice the interval); a slower
            # answer is a wedged daemon that systemd should restart anyway.
            healthy = interval is not None and await self._healthy(timeout=2 * interval)
            if self.stopping:
                return  # STOPPING=1 went out while we waited: it stays the last word
            if healthy:
                self.notifier.watchdog()
            status = self.status_line()
            if status != self._last_status:
                self._last_status = status
                self.notifier.status(status)
            # Keep the cadence: a slow health check shortens the wait rather than delaying the next.
            period = interval if interval is not None else STATUS_INTERVAL_S
            await asyncio.sleep(max(period - (loop.time() - started), 0.0))

    async def _healthy(self, timeout: float) -> bool:
        """Whether the journal answers on both connections within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return bool(await self.journal.ping())
        except Exception:  # noqa: BLE001 - any failure means "not healthy", never a crash
            return False


def _raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one.

    systemd's default soft limit is 1024: connections being refused (each holds a descriptor while
    it gets its error) could exhaust it, and asyncio then stops accepting anyone for a while.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError) as exc:
        log.warning("fd_limit_unchanged", error=str(exc))


def _version() -> str:
    from flowmasond import __version__

    return __version__


async def _wait_for_file(path: str) -> None:
    """Poll until ``path`` exists (the HOLD_RECOVERY_ENV test hook only)."""
    while not os.path.exists(path):
        await asyncio.sleep(0.02)
