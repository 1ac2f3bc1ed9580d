"""Hot reload in a real flowmasond: edits to the watched folder take effect without a restart.

Each test uses its own pipeline id in one shared daemon. Pipelines output ``{"value": ...}`` from
their last stage, so a run's output tells which version of the file it ran.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest

from daemon_support import DaemonProcess
from scheduling_support import make_daemon, pipeline, schedule_info, schedule_runs, wait_until, write_file

EVERY_SECOND = {"id": "s", "cron": "* * * * * *", "overlap": "allow"}


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon watching its pipeline folder (hot_reload is on by default)."""
    daemon = make_daemon(tmp_path_factory.mktemp("hot"), {"shutdown_grace_s": 0.5})
    daemon.start()
    yield daemon
    daemon.stop()


def _value(run: dict[str, Any]) -> Any:
    return ((run.get("output") or {}).get("variables") or {}).get("value")


def _succeeded_with(daemon: DaemonProcess, pipeline_id: str, value: str, after: float = 0.0) -> dict[str, Any]:
    """Wait for a succeeded run fired after ``after`` whose output is ``value``."""
    def find() -> dict[str, Any] | None:
        with daemon.client() as client:
            return next((r for r in schedule_runs(client, pipeline_id)
                         if r["status"] == "succeeded" and (r["fire_time"] or 0) > after and _value(r) == value), None)
    return wait_until(find, what=f"a run of {pipeline_id} with value {value}", daemon=daemon)


def _pipeline_entry(daemon: DaemonProcess, pipeline_id: str) -> dict[str, Any] | None:
    with daemon.client() as client:
        return next((p for p in client.call("pipelines.list")["pipelines"] if p["pipeline_id"] == pipeline_id), None)


def test_new_file_is_picked_up_and_its_schedule_fires(watched: DaemonProcess) -> None:
    """A pipeline file added to the folder is loaded and its schedule fires, without a restart."""
    write_file(watched, pipeline("hr_new", EVERY_SECOND))
    _succeeded_with(watched, "hr_new", "v1")


def test_valid_change_replaces_the_pipeline_and_its_schedule(watched: DaemonProcess) -> None:
    """Rewriting a file (temp file renamed over it) makes later fires run the new version."""
    write_file(watched, pipeline("hr_valid", EVERY_SECOND))
    _succeeded_with(watched, "hr_valid", "v1")
    changed = time.time()
    write_file(watched, pipeline("hr_valid", EVERY_SECOND, value="v2"))
    _succeeded_with(watched, "hr_valid", "v2", after=changed)


def test_invalid_change_keeps_the_old_version_firing_until_the_file_is_complete(watched: DaemonProcess) -> None:
    """A half-written file is reported invalid while v1 keeps firing; completing the write loads v2."""
    path = write_file(watched, pipeline("hr_invalid", EVERY_SECOND))
    _succeeded_with(watched, "hr_invalid", "v1")
    complete = path.read_text().replace('"v1"', '"v2"')
    with open(path, "w") as fh:  # in place, as a slow writer would: first half, flushed
        fh.write(complete[: len(complete) // 2])
        fh.flush()
        broken = time.time()
        entry = wait_until(lambda: (e := _pipeline_entry(watched, "hr_invalid")) and not e["valid"] and e,
                           what="the error in `pipelines`", daemon=watched)
        assert entry["error"]["issues"] and entry["definition_hash"]
        _succeeded_with(watched, "hr_invalid", "v1", after=broken + 1)
        fh.write(complete[len(complete) // 2:])
    _succeeded_with(watched, "hr_invalid", "v2", after=time.time())
    assert any(e.get("event") == "pipeline_invalid_kept_previous" for e in watched.log_events())


def test_deleted_file_removes_the_pipeline_and_its_schedules(watched: DaemonProcess) -> None:
    """Deleting a file drops its pipeline from `pipelines` and its schedule from `schedules`."""
    path = write_file(watched, pipeline("hr_delete", EVERY_SECOND))
    _succeeded_with(watched, "hr_delete", "v1")
    path.unlink()
    with watched.client() as client:
        wait_until(lambda: schedule_info(client, "hr_delete/s") is None, what="the schedule removed", daemon=watched)
    assert _pipeline_entry(watched, "hr_delete") is None


def test_rename_away_and_rewrite_never_removes_the_pipeline(watched: DaemonProcess) -> None:
    """A save that renames the file to a backup and writes a new one replaces the pipeline without removing it."""
    path = write_file(watched, pipeline("hr_rename", EVERY_SECOND))
    _succeeded_with(watched, "hr_rename", "v1")
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    changed = time.time()
    time.sleep(0.3)  # the editor writing the new file: the watcher sees the name missing meanwhile
    write_file(watched, pipeline("hr_rename", EVERY_SECOND, value="v2"))
    backup.unlink()
    _succeeded_with(watched, "hr_rename", "v2", after=changed)
    removed = [e for e in watched.log_events() if e.get("event") == "pipeline_removed"
               and e.get("pipeline_id") == "hr_rename"]
    assert removed == []


def _gated(value: str) -> dict[str, Any]:
    """A pipeline whose run blocks until the file named by its ``gate`` input exists, then outputs ``value``."""
    return {"id": "hr_flight", "stages": [
        {"id": "wait", "component_type": "shell",
         "config": {"command": 'while [ ! -e "$GATE" ]; do sleep 0.02; done', "env": {"GATE": "{{input.gate}}"},
                    "kill_grace_s": 0.5}},
        {"id": "out", "component_type": "variable_set", "depends_on": ["wait"],
         "config": {"variables": {"value": value}}}]}


def test_run_in_flight_keeps_its_pinned_definition(watched: DaemonProcess) -> None:
    """A run going while its file is edited finishes with the old definition: v1's output and pinned hash."""
    gate = watched.state_dir.parent / "hr_flight.gate"
    write_file(watched, _gated("v1"))
    with watched.client() as client:
        old = wait_until(lambda: _pipeline_entry(watched, "hr_flight"), what="hr_flight loaded", daemon=watched)
        run = client.call("runs.start", {"pipeline_id": "hr_flight", "inputs": {"gate": str(gate)}})
        watched.wait_for_status(run["run_id"], {"running"})
        write_file(watched, _gated("v2"))
        new = wait_until(lambda: (e := _pipeline_entry(watched, "hr_flight"))
                         and e["definition_hash"] != old["definition_hash"] and e,
                         what="the edit loaded", daemon=watched)
        gate.touch()
        finished = watched.wait_for_status(run["run_id"], {"succeeded", "failed"})
    assert finished["status"] == "succeeded" and _value(finished) == "v1"
    assert finished["pipeline_hash"] == old["definition_hash"] != new["definition_hash"]
