"""Cancellation mid-wave: processes really die, unstarted stages never start, finished ones are kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.interfaces import RunStatus
from flowmasond.testing import EventRecorder, read_ledger
from flowmasond.components.operators.shell import process_alive

# How long a test waits for something that should happen at once (processes to appear or vanish).
DEADLINE_S = 5.0


_alive = process_alive  # one /proc reading, shared with the shell operator


async def _read_pid(path: Path) -> int:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text.endswith("!"):  # written completely
            return int(text[:-1])
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was never written")


async def _gone(pids: list[int]) -> list[int]:
    """Poll until none of ``pids`` is alive (or the deadline passes); return the survivors."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return []
        await asyncio.sleep(0.02)
    return [p for p in pids if _alive(p)]


def _shell_stage(tmp_path: Path, stage_id: str = "sh") -> dict:
    """A shell stage that writes its own pid and a backgrounded grandchild's pid, then waits forever."""
    pid_file, child_file = tmp_path / f"{stage_id}.pid", tmp_path / f"{stage_id}.child"
    script = (f"echo \"$$!\" > {pid_file}; sleep 300 & echo \"$!!\" > {child_file}; wait")
    return {"id": stage_id, "component": "shell", "config": {"command": script, "kill_grace_s": 2}}


async def test_cancel_mid_wave_kills_the_shell_and_its_grandchild(run, tmp_path: Path) -> None:
    """Cancelling a run kills a running shell stage's process and the process it backgrounded."""
    token = CancellationToken()
    task = asyncio.create_task(run({"stages": [_shell_stage(tmp_path)]}, cancellation=token))
    pid = await _read_pid(tmp_path / "sh.pid")
    child = await _read_pid(tmp_path / "sh.child")
    assert _alive(pid) and _alive(child)

    token.cancel("test", grace_s=0.05)
    outcome = await asyncio.wait_for(task, DEADLINE_S)

    assert outcome.status is RunStatus.CANCELLED
    assert outcome.error["code"] == "run_cancelled"
    assert "sh" not in outcome.results
    assert await _gone([pid, child]) == []


async def test_stages_not_started_at_cancel_never_start(run, tmp_path: Path, ledger: str,
                                                        recorder: EventRecorder) -> None:
    """After cancellation, neither dependents of the running stage nor later stages ever start."""
    token = CancellationToken()
    stages = [
        _shell_stage(tmp_path),
        {"id": "after", "component": "record", "depends_on": ["sh"], "config": {"ledger": ledger}},
        {"id": "later", "component": "record", "depends_on": ["after"], "config": {"ledger": ledger}},
    ]
    task = asyncio.create_task(run({"stages": stages}, cancellation=token))
    await _read_pid(tmp_path / "sh.child")
    token.cancel("test", grace_s=0.05)
    outcome = await asyncio.wait_for(task, DEADLINE_S)

    assert outcome.status is RunStatus.CANCELLED
    assert read_ledger(ledger) == []
    assert recorder.paths("start") == ["sh"]
    assert set(outcome.results) == set()


async def test_stage_finishing_within_the_grace_is_committed(run, tmp_path: Path, ledger: str,
                                                             recorder: EventRecorder) -> None:
    """A stage of the cancelled wave that finishes within the grace period is committed; the rest is not."""
    token = CancellationToken()
    store = MemoryRunStore()
    stages = [
        _shell_stage(tmp_path),
        {"id": "quick", "component": "sleep", "config": {"seconds": 0.1}},
        {"id": "after_quick", "component": "record", "depends_on": ["quick"], "config": {"ledger": ledger}},
    ]
    task = asyncio.create_task(run({"stages": stages}, cancellation=token, store=store))
    pid = await _read_pid(tmp_path / "sh.pid")
    child = await _read_pid(tmp_path / "sh.child")
    token.cancel("test", grace_s=0.5)
    outcome = await asyncio.wait_for(task, DEADLINE_S)

    assert outcome.status is RunStatus.CANCELLED
    assert outcome.results["quick"].ok
    assert store.snapshot.results["quick"].ok
    assert "sh" not in store.snapshot.results
    assert read_ledger(ledger) == []
    assert "after_quick" not in recorder.paths("start")
    assert await _gone([pid, child]) == []


async def test_cancel_during_a_retry_backoff_ends_the_run_cancelled(run, recorder: EventRecorder) -> None:
    """Cancelling while a stage waits out its retry backoff returns a CANCELLED outcome at once."""
    token = CancellationToken()
    stage = {"id": "f", "component": "fail", "retry_config": {"max_retries": 3, "initial_delay_ms": 60_000}}
    task = asyncio.create_task(run({"stages": [stage]}, cancellation=token))
    await recorder.wait_for("retry", "f", timeout=DEADLINE_S)
    token.cancel("test", grace_s=0.5)
    outcome = await asyncio.wait_for(task, DEADLINE_S)

    assert outcome.status is RunStatus.CANCELLED
    assert "f" not in outcome.results
    assert recorder.attempts("f") == [1]
