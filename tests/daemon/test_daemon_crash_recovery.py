"""A daemon killed mid-run recovers the run on its next start, and gives up on a run that kills it every time."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from daemon_acceptance_support import GATED, journal_run, ran, read_ledger, shell_stage, wait_until
from daemon_support import DaemonProcess

# sh's parent is the daemon itself: this stage kills the daemon every time it runs.
POISON = {
    "id": "poison",
    "stages": [
        shell_stage("first", "true"),
        shell_stage("bomb", "kill -9 $PPID; sleep 2", depends_on=["first"]),
    ],
}


def test_sigkilled_daemon_completes_the_run_after_restart(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """SIGKILL while a stage runs, start again: the run finishes by itself, committed stages not repeated."""
    write_pipeline(GATED)
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    daemon = daemon_factory(config={"cancel_grace_s": 0.2}).start()
    with daemon.client() as client:
        run_id = client.runs_start("gated", {"ledger": str(ledger), "gate": str(gate)}).run_id
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")
    daemon.kill()
    assert journal_run(daemon.state_dir, run_id)["status"] == "running"

    gate.touch()
    daemon.restart()
    info = daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled"})
    assert info["status"] == "succeeded", info
    assert info["recovery_attempts"] == 1
    # `wait` was in flight at the crash: it ran again (at-least-once); the committed ones did not.
    assert (ran(ledger, "one"), ran(ledger, "two"), len(ran(ledger, "wait")), ran(ledger, "last")) == ([1], [1], 2, [1])


def test_run_that_kills_the_daemon_every_time_ends_failed_after_the_bound(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """With max_recovery_attempts = 2 a poison run kills 3 daemons, then is failed `recovery_exhausted`."""
    write_pipeline(POISON)
    ledger = tmp_path / "ledger.txt"
    daemon = daemon_factory(config={"max_recovery_attempts": 2}).start()
    with daemon.client() as client:
        run_id = client.runs_start("poison", {"ledger": str(ledger)}).run_id
    assert daemon.proc is not None
    daemon.proc.wait(timeout=20)
    deaths = 1

    def settled() -> bool:
        assert daemon.proc is not None
        return daemon.proc.poll() is not None or journal_run(daemon.state_dir, run_id)["status"] == "failed"

    for _ in range(5):
        daemon.start(wait=False)
        wait_until(settled, timeout=30, what="the daemon to die or give the run up")
        if daemon.proc.poll() is None:
            break
        deaths += 1

    assert deaths == 3
    row = journal_run(daemon.state_dir, run_id)
    assert row["status"] == "failed"
    assert row["error"]["code"] == "recovery_exhausted"
    assert row["results"] == {"first": "success"}
    assert len(ran(ledger, "bomb")) == 3, read_ledger(ledger)
    daemon.wait_ready()  # and it stays up
    with daemon.client() as client:
        assert client.runs_show(run_id).status == "failed"


def test_manual_recovery_leaves_the_run_interrupted_until_resumed(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict], Path], tmp_path: Path) -> None:
    """With `recovery = "manual"` a crashed run waits `interrupted` after restart; `flowmason resume` finishes it."""
    write_pipeline(GATED)
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    daemon = daemon_factory(config={"recovery": "manual", "cancel_grace_s": 0.2}).start()
    with daemon.client() as client:
        run_id = client.runs_start("gated", {"ledger": str(ledger), "gate": str(gate)}).run_id
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")
    daemon.kill()
    gate.touch()
    daemon.restart()
    # The socket answers while recovery is still marking crashed runs, so wait for the verdict.
    info = daemon.wait_for_status(run_id, {"interrupted", "succeeded", "failed"})
    assert (info["status"], info["error"]["code"]) == ("interrupted", "daemon_stopped")
    with daemon.client() as client:
        assert client.status().active_runs == 0
    assert len(ran(ledger, "wait")) == 1  # nothing ran again by itself

    resumed = daemon.cli("resume", run_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (ran(ledger, "one"), ran(ledger, "two"), len(ran(ledger, "wait")), ran(ledger, "last")) == ([1], [1], 2, [1])
