"""A real flowmasond firing every-second schedules: runs carry their schedule, overlap policies hold.

One daemon runs five pipelines for the whole module: ``tick`` (a 6-field every-second schedule of a
quick pipeline) and one per overlap policy, whose runs hold for HOLD_S, three fire periods.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from daemon_support import DaemonProcess
from scheduling_support import make_daemon, pipeline, recorded_fires, schedule_runs, wait_until, write_file

HOLD_S = 3.0
EVERY_SECOND = "* * * * * *"
POLICIES = ("skip", "queue", "allow", "cancel_previous")


@pytest.fixture(scope="module")
def firing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The module's daemon, already firing."""
    daemon = make_daemon(tmp_path_factory.mktemp("firing"), {"shutdown_grace_s": 0.5})
    write_file(daemon, pipeline("tick", {"id": "every", "cron": EVERY_SECOND, "overlap": "allow"}))
    write_file(daemon, pipeline("yearly", {"id": "newyear", "cron": "0 0 1 1 *", "inputs": {"why": "manual"}}))
    for policy in POLICIES:
        write_file(daemon, pipeline(f"ov_{policy}", {"id": "s", "cron": EVERY_SECOND, "overlap": policy},
                                    hold_s=HOLD_S))
    daemon.start()
    yield daemon
    daemon.stop()


def _runs_after(daemon: DaemonProcess, pipeline_id: str, count: int, *, finished: int = 0) -> list[dict[str, Any]]:
    """Wait until the pipeline has ``count`` runs, ``finished`` of them finished; returns them."""
    terminal = {"succeeded", "failed", "cancelled", "interrupted"}

    def enough() -> list[dict[str, Any]] | None:
        with daemon.client() as client:
            runs = schedule_runs(client, pipeline_id)
        done = [r for r in runs if r["status"] in terminal]
        return runs if len(runs) >= count and len(done) >= finished else None

    return wait_until(enough, timeout=25.0, what=f"{count} runs of {pipeline_id}", daemon=daemon)


def _no_overlap(runs: list[dict[str, Any]]) -> bool:
    """Each run started only after the one before it finished."""
    ran = [r for r in runs if r["started_at"] is not None]
    return all(b["started_at"] >= a["finished_at"] for a, b in zip(ran, ran[1:]))


def test_every_second_schedule_runs_carry_schedule_and_fire_time(firing: DaemonProcess) -> None:
    """`flowmason runs --json` lists the fired runs with schedule_id and whole-second, distinct fire times."""
    _runs_after(firing, "tick", 3, finished=3)
    result = firing.cli("runs", "--pipeline", "tick", "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert {r["schedule_id"] for r in runs} == {"every"}
    fire_times = [r["fire_time"] for r in runs]
    assert len(set(fire_times)) == len(fire_times) and all(t == int(t) for t in fire_times)


def test_show_names_the_schedule_and_fire_time(firing: DaemonProcess) -> None:
    """`flowmason show RUN` prints the schedule and fire time; `--json` has them as fields."""
    run = _runs_after(firing, "tick", 1, finished=1)[0]
    shown = json.loads(firing.cli("show", run["run_id"], "--json").stdout)
    assert (shown["schedule_id"], shown["fire_time"]) == ("every", run["fire_time"])
    assert "schedule  every fired at" in firing.cli("show", run["run_id"]).stdout


def test_schedules_command_lists_next_and_last_fire(firing: DaemonProcess) -> None:
    """`flowmason schedules --json` shows each schedule's cron, zone, next and last fire, and last run."""
    _runs_after(firing, "tick", 1, finished=1)
    rows = {r["name"]: r for r in json.loads(firing.cli("schedules", "--json").stdout)}
    tick = rows["tick/every"]
    assert (tick["cron"], tick["timezone"], tick["paused"]) == (EVERY_SECOND, "UTC", False)
    assert tick["next_fire"] > tick["last_fire"] and tick["last_run_id"]
    text = firing.cli("schedules").stdout
    assert "tick/every" in text and "NEXT FIRE" in text


def test_overlap_skip_records_fires_without_starting_runs(firing: DaemonProcess) -> None:
    """overlap=skip: runs never overlap and the fires during a run are recorded with no run."""
    runs = _runs_after(firing, "ov_skip", 2, finished=1)
    assert _no_overlap(runs)
    fires = recorded_fires(firing, "ov_skip")
    first_run_fire = runs[0]["fire_time"]
    assert any(run_id is None and t > first_run_fire for t, run_id in fires)


def test_overlap_queue_runs_one_after_another_with_one_waiting(firing: DaemonProcess) -> None:
    """overlap=queue: the next run waits for the previous; fires beyond one waiting run are skipped."""
    runs = _runs_after(firing, "ov_queue", 3, finished=2)
    assert _no_overlap(runs)
    assert all(r["status"] == "succeeded" for r in runs[:2])
    assert any(run_id is None for _, run_id in recorded_fires(firing, "ov_queue"))


def test_overlap_allow_runs_overlap(firing: DaemonProcess) -> None:
    """overlap=allow: a run starts while the previous one is still running."""
    runs = _runs_after(firing, "ov_allow", 2, finished=1)
    first, second = runs[0], runs[1]
    assert second["started_at"] < first["finished_at"]


def test_overlap_cancel_previous_cancels_the_running_one(firing: DaemonProcess) -> None:
    """overlap=cancel_previous: each run is cancelled by the next fire, which starts after it stopped."""
    runs = _runs_after(firing, "ov_cancel_previous", 3, finished=2)
    assert [r["status"] for r in runs[:2]] == ["cancelled", "cancelled"]
    assert _no_overlap(runs)


def test_trigger_fires_now_with_the_schedule_inputs(firing: DaemonProcess) -> None:
    """`flowmason schedule trigger` starts a run now, recorded as a fire of that schedule."""
    before = time.time()
    result = firing.cli("schedule", "trigger", "newyear", "--json")
    assert result.returncode == 0, result.stderr
    fired = json.loads(result.stdout)
    assert fired["action"] == "started" and before <= fired["fire_time"] <= time.time()
    run = firing.wait_for_status(fired["run_id"], {"succeeded"})
    assert (run["schedule_id"], run["fire_time"], run["inputs"]) == ("newyear", fired["fire_time"], {"why": "manual"})
    assert recorded_fires(firing, "yearly") == [(fired["fire_time"], fired["run_id"])]


def test_unknown_schedule_is_an_error_naming_it(firing: DaemonProcess) -> None:
    """`flowmason schedule pause nope` exits 1 with a message naming the schedule."""
    result = firing.cli("schedule", "pause", "nope")
    assert result.returncode == 1 and "no schedule 'nope'" in result.stderr
