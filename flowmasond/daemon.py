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
from flowmasond.errors import FlowmasonError
from flowmasond.sdnotify import Notifier, listen_fds, watchdog_interval_s

log = structlog.get_logger("flowmasond.daemon")

# How often finished runs past the retention period are pruned.
RETENTION_INTERVAL_S = 6 * 3600.0


class Daemon:
    """One flowmasond process."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.stopping = False
        self.started_monotonic = time.monotonic()
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._signals = 0
        self.journal: Any = None
        self.catalog: Any = None
        self.runs: Any = None
        self.server: Any = None
        self.scheduler: Any = None
        self.registry: ComponentRegistry | None = None

    def schedule_count(self) -> int:
        return self.scheduler.count() if self.scheduler is not None else 0

    def request_stop(self) -> None:
        self._stop.set()

    def status_line(self) -> str:
        counts = self.runs.counts() if self.runs is not None else {"running": 0, "queued": 0}
        return (f"{counts['running']} runs active, {counts['queued']} queued, "
                f"{len(self.catalog.ids()) if self.catalog else 0} pipelines, {self.schedule_count()} schedules")

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        from flowmasond.api.methods import build_dispatcher
        from flowmasond.api.server import ControlServer
        from flowmasond.journal import Journal
        from flowmasond.pipelines.catalog import PipelineCatalog
        from flowmasond.runs import RunManager

        config = self.config
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.journal = await Journal.open(config.journal_path, synchronous=config.journal.synchronous,
                                              busy_timeout_ms=config.journal.busy_timeout_ms)
            stack.push_async_callback(self._close_journal)

            self.registry = registry = ComponentRegistry.with_builtins()
            registry.load_entry_points()
            for module in config.component_modules:
                registry.register_module(module)

            self.catalog = PipelineCatalog(registry, config.pipeline_dirs)
            self.catalog.load_all()

            services = await self._services(stack)
            self.runs = RunManager(journal=self.journal, catalog=self.catalog, registry=registry, config=config,
                                   services=services)

            sock = self._activated_socket()
            self.server = ControlServer(
                build_dispatcher(self), None if sock else config.socket, sock=sock,
                allowed_uids=config.allowed_uids, daemon_uid=os.geteuid(),
                max_line_bytes=config.max_request_bytes, idle_timeout_s=config.client_idle_timeout_s,
                socket_mode=config.socket_mode)
            await self.server.start()
            stack.push_async_callback(self.server.close)

            self._install_signals(loop)
            stack.callback(self._remove_signals, loop)

            await self.runs.recover()
            await self._start_scheduler(stack)
            background = [asyncio.create_task(self._retention_loop(), name="retention")]
            interval = watchdog_interval_s()
            if interval is not None and self.notifier.enabled:
                background.append(asyncio.create_task(self._watchdog_loop(interval), name="watchdog"))
            self.notifier.ready(self.status_line())
            log.info("daemon_ready", pid=os.getpid(), socket=str(config.socket), state_dir=str(config.state_dir),
                     pipelines=len(self.catalog.ids()), version=_version())

            await self._stop.wait()

            self.stopping = True
            self.notifier.stopping()
            log.info("daemon_stopping", grace_s=config.shutdown_grace_s, active_runs=len(self.runs.active))
            if self.scheduler is not None:
                await self.scheduler.stop()
            summary = await self.runs.shutdown(config.shutdown_grace_s)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            log.info("daemon_stopped", **summary)
        self.notifier.close()
        return 0

    async def _close_journal(self) -> None:
        await self.journal.close()

    async def _services(self, stack: AsyncExitStack) -> dict[str, Any]:
        if not self.config.providers:
            return {}
        from flowmasond.components.llm.providers import ProviderConfig, build_providers

        configs = {name: ProviderConfig.model_validate(raw) for name, raw in self.config.providers.items()}
        providers = build_providers(configs, self.config.default_provider)
        stack.push_async_callback(providers.aclose)
        return {"providers": providers, "default_provider": self.config.default_provider}

    async def _start_scheduler(self, stack: AsyncExitStack) -> None:
        if not self.config.scheduler.enabled:
            return
        try:
            from flowmasond.scheduler import Scheduler
        except ImportError:
            return
        self.scheduler = Scheduler(self)
        await self.scheduler.start()

    def _activated_socket(self) -> socket.socket | None:
        fds = listen_fds()
        if not fds:
            return None
        sock = socket.socket(fileno=fds[0])
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
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> list[str]:
        """Reload every pipeline folder (SIGHUP)."""
        changed = self.catalog.load_all() if self.catalog is not None else []
        if self.scheduler is not None:
            await self.scheduler.sync()
        self.notifier.ready(self.status_line())
        return changed

    # -- background ----------------------------------------------------------------------------------
    async def _retention_loop(self) -> None:
        days = self.config.journal.retention_days
        if days is None:
            return
        while True:
            try:
                pruned = await self.journal.prune(older_than_days=days)
                if pruned:
                    log.info("journal_pruned", runs=pruned, older_than_days=days)
            except FlowmasonError as exc:
                log.error("journal_prune_failed", error=str(exc))
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def _watchdog_loop(self, interval: float) -> None:
        # Pinged from the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            if await self._healthy():
                self.notifier.watchdog()
                self.notifier.status(self.status_line())
            await asyncio.sleep(interval)

    async def _healthy(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.journal.ping(), timeout=5.0))
        except Exception:  # noqa: BLE001 - any failure means "not healthy", never a crash
            return False


def _version() -> str:
    from flowmasond import __version__

    return __version__
