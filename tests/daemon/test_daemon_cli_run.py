"""`flowmason run --follow` and `flowmason show` against a real daemon: progress, result, exit status."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import pytest

from daemon_support import DaemonProcess

THREE = {
    "id": "three",
    "stages": [
        {"id": "fetch", "component_type": "shell", "config": {"command": "echo fetched"}},
        {"id": "crunch", "component_type": "shell", "depends_on": ["fetch"],
         "config": {"command": "sleep 0.2; echo '{\"total\": 42}'", "parse_json": True}},
        {"id": "report", "component_type": "json_transform", "depends_on": ["crunch"],
         "config": {"data": "{{upstream.crunch.json}}", "mapping": {"answer": "total"}}},
    ],
    "output_stage_id": "report",
}
BROKEN = {
    "id": "broken",
    "stages": [
        {"id": "fetch", "component_type": "shell", "config": {"command": "echo fetched"}},
        {"id": "explode", "component_type": "shell", "depends_on": ["fetch"],
         "config": {"command": "echo 'disk on fire' >&2; exit 3"}},
        {"id": "never", "component_type": "shell", "depends_on": ["explode"], "config": {"command": "true"}},
    ],
}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """One daemon for the module, knowing the `three` and `broken` pipelines."""
    return module_daemon_factory(pipelines=[THREE, BROKEN])


def _run_id(stdout: str) -> str:
    match = re.search(r"run (r\S+) (succeeded|failed)", stdout)
    assert match, stdout
    return match.group(1)


def test_run_follow_prints_each_stage_with_counts_and_durations(daemon: DaemonProcess) -> None:
    """`run --follow` prints one progress line per stage, in order, as `[done/total] ok <stage> <n> ms`."""
    result = daemon.cli("run", "three", "--follow")
    assert result.returncode == 0, result.stdout + result.stderr
    progress = re.findall(r"^\[(\d+)/(\d+)\] ok\s+(\S+)\s+(\d+) ms$", result.stdout, re.MULTILINE)
    assert [(done, total, stage) for done, total, stage, _ in progress] == [
        ("1", "3", "fetch"), ("2", "3", "crunch"), ("3", "3", "report")]
    # crunch sleeps 0.2 s: its reported duration is the stage's, not a placeholder.
    assert int(progress[1][3]) >= 200


def test_run_follow_ends_with_the_run_result(daemon: DaemonProcess) -> None:
    """`run --follow` ends with `run <id> succeeded` and the run's output, and exits 0."""
    result = daemon.cli("run", "three", "--follow")
    assert result.returncode == 0, result.stdout + result.stderr
    tail = result.stdout.rstrip().splitlines()
    status_line = next(i for i, line in enumerate(tail) if re.fullmatch(r"run r\S+ succeeded", line))
    assert json.loads("\n".join(tail[status_line + 1:])) == {"result": {"answer": 42}, "fields_mapped": 1,
                                                              "fields_missing": []}


def test_show_lists_every_stage_with_its_status(daemon: DaemonProcess) -> None:
    """`show RUN` lists every stage of the run with its status, and `--json` carries the same."""
    run_id = _run_id(daemon.cli("run", "broken", "--follow").stdout)
    text = daemon.cli("show", run_id)
    assert text.returncode == 0, text.stderr
    statuses = dict((path, status) for status, path in
                    re.findall(r"^  (\S+)\s+(\S+)", text.stdout, re.MULTILINE))
    assert statuses == {"fetch": "success", "explode": "failed", "never": "not_started"}
    as_json = daemon.cli("show", run_id, "--json")
    info: dict[str, Any] = json.loads(as_json.stdout)
    assert info["status"] == "failed"
    assert {s["path"]: s["status"] for s in info["stages"]} == statuses


def test_failing_pipeline_exits_1_and_shows_the_error(daemon: DaemonProcess) -> None:
    """`run --follow` of a pipeline whose stage fails exits 1 and prints the failed stage and its error."""
    result = daemon.cli("run", "broken", "--follow")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^\[\d+/3\] FAILED\s+explode\b.*disk on fire", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^run r\S+ failed$", result.stdout, re.MULTILINE)
    assert re.search(r"^error: .*explode", result.stdout, re.MULTILINE), result.stdout


def test_run_without_follow_prints_the_run_id_and_exits_0(daemon: DaemonProcess) -> None:
    """`run` without `--follow` returns at once with the new run's id, which `show` then knows."""
    result = daemon.cli("run", "three", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    assert daemon.wait_for_status(run_id, {"succeeded"})["pipeline_id"] == "three"
