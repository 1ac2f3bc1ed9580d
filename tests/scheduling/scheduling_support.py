"""Scheduler test helpers: the daemon's real parts (journal, catalog, run manager) and a manual clock.

``Rig`` builds them on a temp dir (no socket, no subprocess) with a ``Scheduler`` whose clock moves
only when the test says so; ``await rig.advance(s)`` returns once every fire due at the new time has
been recorded and its run created.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from daemon_support import DaemonProcess, _toml
from flowmason_client.client import Client
from flowmasond.config import DaemonConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.journal import Journal
from flowmasond.journal.rows import RunRow
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.runs import RunManager
from flowmasond.scheduling.scheduler import Scheduler
from flowmasond.scheduling.clock import ManualClock

# Monday 2030-01-07 10:00:00 UTC: a round time, so "every minute" fires land on known seconds.
T0 = datetime(2030, 1, 7, 10, 0, 0, tzinfo=timezone.utc).timestamp()


def pipeline(pid: str, *schedules: dict[str, Any], hold_s: float | None = None, value: str = "v1") -> dict[str, Any]:
    """A one- or two-stage pipeline; with ``hold_s`` its runs stay active that long (a sleep stage)."""
    stages: list[dict[str, Any]] = [{"id": "out", "component_type": "variable_set",
                                     "config": {"variables": {"value": value}}}]
    if hold_s is not None:
        stages.insert(0, {"id": "hold", "component_type": "sleep", "config": {"seconds": hold_s}})
        stages[1]["depends_on"] = ["hold"]
    return {"id": pid, "stages": stages, "schedules": list(schedules)}


@dataclass
class Parts:
    """The daemon parts a scheduler needs (what ``SchedulerHost`` describes)."""

    journal: Journal
    catalog: PipelineCatalog
    runs: RunManager
    config: DaemonConfig


@dataclass
class Rig:
    """Real parts on a temp dir plus a manual clock; ``restart()`` keeps the journal file."""

    root: Path
    clock: ManualClock
    settings: dict[str, Any] = field(default_factory=dict)
    parts: Parts | None = None
    scheduler: Scheduler | None = None

    @property
    def folder(self) -> Path:
        return self.root / "pipelines"

    def write(self, definition: dict[str, Any]) -> Path:
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f"{definition['id']}.pipeline.json"
        path.write_text(json.dumps(definition))
        return path

    async def start(self) -> Scheduler:
        config = DaemonConfig(state_dir=self.root / "state", socket=self.root / "sock",
                              pipeline_dirs=[self.folder], cancel_grace_s=0.5, **self.settings)
        config.state_dir.mkdir(exist_ok=True)
        journal = await Journal.open(config.journal_path, synchronous="NORMAL", clock=self.clock.now)
        registry = ComponentRegistry.with_builtins()
        catalog = PipelineCatalog(registry, [self.folder])
        catalog.load_all()
        runs = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
        self.parts = Parts(journal=journal, catalog=catalog, runs=runs, config=config)
        self.scheduler = Scheduler(self.parts, clock=self.clock)
        await self.scheduler.start()
        return self.scheduler

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.parts is not None:
            await self.parts.runs.shutdown(0.0)
            await self.parts.journal.close()
        self.scheduler = self.parts = None

    async def restart(self) -> Scheduler:
        await self.stop()
        return await self.start()

    async def advance(self, seconds: float) -> None:
        """Move the clock and wait until the scheduler has handled everything now due."""
        assert self.scheduler is not None
        self.clock.advance(seconds)
        await self.scheduler.wait_idle()

    async def reload(self) -> None:
        assert self.parts is not None and self.scheduler is not None
        self.parts.catalog.load_all()
        await self.scheduler.sync()
        await self.scheduler.wait_idle()

    async def runs(self, pipeline_id: str) -> list[RunRow]:
        """The pipeline's runs, oldest fire (then creation) first."""
        assert self.parts is not None
        rows = await self.parts.journal.list_runs(pipeline_id=pipeline_id, limit=1000)
        return sorted(rows, key=lambda r: (r.fire_time or 0.0, r.created_at))

    async def wait_status(self, run_id: str, statuses: set[str], timeout: float = 10.0) -> RunRow:
        """Wait (bounded) until the run reaches one of ``statuses``."""
        assert self.parts is not None
        deadline = time.monotonic() + timeout
        while True:
            row = await self.parts.journal.get_run(run_id)
            if row.status.value in statuses:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {row.status.value}")
            await self.parts.runs.wait_changed(0.2)

    async def wait_active(self, run_id: str, *, running: bool = True, timeout: float = 10.0) -> None:
        """Wait (bounded) until the run holds a slot (``running``) or has left the active set."""
        assert self.parts is not None
        deadline = time.monotonic() + timeout
        while True:
            active = self.parts.runs.active.get(run_id)
            if (active is not None and active.running) if running else active is None:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} did not become {'running' if running else 'inactive'}")
            await asyncio.sleep(0.01)


# -- real daemons ---------------------------------------------------------------------------------
def make_daemon(root: Path, config: dict[str, Any] | None = None) -> DaemonProcess:
    """A flowmasond (not started) with its own state dir, socket and pipeline folder under ``root``."""
    for sub in ("state", "pipelines"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    settings = {"shutdown_grace_s": 2.0, "cancel_grace_s": 0.5, **(config or {})}
    config_path = root / "flowmasond.toml"
    config_path.write_text(_toml(settings))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return DaemonProcess(state_dir=root / "state", socket=root / "flowmasond.sock", pipelines=root / "pipelines",
                         config=config_path, log_path=root / "daemon.log", env=env)


def write_file(daemon: DaemonProcess, definition: dict[str, Any]) -> Path:
    """Save a pipeline into the daemon's folder the way editors do: a temp file renamed over the target."""
    path = daemon.pipelines / f"{definition['id']}.pipeline.json"
    tmp = daemon.pipelines / f".{definition['id']}.pipeline.json.tmp"
    tmp.write_text(json.dumps(definition, indent=2))
    os.replace(tmp, path)
    return path


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
               daemon: DaemonProcess | None = None) -> Any:
    """Poll ``check`` until it returns something truthy (bounded); returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = daemon.log()[-3000:] if daemon is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.05)


def schedule_runs(client: Client, pipeline_id: str) -> list[dict[str, Any]]:
    """Runs of a pipeline as ``runs.list`` returns them, oldest fire first."""
    runs = client.call("runs.list", {"pipeline_id": pipeline_id, "limit": 1000})["runs"]
    return sorted(runs, key=lambda r: (r.get("fire_time") or 0.0, r["created_at"]))


def schedule_info(client: Client, name: str) -> dict[str, Any] | None:
    """The ``schedules.list`` entry named ``pipeline/schedule`` (None when absent)."""
    return next((s for s in client.call("schedules.list")["schedules"] if s["name"] == name), None)


def recorded_fires(daemon: DaemonProcess, pipeline_id: str) -> list[tuple[float, str | None]]:
    """(fire_time, run_id) of every recorded fire of the pipeline, read from the journal file."""
    conn = sqlite3.connect(f"file:{daemon.state_dir / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT fire_time, run_id FROM schedule_fires WHERE pipeline_id = ? "
                            "ORDER BY fire_time", (pipeline_id,)).fetchall()
    finally:
        conn.close()
    return [(float(r[0]), r[1]) for r in rows]
