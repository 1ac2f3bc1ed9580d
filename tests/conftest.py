"""Shared fixtures: a temp state dir, a real flowmasond subprocess on a real socket, a client.

The daemon fixture starts ``python -m flowmasond.cli`` with its own state dir, socket and pipeline
folder, waits until ``health`` answers, and stops it (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from daemon_support import DaemonProcess, _toml
from pg_support import PgServer, start_server
from flowmason_client.client import Client


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty state directory for a daemon or a journal."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    """An empty pipeline folder; tests write ``*.pipeline.json`` files into it."""
    path = tmp_path / "pipelines"
    path.mkdir()
    return path


@pytest.fixture
def write_pipeline(pipelines_dir: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a pipeline definition into the daemon's folder as ``<id>.pipeline.json``."""
    def write(definition: dict[str, Any]) -> Path:
        path = pipelines_dir / f"{definition['id']}.pipeline.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(definition, indent=2))
        tmp.replace(path)
        return path
    return write


@pytest.fixture
def daemon_factory(tmp_path: Path, state_dir: Path, pipelines_dir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Build (not start) daemons; every one is stopped at the end of the test."""
    made: list[DaemonProcess] = []

    def make(*, config: dict[str, Any] | None = None, extra_args: list[str] | None = None,
             env: dict[str, str] | None = None) -> DaemonProcess:
        config_path = None
        if config:
            config_path = tmp_path / f"flowmasond-{len(made)}.toml"
            config_path.write_text(_toml(config))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET",
                                                                              "LISTEN_", "WATCHDOG_"))}
        base_env["PYTHONUNBUFFERED"] = "1"
        base_env.update(env or {})
        daemon = DaemonProcess(state_dir=state_dir, socket=tmp_path / "flowmasond.sock", pipelines=pipelines_dir,
                               config=config_path, log_path=tmp_path / f"daemon-{len(made)}.log", env=base_env,
                               extra_args=list(extra_args or []))
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A running flowmasond with short grace periods, on an empty pipeline folder."""
    return daemon_factory(config={"shutdown_grace_s": 2.0, "cancel_grace_s": 1.0}).start()


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Client]:
    """A sync client connected to the ``daemon`` fixture."""
    with daemon.client() as c:
        yield c


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server for the session (tests/pg_support.py), destroyed at the end."""
    server = start_server()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """The DSN of a fresh, empty database on ``pg_server``, dropped after the test."""
    if not pg_server.running:
        pg_server.start()  # a test stopped it
    name = pg_server.create_database()
    yield pg_server.dsn(name)
    if not pg_server.running:
        pg_server.start()
    pg_server.drop_database(name)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--slow``: also run the long generated profiles that ask for it (see tests/scheduling/conftest.py)."""
    parser.addoption("--slow", action="store_true", default=False, help="run the long generated test profiles")
