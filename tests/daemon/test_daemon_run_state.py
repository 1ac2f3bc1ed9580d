"""What the daemon reports about a run, and who may change it, through the real socket."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest

from daemon_acceptance_support import GATED, WAIT_FOR_GATE, race, ran, shell_stage, wait_until
from daemon_support import DaemonProcess
from flowmason_client.protocol import ErrorCode

# Two independent single-stage pipelines, each blocking on its own gate.
BLOCKER: dict[str, Any] = {"id": "blocker", "stages": [shell_stage("hold", WAIT_FOR_GATE, gate="gate")]}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """One daemon for the module: one stage per run at a time, two runs at a time."""
    return module_daemon_factory(config={"cancel_grace_s": 0.2, "max_concurrency": 1, "max_concurrent_runs": 4},
                                 pipelines=[GATED, BLOCKER])


def _start(daemon: DaemonProcess, pipeline_id: str, tmp_path: Path, name: str = "") -> str:
    inputs = {"ledger": str(tmp_path / f"ledger{name}.txt"), "gate": str(tmp_path / f"gate{name}")}
    with daemon.client() as client:
        return client.call("runs.start", {"pipeline_id": pipeline_id, "inputs": inputs})["run_id"]


def _cancelled_at_wait(daemon: DaemonProcess, tmp_path: Path) -> str:
    """A run of ``gated`` cancelled while its ``wait`` stage was in flight."""
    run_id = _start(daemon, "gated", tmp_path)
    wait_until(lambda: ran(tmp_path / "ledger.txt", "wait"), what="the gated stage to start")
    with daemon.client() as client:
        client.call("runs.cancel", {"run_id": run_id})
    daemon.wait_for_status(run_id, {"cancelled"})
    return run_id


def _stages(daemon: DaemonProcess, run_id: str) -> dict[str, dict[str, Any]]:
    with daemon.client() as client:
        return {s["path"]: s for s in client.call("runs.show", {"run_id": run_id})["stages"]}


def test_show_of_a_cancelled_run_lists_the_killed_stage_as_cancelled(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The stage a cancel killed is `cancelled` in `runs.show`, not `running`."""
    run_id = _cancelled_at_wait(daemon, tmp_path)

    stages = _stages(daemon, run_id)

    assert stages["wait"]["status"] == "cancelled"
    assert (stages["one"]["status"], stages["last"]["status"]) == ("success", "not_started")


def test_attempts_count_every_run_of_a_stage_across_resumes(daemon: DaemonProcess, tmp_path: Path) -> None:
    """A stage that ran once before a cancel and once after the resume has 2 attempts in show and in run_records."""
    run_id = _cancelled_at_wait(daemon, tmp_path)
    (tmp_path / "gate").touch()
    with daemon.client() as client:
        client.call("runs.resume", {"run_id": run_id})
    daemon.wait_for_status(run_id, {"succeeded"})

    stages = _stages(daemon, run_id)
    conn = sqlite3.connect(f"file:{daemon.state_dir / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        recorded = conn.execute("SELECT attempts FROM run_records WHERE run_id = ? AND path = 'wait' "
                                "AND kind = 'result'", (run_id,)).fetchall()
    finally:
        conn.close()

    assert ran(tmp_path / "ledger.txt", "wait") == [1, 2]
    assert stages["wait"]["attempts"] == 2
    assert recorded == [(2,)]
    assert stages["one"]["attempts"] == 1


def test_max_concurrency_limits_stages_per_run_not_per_daemon(daemon: DaemonProcess, tmp_path: Path) -> None:
    """With max_concurrency = 1, two runs still each have a stage in flight at the same time."""
    first = _start(daemon, "blocker", tmp_path, "a")
    second = _start(daemon, "blocker", tmp_path, "b")
    try:
        wait_until(lambda: ran(tmp_path / "ledgera.txt", "hold") and ran(tmp_path / "ledgerb.txt", "hold"),
                   timeout=15, what="both runs' stages to be in flight together")
    finally:
        (tmp_path / "gatea").touch()
        (tmp_path / "gateb").touch()
    for run_id in (first, second):
        assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"


def test_of_two_resumes_sent_together_one_wins_and_the_other_gets_run_conflict(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    """Two clients resume one run at once: one result, one -32015 run_conflict; stages ran once more at most."""
    run_id = _cancelled_at_wait(daemon, tmp_path)
    (tmp_path / "gate").touch()

    replies = race(daemon.socket, [("runs.resume", {"run_id": run_id})] * 2)

    won = [r for r in replies if "result" in r]
    lost = [r["error"] for r in replies if "error" in r]
    assert len(won) == 1 and len(lost) == 1, replies
    assert lost[0]["code"] == ErrorCode.RUN_CONFLICT and lost[0]["data"]["code"] == "run_conflict"
    daemon.wait_for_status(run_id, {"succeeded"})
    ledger = tmp_path / "ledger.txt"
    assert [ran(ledger, p) for p in ("one", "two", "wait", "last")] == [[1], [1], [1, 2], [1]]


def test_of_two_cancels_sent_together_one_wins_and_the_other_gets_run_conflict(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    """Two clients cancel one run at the same moment: one result, one -32015 run_conflict."""
    run_id = _start(daemon, "gated", tmp_path)
    wait_until(lambda: ran(tmp_path / "ledger.txt", "wait"), what="the gated stage to start")

    replies = race(daemon.socket, [("runs.cancel", {"run_id": run_id})] * 2)

    assert sorted("result" in r for r in replies) == [False, True], replies
    assert [r["error"]["code"] for r in replies if "error" in r] == [ErrorCode.RUN_CONFLICT]
    assert daemon.wait_for_status(run_id, {"cancelled", "succeeded", "failed"})["status"] == "cancelled"


def test_state_changes_are_refused_with_starting_until_recovery_is_done(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], tmp_path: Path) -> None:
    """While startup recovery is not done, health says starting and resume gets -32016 starting; after it, ok."""
    write_pipeline(GATED)
    # A run left 'running' by a daemon that died: the next start has something to recover.
    first = daemon_factory(config={"cancel_grace_s": 0.2}).start()
    run_id = _start(first, "gated", tmp_path)
    wait_until(lambda: ran(tmp_path / "ledger.txt", "wait"), what="the gated stage to start")
    first.kill()
    hold = tmp_path / "release-recovery"
    second = daemon_factory(config={"cancel_grace_s": 0.2})
    second.start(wait=False, env={"FLOWMASON_TEST_HOLD_RECOVERY": str(hold)})
    wait_until(lambda: _health(second) == "starting", what="health to say starting")

    [refused] = race(second.socket, [("runs.resume", {"run_id": run_id})])
    hold.touch()
    second.wait_ready()

    assert refused["error"]["code"] == ErrorCode.STARTING and refused["error"]["data"]["code"] == "starting"
    (tmp_path / "gate").touch()
    assert second.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    # Recovery resumed it once: the stage in flight at the kill ran again, nothing else did. (Its
    # attempt number may repeat: a safe-to-repeat stage's start is not made durable before it runs.)
    ledger = tmp_path / "ledger.txt"
    assert [len(ran(ledger, p)) for p in ("one", "two", "wait", "last")] == [1, 1, 2, 1]


def _health(daemon: DaemonProcess) -> str | None:
    try:
        [reply] = race(daemon.socket, [("health", {})], timeout=5)
    except (OSError, ValueError):
        return None
    return reply.get("result", {}).get("status")
