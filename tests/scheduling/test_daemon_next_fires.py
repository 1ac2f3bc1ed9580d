"""`flowmason schedules --next N ID` on a real daemon: the next N fires with their UTC offsets."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest

from cron_reference import Expr, Reference
from daemon_support import DaemonProcess
from scheduling_support import make_daemon, pipeline, schedule_info, write_file


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon with a New York 02:30 schedule and a Santiago midnight one (both meet skipped times)."""
    made = make_daemon(tmp_path_factory.mktemp("next"), {"shutdown_grace_s": 0.5})
    write_file(made, pipeline("nightly", {"id": "ny", "cron": "30 2 * * *", "timezone": "America/New_York"},
                              {"id": "scl", "cron": "0 0 * * *", "timezone": "America/Santiago"}))
    made.start()
    yield made
    made.stop()


def test_next_lists_the_fires_the_reference_expects(daemon: DaemonProcess) -> None:
    """--next 400 --json: the first is the shown next fire, and all 400 equal the brute-force reference."""
    result = daemon.cli("schedules", "--next", "400", "nightly/ny", "--json")
    assert result.returncode == 0, result.stderr
    fires = json.loads(result.stdout)["fires"]
    with daemon.client() as client:
        shown = schedule_info(client, "nightly/ny")
    assert shown is not None and fires[0]["time"] == shown["next_fire"]
    expected = Reference(Expr.numeric("30 2 * * *"), "America/New_York").fires(fires[0]["time"] - 1, 400)
    assert [f["time"] for f in fires] == expected


def test_each_fire_carries_its_wall_time_and_utc_offset(daemon: DaemonProcess) -> None:
    """Each listed fire's local time reads back to its instant, and its offset is the zone's at that instant."""
    fires = json.loads(daemon.cli("schedules", "--next", "400", "nightly/ny", "--json").stdout)["fires"]
    zone = ZoneInfo("America/New_York")
    offsets = set()
    for fire in fires:
        local = datetime.fromisoformat(fire["local"])
        assert local.timestamp() == fire["time"] and fire["local"].endswith(fire["utc_offset"])
        assert local.utcoffset() == datetime.fromtimestamp(fire["time"], zone).utcoffset()
        offsets.add(fire["utc_offset"])
    assert offsets == {"-04:00", "-05:00"}
    # The spring-forward day's 02:30 does not exist: that day fires at the change, 03:00 EDT.
    assert any(f["local"].endswith("T03:00:00-04:00") for f in fires)


def test_text_output_shows_offset_and_utc(daemon: DaemonProcess) -> None:
    """Without --json each fire is a line with the local time, its UTC offset and the UTC time."""
    result = daemon.cli("schedules", "--next", "3", "scl")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("nightly/scl  0 0 * * *  America/Santiago")
    assert len(lines) == 4 and all("(UTC-0" in line and " UTC)" in line for line in lines[1:])


def test_next_without_a_schedule_is_a_usage_error(daemon: DaemonProcess) -> None:
    """--next without an ID exits 2 and says both are needed."""
    result = daemon.cli("schedules", "--next", "5")
    assert result.returncode == 2 and "--next N and a schedule ID" in result.stderr


def test_next_of_an_unknown_schedule_names_it(daemon: DaemonProcess) -> None:
    """An unknown ID exits 1 with a message naming it."""
    result = daemon.cli("schedules", "--next", "5", "nope")
    assert result.returncode == 1 and "no schedule 'nope'" in result.stderr
