"""Cancel a running run with `flowmason cancel`, then `flowmason resume` it to the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from daemon_acceptance_support import GATED, ran, wait_until
from daemon_support import DaemonProcess



@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """One daemon for the module, with a short cancel grace."""
    return module_daemon_factory(config={"cancel_grace_s": 0.2}, pipelines=[GATED])


def _inputs(tmp_path: Path) -> list[str]:
    return ["-i", f"ledger={tmp_path / 'ledger.txt'}", "-i", f"gate={tmp_path / 'gate'}"]


def test_cancelled_run_resumes_without_repeating_committed_stages(daemon: DaemonProcess, tmp_path: Path) -> None:
    """After cancel + resume the run succeeds; committed stages ran once, the cancelled stage ran again."""
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    started = daemon.cli("run", "gated", "--json", *_inputs(tmp_path))
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")

    cancelled = daemon.cli("cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    info = daemon.wait_for_status(run_id, {"cancelled", "failed", "succeeded"})
    assert info["status"] == "cancelled"
    assert {s["path"]: s["status"] for s in info["stages"]}["last"] == "not_started"

    gate.touch()
    resumed = daemon.cli("resume", run_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"run {run_id} succeeded" in resumed.stdout
    assert (ran(ledger, "one"), ran(ledger, "two"), ran(ledger, "wait"), ran(ledger, "last")) == ([1], [1], [1, 2], [1])


def test_follower_of_a_cancelled_run_exits_3(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`run --follow` exits 3 (cancelled or interrupted) when the run it follows is cancelled."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "flowmason_client.cli", "--socket", str(daemon.socket), "run", "gated", "--follow",
         "--json", *_inputs(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env)
    try:
        assert follower.stdout is not None
        run_id = json.loads(follower.stdout.readline())["run_id"]
        wait_until(lambda: ran(tmp_path / "ledger.txt", "wait"), what="the gated stage to start")
        with daemon.client() as client:
            client.call("runs.cancel", {"run_id": run_id})
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 3, out + err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "cancelled"


def test_cancel_of_a_finished_run_is_refused(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`flowmason cancel` of a run that already finished exits 1 and says the run is not running."""
    (tmp_path / "gate").touch()
    done = daemon.cli("run", "gated", "--follow", "--json", *_inputs(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
    refused = daemon.cli("cancel", run_id)
    assert refused.returncode == 1
    assert "succeeded, not running" in refused.stderr
