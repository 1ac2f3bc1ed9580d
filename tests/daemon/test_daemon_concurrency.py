"""`max_concurrent_runs`: runs beyond the limit wait `pending` in a queue and start when a slot frees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from daemon_acceptance_support import WAIT_FOR_GATE, read_ledger, shell_stage, wait_until
from daemon_support import DaemonProcess

HOLD = {
    "id": "hold",
    "stages": [shell_stage("work", f'echo "$FLOWMASON_RUN_ID start" >> "$LEDGER"; {WAIT_FOR_GATE}; '
                                   'echo "$FLOWMASON_RUN_ID end" >> "$LEDGER"', gate="gate")],
}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A daemon that runs one run at a time."""
    return module_daemon_factory(config={"max_concurrent_runs": 1}, pipelines=[HOLD])


def _start(daemon: DaemonProcess, ledger: Path, gate: Path) -> str:
    with daemon.client() as client:
        return client.runs_start("hold", {"ledger": str(ledger), "gate": str(gate)}).run_id


def _marks(ledger: Path) -> list[str]:
    return [line for line in read_ledger(ledger) if line.endswith((" start", " end"))]


def test_second_run_stays_pending_until_the_first_finishes(daemon: DaemonProcess, tmp_path: Path) -> None:
    """With a limit of 1 the second run is `pending` while the first runs, and starts only after it ended."""
    ledger, gate_a, gate_b = tmp_path / "ledger.txt", tmp_path / "a", tmp_path / "b"
    gate_b.touch()
    first = _start(daemon, ledger, gate_a)
    wait_until(lambda: _marks(ledger), what="the first run's stage to start")
    second = _start(daemon, ledger, gate_b)
    with daemon.client() as client:
        assert client.runs_show(second).status == "pending"
        assert client.runs_show(first).status == "running"
    gate_a.touch()
    assert daemon.wait_for_status(second, {"succeeded", "failed"})["status"] == "succeeded"
    assert _marks(ledger) == [f"{first} start", f"{first} end", f"{second} start", f"{second} end"]


def test_status_reports_active_and_queued_runs(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`flowmason status --json` counts the executing run as active and the waiting one as queued."""
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    first = _start(daemon, ledger, gate)
    wait_until(lambda: _marks(ledger), what="the first run's stage to start")
    second = _start(daemon, ledger, gate)
    status = daemon.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["active_runs"], counts["queued_runs"], counts["max_concurrent_runs"]) == (1, 1, 1)
    text = daemon.cli("status")
    assert "1 active, 1 queued (limit 1)" in text.stdout
    gate.touch()
    for run_id in (first, second):
        assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"


def test_cancelling_a_queued_run_ends_it_at_once(daemon: DaemonProcess, tmp_path: Path) -> None:
    """A queued run cancelled while the slot is taken becomes `cancelled` without waiting for the slot, never running."""
    ledger, gate_a, gate_b = tmp_path / "ledger.txt", tmp_path / "a", tmp_path / "b"
    gate_b.touch()
    first = _start(daemon, ledger, gate_a)
    wait_until(lambda: _marks(ledger), what="the first run's stage to start")
    second = _start(daemon, ledger, gate_b)
    cancelled = daemon.cli("cancel", second)
    assert cancelled.returncode == 0, cancelled.stderr
    info = daemon.wait_for_status(second, {"cancelled", "succeeded", "failed"})
    assert info["status"] == "cancelled"
    with daemon.client() as client:
        assert client.runs_show(first).status == "running"  # the slot is still taken: nothing freed it
    gate_a.touch()
    assert daemon.wait_for_status(first, {"succeeded", "failed"})["status"] == "succeeded"
    assert _marks(ledger) == [f"{first} start", f"{first} end"]
