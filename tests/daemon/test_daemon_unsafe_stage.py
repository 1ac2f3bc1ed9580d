"""A stage declared not safe to repeat that was in flight at a crash waits for an operator (issue 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from daemon_support import DaemonProcess


def _ledger(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_unsafe_stage_in_flight_at_a_crash_stops_the_run_until_a_forced_resume(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict[str, Any]], Any],
        tmp_path: Path) -> None:
    """After SIGKILL mid-charge the restarted daemon leaves the run interrupted naming the stage;
    `resume --force` runs it again with the next attempt number and the same idempotency key."""
    ledger = tmp_path / "charges.jsonl"
    write_pipeline({"id": "charge", "stages": [
        {"id": "charge_card", "component_type": "unsafe_record",
         "config": {"ledger": str(ledger), "value": "charged", "hold_s": 30}}]})
    daemon = daemon_factory(config={"component_modules": ["flowmasond.testing"], "shutdown_grace_s": 0.5})
    daemon.start()
    with daemon.client() as client:
        run_id = client.runs_start("charge").run_id
    deadline = time.monotonic() + 15
    while not _ledger(ledger) and time.monotonic() < deadline:
        time.sleep(0.02)
    daemon.kill()

    daemon.restart()
    info = daemon.wait_for_status(run_id, {"interrupted", "succeeded", "failed"}, timeout=15)
    deadline = time.monotonic() + 10
    while info["error"].get("code") == "daemon_stopped" and time.monotonic() < deadline:
        time.sleep(0.05)  # recovery marks it interrupted, then tries to resume it
        info = daemon.wait_for_status(run_id, {"interrupted", "succeeded", "failed"})
    assert info["status"] == "interrupted", info
    assert info["error"]["code"] == "unsafe_to_repeat"
    assert info["error"]["context"]["stage"] == "charge_card"
    assert len(_ledger(ledger)) == 1

    plain = daemon.cli("resume", run_id, "--json")  # without --force it stops again, charging nothing
    assert plain.returncode == 0, plain.stderr
    time.sleep(0.3)
    again = daemon.wait_for_status(run_id, {"interrupted"})
    assert again["error"]["code"] == "unsafe_to_repeat" and len(_ledger(ledger)) == 1

    forced = daemon.cli("resume", run_id, "--force")
    assert forced.returncode == 0, forced.stderr
    deadline = time.monotonic() + 15
    while len(_ledger(ledger)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    first, second = _ledger(ledger)
    assert second["attempt"] == first["attempt"] + 1
    assert second["key"] == first["key"] == f"{run_id}/charge_card"
