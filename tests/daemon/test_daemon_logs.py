"""The daemon's log when it is not on a TTY: JSON lines, with the run id (and stage path) bound to them."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from daemon_support import DaemonProcess

CHATTY = {
    "id": "chatty",
    "stages": [
        {"id": "hello", "component_type": "logger", "config": {"message": "hello from the top"}},
        {"id": "each", "component_type": "foreach", "depends_on": ["hello"],
         "config": {"items": [10, 20], "loop_stages": ["shout"]}},
        {"id": "shout", "component_type": "logger", "config": {"message": "item {{context.item}}"}},
    ],
}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A daemon whose output goes to a file (not a TTY), log format left on `auto`."""
    return module_daemon_factory(pipelines=[CHATTY])


@pytest.fixture(scope="module")
def run_id(daemon: DaemonProcess) -> str:
    """One finished run of `chatty`."""
    with daemon.client() as client:
        run_id = client.runs_start("chatty").run_id
    assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    return run_id


def test_every_log_line_is_a_json_object(daemon: DaemonProcess, run_id: str) -> None:
    """Every line the daemon wrote is one JSON object with an event, a level and a timestamp."""
    lines = [line for line in daemon.log().splitlines() if line.strip()]
    assert len(lines) > 5
    for line in lines:
        entry: dict[str, Any] = json.loads(line)
        assert {"event", "level", "timestamp"} <= entry.keys(), entry


def test_lines_about_a_run_carry_its_run_id(daemon: DaemonProcess, run_id: str) -> None:
    """The run's lifecycle lines carry its run_id, and no line mentions the run without binding run_id."""
    mine = [e for e in daemon.log_events() if e.get("run_id") == run_id]
    assert {"run_created", "run_finished"} <= {e["event"] for e in mine}
    # A run created with a slot free is running from its creation, and its creation line says so.
    assert [e["status"] for e in mine if e["event"] == "run_created"] == ["running"]
    loose = [e for e in daemon.log_events() if run_id in json.dumps(e) and e.get("run_id") != run_id]
    assert loose == []


def test_stage_lines_carry_the_stage_path(daemon: DaemonProcess, run_id: str) -> None:
    """A component's log line carries the run id and its stage path, foreach iterations included."""
    stage_lines = {e["event"]: e for e in daemon.log_events() if e.get("run_id") == run_id and "stage_path" in e}
    assert stage_lines["hello from the top"]["stage_path"] == "hello"
    assert {stage_lines["item 10"]["stage_path"], stage_lines["item 20"]["stage_path"]} == {
        "each/0/shout", "each/1/shout"}
    assert stage_lines["item 10"]["stage_id"] == "shout"
