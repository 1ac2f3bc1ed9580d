"""SIGTERM/SIGINT: in-flight stages get the grace, the rest is interrupted, exit 0; a second signal stops at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from daemon_acceptance_support import GATED, WAIT_FOR_GATE, journal_run, ran, shell_stage, wait_until
from daemon_support import DaemonProcess
from flowmason_client.errors import RemoteError

# Two stages in flight together, each held by its own gate file.
PAIR = {
    "id": "pair",
    "stages": [
        shell_stage("quick", WAIT_FOR_GATE, gate="quick_gate"),
        shell_stage("slow", WAIT_FOR_GATE, gate="slow_gate"),
        shell_stage("join", "true", depends_on=["quick", "slow"]),
    ],
}
# Waiting for these would be visible: far beyond every timeout the tests allow for a stop.
LONG_GRACE_S = 60.0


def _stopping(daemon: DaemonProcess) -> bool:
    return any(e.get("event") == "daemon_stopping" for e in daemon.log_events())


def test_sigterm_interrupts_the_run_and_the_next_start_resumes_it(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """SIGTERM with a stage outlasting the grace: exit 0, run `interrupted`, resumed and succeeded after restart."""
    write_pipeline(GATED)
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    daemon = daemon_factory(config={"shutdown_grace_s": 0.5, "cancel_grace_s": 0.2}).start()
    with daemon.client() as client:
        run_id = client.runs_start("gated", {"ledger": str(ledger), "gate": str(gate)}).run_id
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")

    # The gated stage never ends by itself: a stop that waited for it would hit this timeout.
    assert daemon.stop(timeout=10) == 0
    wal = daemon.state_dir / "journal.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed into the database file on the way out
    row = journal_run(daemon.state_dir, run_id)
    assert row["status"] == "interrupted"
    assert row["results"] == {"one": "success", "two": "success"}

    gate.touch()
    daemon.restart()
    info = daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled"})
    assert info["status"] == "succeeded", info
    assert info["recovery_attempts"] == 0  # a clean stop is not a crash: it does not count against the bound
    assert (ran(ledger, "one"), ran(ledger, "two"), ran(ledger, "wait"), ran(ledger, "last")) == ([1], [1], [1, 2], [1])


def test_stage_finishing_within_the_grace_is_committed_and_not_rerun(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """A stage that ends during the shutdown grace is committed; only the one still running at its end runs again."""
    write_pipeline(PAIR)
    ledger = tmp_path / "ledger.txt"
    quick_gate, slow_gate = tmp_path / "quick", tmp_path / "slow"
    daemon = daemon_factory(config={"shutdown_grace_s": 2.0, "cancel_grace_s": 0.2}).start()
    with daemon.client() as client:
        run_id = client.runs_start("pair", {"ledger": str(ledger), "quick_gate": str(quick_gate),
                                            "slow_gate": str(slow_gate)}).run_id
    wait_until(lambda: ran(ledger, "quick") and ran(ledger, "slow"), what="both stages to start")

    daemon.signal(signal.SIGTERM)
    wait_until(lambda: _stopping(daemon), what="the daemon to begin its graceful stop")
    quick_gate.touch()  # `quick` ends inside the grace; `slow` is still waiting when it runs out
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=15) == 0
    row = journal_run(daemon.state_dir, run_id)
    assert (row["status"], row["results"]) == ("interrupted", {"quick": "success"})

    slow_gate.touch()
    daemon.restart()
    assert daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled"})["status"] == "succeeded"
    assert (ran(ledger, "quick"), ran(ledger, "slow"), ran(ledger, "join")) == ([1], [1, 2], [1])


def test_second_signal_during_the_grace_stops_at_once(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """A SIGINT during a long shutdown grace ends the daemon at once, exit 0, keeping every committed stage."""
    write_pipeline(GATED)
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    daemon = daemon_factory(config={"shutdown_grace_s": LONG_GRACE_S, "cancel_grace_s": LONG_GRACE_S}).start()
    with daemon.client() as client:
        run_id = client.runs_start("gated", {"ledger": str(ledger), "gate": str(gate)}).run_id
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")

    daemon.signal(signal.SIGTERM)
    wait_until(lambda: _stopping(daemon), what="the daemon to begin its graceful stop")
    daemon.signal(signal.SIGINT)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=10) == 0
    row = journal_run(daemon.state_dir, run_id)
    assert row["status"] == "interrupted"
    assert row["results"] == {"one": "success", "two": "success"}


def test_follower_gets_the_interrupted_status_when_the_daemon_stops(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """`run --follow` of a run stopped by SIGTERM ends with the run `interrupted` and exit 3, not "unreachable"."""
    write_pipeline(GATED)
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    daemon = daemon_factory(config={"shutdown_grace_s": 0.3, "cancel_grace_s": 0.2}).start()
    follower = subprocess.Popen(
        [sys.executable, "-m", "flowmason_client.cli", "--socket", str(daemon.socket), "run", "gated", "--follow",
         "--json", "-i", f"ledger={ledger}", "-i", f"gate={gate}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env)
    try:
        wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")
        assert daemon.stop(timeout=10) == 0
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 3, out + err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "interrupted"


def test_daemon_refuses_new_runs_during_the_grace(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """While stopping, the daemon still answers: `health` says stopping and `runs.start` is -32009 shutting_down."""
    write_pipeline(GATED)
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    daemon = daemon_factory(config={"shutdown_grace_s": LONG_GRACE_S}).start()
    inputs = {"ledger": str(ledger), "gate": str(gate)}
    with daemon.client() as client:
        client.runs_start("gated", inputs)
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: _stopping(daemon), what="the daemon to begin its graceful stop")
    with daemon.client() as client:
        assert client.health().status == "stopping"
        with pytest.raises(RemoteError) as refused:
            client.runs_start("gated", inputs)
        assert (refused.value.code, refused.value.error_code) == (-32009, "shutting_down")
        assert len(client.runs_list().runs) == 1
    gate.touch()  # the run in flight finishes within the grace, and then the daemon exits
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=15) == 0
