"""Fixtures of the daemon acceptance tests: a ledger file, and daemons shared by a whole module.

A module-scoped daemon serves the tests that only read or start independent runs (errors, fuzzing,
the command's output), so the directory stays fast; tests that kill, stop or restart a daemon use
the per-test ``daemon_factory`` from tests/conftest.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from daemon_support import DaemonProcess, _toml


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """The file ledger stages append ``<path> <attempt>`` to."""
    return tmp_path / "ledger.txt"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def module_daemon_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons that live for the whole module: ``make(config, pipelines, socket)`` (pipelines are dicts)."""
    made: list[DaemonProcess] = []

    def make(config: dict[str, Any] | None = None, pipelines: list[dict[str, Any]] | None = None,
             socket: Path | None = None) -> DaemonProcess:
        root = tmp_path_factory.mktemp("daemon")
        (root / "state").mkdir()
        (root / "pipelines").mkdir()
        for definition in pipelines or []:
            (root / "pipelines" / f"{definition['id']}.pipeline.json").write_text(json.dumps(definition))
        config_path = None
        if config:
            config_path = root / "flowmasond.toml"
            config_path.write_text(_toml(config))
        daemon = DaemonProcess(state_dir=root / "state", socket=socket or root / "flowmasond.sock",
                               pipelines=root / "pipelines", config=config_path, log_path=root / "daemon.log",
                               env=_clean_env())
        made.append(daemon)
        return daemon.start()

    yield make
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
