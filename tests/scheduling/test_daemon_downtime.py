"""A real flowmasond after downtime: catch-up by misfire policy, and pauses that survive a restart.

Downtime is simulated by recording, through the Journal API, a fire five days before the latest
due time of a daily schedule, then starting the daemon. The schedule's hour is twelve hours away
from now, so no regular fire can happen while the test runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from daemon_support import DaemonProcess
from flowmasond.journal import Journal
from scheduling_support import (make_daemon, pipeline, schedule_info, schedule_runs, wait_until,
                                write_file)

DAY = 86400.0


def _latest_daily_fire(hour: int) -> float:
    """The most recent HOUR:00 UTC at or before now."""
    now = datetime.now(timezone.utc)
    fire = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if fire > now:
        fire -= timedelta(days=1)
    return fire.timestamp()


async def _record_fires(path: Path, fires: list[tuple[str, str, float]]) -> None:
    async with await Journal.open(path) as journal:
        for pipeline_id, schedule_id, fire_time in fires:
            await journal.record_fire(pipeline_id, schedule_id, fire_time, run_id=None)


@pytest.fixture(scope="module")
def after_downtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, float]]:
    """A daemon started five days after its daily schedules last fired; yields it and the latest due time."""
    hour = (datetime.now(timezone.utc).hour + 12) % 24
    latest = _latest_daily_fire(hour)
    daemon = make_daemon(tmp_path_factory.mktemp("downtime"), {"scheduler": {"max_catchup_runs": 3}})
    for policy in ("skip", "run_once", "run_all"):
        write_file(daemon, pipeline(f"mf_{policy}", {"id": "daily", "cron": f"0 {hour} * * *", "misfire": policy}))
    asyncio.run(_record_fires(daemon.state_dir / "journal.sqlite3",
                              [(f"mf_{p}", "daily", latest - 5 * DAY) for p in ("skip", "run_once", "run_all")]))
    daemon.start()
    with daemon.client() as client:
        # The scheduler is published once its catch-up is done.
        wait_until(lambda: schedule_info(client, "mf_skip/daily"), what="the scheduler", daemon=daemon)
    yield daemon, latest
    daemon.stop()


def test_misfire_skip_runs_nothing_after_downtime(after_downtime: tuple[DaemonProcess, float]) -> None:
    """misfire=skip: no run for the missed days; the last fire is still the recorded one, the next is tomorrow's."""
    daemon, latest = after_downtime
    with daemon.client() as client:
        assert schedule_runs(client, "mf_skip") == []
        info = schedule_info(client, "mf_skip/daily")
    assert info is not None
    assert (info["last_fire"], info["next_fire"]) == (latest - 5 * DAY, latest + DAY)


def test_misfire_run_once_runs_the_latest_missed_time(after_downtime: tuple[DaemonProcess, float]) -> None:
    """misfire=run_once: exactly one run, for the latest missed day."""
    daemon, latest = after_downtime
    with daemon.client() as client:
        assert [(r["schedule_id"], r["fire_time"]) for r in schedule_runs(client, "mf_run_once")] == [("daily", latest)]


def test_misfire_run_all_runs_each_missed_time_bounded(after_downtime: tuple[DaemonProcess, float]) -> None:
    """misfire=run_all with max_catchup_runs=3: runs for the three latest of the five missed days, in order."""
    daemon, latest = after_downtime
    with daemon.client() as client:
        runs = schedule_runs(client, "mf_run_all")
    assert [r["fire_time"] for r in runs] == [latest - 2 * DAY, latest - DAY, latest]
    finished = [daemon.wait_for_status(r["run_id"], {"succeeded"}) for r in runs]
    assert [r["started_at"] for r in finished] == sorted(r["started_at"] for r in finished)


def test_pause_survives_a_restart_and_unpause_resumes(tmp_path: Path) -> None:
    """A schedule paused with the CLI stays paused across a restart while another keeps firing; unpause resumes it."""
    daemon = make_daemon(tmp_path, {"shutdown_grace_s": 0.5})
    write_file(daemon, pipeline("paused", {"id": "s", "cron": "* * * * * *", "misfire": "skip"}))
    write_file(daemon, pipeline("control", {"id": "s", "cron": "* * * * * *", "overlap": "allow"}))
    daemon.start()
    assert daemon.cli("schedule", "pause", "paused/s").returncode == 0
    daemon.stop()
    daemon.start()
    restarted = time.time()
    with daemon.client() as client:
        info = wait_until(lambda: schedule_info(client, "paused/s"), what="the scheduler", daemon=daemon)
        assert (info["paused"], info["next_fire"]) == (True, None)
        wait_until(lambda: len([r for r in schedule_runs(client, "control") if r["fire_time"] > restarted]) >= 2,
                   what="two fires of the control schedule", daemon=daemon)
        assert [r for r in schedule_runs(client, "paused") if r["fire_time"] > restarted] == []
    result = daemon.cli("schedule", "unpause", "paused/s", "--json")
    assert result.returncode == 0, result.stderr
    unpaused = json.loads(result.stdout)
    assert unpaused["paused"] is False
    with daemon.client() as client:
        wait_until(lambda: [r for r in schedule_runs(client, "paused") if r["fire_time"] > restarted],
                   what="a fire after unpause", daemon=daemon)
    daemon.stop()


def test_sighup_reloads_when_hot_reload_is_off(tmp_path: Path) -> None:
    """With hot_reload = false, an edited file takes effect on SIGHUP: its new schedule fires."""
    daemon = make_daemon(tmp_path, {"hot_reload": False, "shutdown_grace_s": 0.5})
    write_file(daemon, pipeline("hup", {"id": "s", "cron": "0 0 1 1 *"}))
    daemon.start()
    write_file(daemon, pipeline("hup", {"id": "s", "cron": "* * * * * *", "overlap": "allow"}, value="v2"))
    with daemon.client() as client:
        info = wait_until(lambda: schedule_info(client, "hup/s"), what="the scheduler", daemon=daemon)
        assert info["cron"] == "0 0 1 1 *"
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: schedule_runs(client, "hup"), what="a fire of the reloaded schedule", daemon=daemon)
    daemon.stop()
