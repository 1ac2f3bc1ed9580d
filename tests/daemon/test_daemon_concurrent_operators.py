"""Concurrent operators against one run, through the real daemon and socket: every side effect once.

Each round starts a run whose stages append to a ledger, then throws at it what several operators
(and systemd) can do at the same moment: racing cancels and resumes, racing resumes, a second
daemon on the same state directory, a SIGKILL followed by startup recovery with resumes sent while
it runs and right after it. Only the gated stage, which is in flight at every cancel and kill, may
run more than once (at most once more per cancel or kill); every other stage runs exactly once.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from collections.abc import Callable
from typing import Any

from daemon_acceptance_support import WAIT_FOR_GATE, race, ran, read_ledger, shell_stage, wait_until
from daemon_support import DaemonProcess
from flowmason_client.protocol import ErrorCode

ROUNDS = 3

# a -> b -> (c1 | c2) -> wait (blocks on the run's gate file) -> d
OPS: dict[str, Any] = {
    "id": "ops",
    "stages": [
        shell_stage("a", "true"),
        shell_stage("b", "true", depends_on=["a"]),
        shell_stage("c1", "true", depends_on=["b"]),
        shell_stage("c2", "true", depends_on=["b"]),
        shell_stage("wait", WAIT_FOR_GATE, depends_on=["c1", "c2"], gate="gate"),
        shell_stage("d", "true", depends_on=["wait"]),
    ],
}
ONCE = ("a", "b", "c1", "c2", "d")


def _codes(replies: list[dict[str, Any]]) -> Counter[Any]:
    """How many replies succeeded ("ok") and how many failed, by JSON-RPC error code."""
    return Counter("ok" if "result" in r else r["error"]["code"] for r in replies)


def _wait_runs_again(ledger: Path, times: int) -> None:
    wait_until(lambda: len(ran(ledger, "wait")) >= times, what=f"the gated stage to start (#{times})")


def test_racing_operators_recovery_and_a_second_daemon_repeat_no_committed_stage(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], tmp_path: Path) -> None:
    """Racing cancel/resume, racing resumes, a second daemon, kill + recovery: each stage's side effect happens once."""
    write_pipeline(OPS)
    config = {"cancel_grace_s": 0.2}
    daemon = daemon_factory(config=config).start()
    for round_no in range(ROUNDS):
        rng = random.Random(round_no)
        ledger, gate = tmp_path / f"ledger{round_no}.txt", tmp_path / f"gate{round_no}"
        with daemon.client() as client:
            run_id = client.call("runs.start", {"pipeline_id": "ops",
                                                "inputs": {"ledger": str(ledger), "gate": str(gate)}})["run_id"]
        _wait_runs_again(ledger, 1)

        # Two cancels and a resume of the running run at once: one cancel wins, the rest conflict.
        calls = [("runs.cancel", {"run_id": run_id})] * 2 + [("runs.resume", {"run_id": run_id})]
        rng.shuffle(calls)
        assert _codes(race(daemon.socket, calls)) == {"ok": 1, ErrorCode.RUN_CONFLICT: 2}
        daemon.wait_for_status(run_id, {"cancelled"})

        # Three resumes at once: one wins, two conflict.
        assert _codes(race(daemon.socket, [("runs.resume", {"run_id": run_id})] * 3)) == {
            "ok": 1, ErrorCode.RUN_CONFLICT: 2}
        _wait_runs_again(ledger, 2)

        # A second daemon on the same state directory is refused and touches nothing.
        second = subprocess.run(
            [sys.executable, "-m", "flowmasond.cli", "--state-dir", str(daemon.state_dir), "--socket",
             str(tmp_path / "second.sock"), "--pipelines", str(daemon.pipelines)],
            capture_output=True, text=True, timeout=60, env=daemon.env)
        assert second.returncode == 75, second.stderr

        # Kill the owner mid-stage; restart it with recovery held, and race operators around it.
        daemon.kill()
        assert daemon.proc is not None and daemon.proc.returncode == -9
        hold = tmp_path / f"hold{round_no}"
        daemon.start(wait=False, env={"FLOWMASON_TEST_HOLD_RECOVERY": str(hold)})
        wait_until(lambda: daemon.socket.exists() and _status(daemon) == "starting", what="health to say starting")
        assert _codes(race(daemon.socket, [("runs.resume", {"run_id": run_id}),
                                           ("runs.cancel", {"run_id": run_id})])) == {ErrorCode.STARTING: 2}
        hold.touch()
        daemon.wait_ready()
        # Recovery resumed the run; resumes sent now find it executing.
        assert _codes(race(daemon.socket, [("runs.resume", {"run_id": run_id})] * 2)) == {ErrorCode.RUN_CONFLICT: 2}

        gate.touch()
        info = daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})
        assert info["status"] == "succeeded", info
        assert info["resumed_count"] == 2  # the one winning resume and the recovery
        ran_paths = Counter(line.split()[0] for line in read_ledger(ledger))
        assert {p: ran_paths[p] for p in ONCE} == {p: 1 for p in ONCE}, read_ledger(ledger)
        # In flight at the cancel and at the kill: once more for each, never more.
        assert ran_paths["wait"] == 3, read_ledger(ledger)


def _status(daemon: DaemonProcess) -> str | None:
    try:
        [reply] = race(daemon.socket, [("health", {})], timeout=5)
    except (OSError, ValueError):
        return None
    return reply.get("result", {}).get("status")
