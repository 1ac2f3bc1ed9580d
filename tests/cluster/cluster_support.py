"""Several real flowmasond nodes on one throwaway PostgreSQL database, and what tests read from it.

Each node is a ``DaemonProcess`` (tests/daemon_support.py) with its own state dir, socket and
pipeline folder; they share the database given by ``pg_dsn``. The database is read directly with
psycopg (not through a node), so an assertion never depends on the node it is about.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from daemon_support import DaemonProcess, _toml

# Short enough that a failover test takes seconds; heartbeats at a quarter so two can be missed.
LEASE_S = 2.0
HEARTBEAT_S = 0.5
# Where a run stays. Not "interrupted": a node taking a run over passes it through that status.
TERMINAL = {"succeeded", "failed", "cancelled"}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def record_chain(pipeline_id: str, stages: int, hold_s: float) -> dict[str, Any]:
    """``s1 -> s2 -> ... -> sN``: each appends ``{path, attempt, run_id}`` to the run's ``ledger``
    input, then stays in flight ``hold_s`` (flowmasond.testing's ``record``)."""
    steps = []
    for i in range(1, stages + 1):
        stage: dict[str, Any] = {"id": f"s{i}", "component_type": "record",
                                 "config": {"ledger": "{{input.ledger}}", "value": f"v{i}", "hold_s": hold_s}}
        if i > 1:
            stage["depends_on"] = [f"s{i - 1}"]
        steps.append(stage)
    return {"id": pipeline_id, "stages": steps, "output_stage_id": f"s{stages}"}


@dataclass
class Cluster:
    """N nodes on one database; ``add`` makes one, ``db`` reads the database directly."""

    root: Path
    dsn: str
    lease_s: float = LEASE_S
    heartbeat_s: float = HEARTBEAT_S
    nodes: list[DaemonProcess] = field(default_factory=list)

    def add(self, name: str, pipelines: list[dict[str, Any]] = (),  # type: ignore[assignment]
            config: dict[str, Any] | None = None, start: bool = True) -> DaemonProcess:
        """A node named ``name`` (its node id) with only ``pipelines`` in its folder."""
        home = self.root / name
        (home / "state").mkdir(parents=True)
        (home / "pipelines").mkdir()
        for definition in pipelines:
            (home / "pipelines" / f"{definition['id']}.pipeline.json").write_text(json.dumps(definition))
        settings: dict[str, Any] = {
            "component_modules": ["flowmasond.testing"], "shutdown_grace_s": 1.0, "log_level": "info",
            "journal": {"backend": "postgresql", "dsn": self.dsn},
            "cluster": {"enabled": True, "node_id": name, "lease_seconds": self.lease_s,
                        "heartbeat_seconds": self.heartbeat_s}}
        for key, value in (config or {}).items():
            if isinstance(value, dict):
                settings.setdefault(key, {}).update(value)
            else:
                settings[key] = value
        (home / "flowmasond.toml").write_text(_toml(settings))
        node = DaemonProcess(state_dir=home / "state", socket=home / "fm.sock", pipelines=home / "pipelines",
                             config=home / "flowmasond.toml", log_path=home / "daemon.log", env=clean_env())
        self.nodes.append(node)
        return node.start() if start else node

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(timeout=10)

    # -- the database, read directly ----------------------------------------------------------------
    def db(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def status(self, run_id: str) -> str:
        rows = self.db("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        return str(rows[0][0]) if rows else "missing"

    def results(self, run_id: str) -> list[tuple[str, int]]:
        """(path, attempts) of every result record of ``run_id``, in commit order."""
        return [(p, int(a or 0)) for p, a in self.db(
            "SELECT path, attempts FROM run_records WHERE run_id = %s AND kind = 'result' ORDER BY seq", (run_id,))]

    def lease_holder(self, run_id: str) -> str | None:
        rows = self.db("SELECT node_id FROM run_leases WHERE run_id = %s AND expires_at > now()", (run_id,))
        return str(rows[0][0]) if rows else None

    def events(self, run_id: str, kind: str) -> list[tuple[float, Any]]:
        return [(float(ts), data) for ts, data in self.db(
            "SELECT ts, data FROM run_events WHERE run_id = %s AND kind = %s ORDER BY id", (run_id, kind))]

    def wait_all(self, run_ids: list[str], statuses: set[str], timeout: float) -> dict[str, str]:
        """Poll the database until every run is in one of ``statuses``."""
        deadline = time.monotonic() + timeout
        current: dict[str, str] = {}
        while time.monotonic() < deadline:
            current = {rid: self.status(rid) for rid in run_ids}
            if all(s in statuses for s in current.values()):
                return current
            time.sleep(0.05)
        logs = "\n".join(f"--- {n.log_path}\n{n.log()[-3000:]}" for n in self.nodes)
        raise AssertionError(f"runs not in {statuses} after {timeout}s: {current}\n{logs}")


def ledger_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
