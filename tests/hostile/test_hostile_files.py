"""Deeply nested and oversized pipeline files: reported, never fatal, at start and when dropped in."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import PipelineValidationError
from flowmasond.pipelines.loader import load_pipeline_dict

GOOD = {"id": "good", "stages": [{"id": "say", "component_type": "logger", "config": {"message": "hi"}}]}
# Small limits keep the oversized file small; the defaults are exercised by the validate test below.
LIMITS = {"max_pipeline_file_bytes": 64 * 1024, "max_json_depth": 32}


def nested_text(depth: int = 1000) -> str:
    """A ~2 KB pipeline whose one config value is ``depth`` arrays deep."""
    return ('{"stages": [{"id": "a", "component_type": "logger", "config": {"message": '
            + "[" * depth + "]" * depth + "}}]}")


def oversized_text(size: int) -> str:
    """A valid pipeline padded past ``size`` bytes with a long description."""
    return json.dumps({"description": "x" * size, **{k: v for k, v in GOOD.items() if k != "id"}})


def pipelines_by_file(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    done = daemon.cli("pipelines", "--json")
    assert done.returncode == 0, done.stderr
    return {Path(p["path"]).name: p for p in json.loads(done.stdout)}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def issue_messages(entry: dict[str, Any]) -> str:
    return " ".join(i["message"] for i in entry["error"]["issues"])


def test_bad_files_present_at_start_are_reported_and_the_daemon_starts(
        daemon_factory: Callable[..., DaemonProcess], pipelines_dir: Path) -> None:
    """A 1,000-deep file and an oversized one in the folder: the daemon starts, lists both with the
    limit they break, logs them, and runs the good pipeline."""
    (pipelines_dir / "deep.pipeline.json").write_text(nested_text())
    (pipelines_dir / "huge.pipeline.json").write_text(oversized_text(200 * 1024))
    (pipelines_dir / "good.pipeline.json").write_text(json.dumps(GOOD))
    daemon = daemon_factory(config={"limits": LIMITS}).start()

    listed = pipelines_by_file(daemon)
    assert listed["good.pipeline.json"]["valid"] is True
    assert "max_json_depth = 32" in issue_messages(listed["deep.pipeline.json"])
    assert "nested 1004 levels deep" in issue_messages(listed["deep.pipeline.json"])
    assert "max_pipeline_file_bytes = 65536" in issue_messages(listed["huge.pipeline.json"])
    logged = {e.get("file", "").rsplit("/", 1)[-1] for e in daemon.log_events() if e.get("event") == "pipeline_invalid"}
    assert {"deep.pipeline.json", "huge.pipeline.json"} <= logged
    with daemon.client() as client:
        run_id = client.runs_start("good").run_id
    assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"


def test_bad_files_dropped_into_a_running_daemon_are_reported(
        daemon_factory: Callable[..., DaemonProcess], pipelines_dir: Path) -> None:
    """Files dropped in (and a good file replaced by a deep one) are reported by hot reload and by
    SIGHUP; the last good version stays in force and the daemon keeps answering."""
    (pipelines_dir / "good.pipeline.json").write_text(json.dumps(GOOD))
    daemon = daemon_factory(config={"limits": LIMITS}).start()
    (pipelines_dir / "deep.pipeline.json").write_text(nested_text())
    (pipelines_dir / "huge.pipeline.json").write_text(oversized_text(200 * 1024))
    (pipelines_dir / "good.pipeline.json").write_text(nested_text(5000))

    def reported() -> dict[str, dict[str, Any]] | None:
        listed = pipelines_by_file(daemon)
        names = ("deep.pipeline.json", "huge.pipeline.json", "good.pipeline.json")
        return listed if all(n in listed and not listed[n]["valid"] for n in names) else None

    listed = wait_for(reported, "hot reload to report the bad files")
    assert "max_json_depth" in issue_messages(listed["deep.pipeline.json"])
    assert "max_pipeline_file_bytes" in issue_messages(listed["huge.pipeline.json"])
    assert "max_json_depth" in issue_messages(listed["good.pipeline.json"])
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "signal_received" and e.get("signal") == "SIGHUP"
                         for e in daemon.log_events()), "the SIGHUP to be handled")
    with daemon.client() as client:
        assert client.health().status == "ok"
        run_id = client.runs_start("good").run_id  # the last good version is still in force
    assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_validate_reports_a_deep_file_without_crashing(tmp_path: Path) -> None:
    """`flowmason validate` on the 2 KB, 1,000-deep file prints the depth limit and exits 1, no traceback."""
    path = tmp_path / "deep.pipeline.json"
    path.write_text(nested_text())
    assert len(path.read_bytes()) < 2200
    done = subprocess.run([sys.executable, "-m", "flowmason_client.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "max_json_depth = 64" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_inline_definitions_are_depth_checked() -> None:
    """load_pipeline_dict (the socket's inline validate, embedders) refuses a 5,000-deep dict with the
    limit, never RecursionError."""
    value: Any = "x"
    for _ in range(5000):
        value = [value]
    definition = {"id": "deep", "stages": [{"id": "a", "component_type": "logger", "config": {"message": value}}]}
    with pytest.raises(PipelineValidationError) as info:
        load_pipeline_dict(definition, ComponentRegistry.with_builtins())
    assert "max_json_depth = 64" in info.value.issues[0].message
