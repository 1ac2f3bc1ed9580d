"""The daemon's scheduler, on a manual clock, through a year of DST changes: every expected fire once.

Real journal, catalog and run manager (``Rig``); the clock jumps to the earliest next fire the
scheduler shows (sometimes a second late, as a loop that wakes late would), from 2025-07-01 to
2026-07-01 UTC, which holds both changes of Berlin, New York, Lord Howe and Santiago. Expected fires
come from the brute-force reference (tests/scheduling/cron_reference.py), not from the code.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from cron_reference import Expr, Reference
from flowmasond.scheduling.clock import ManualClock
from scheduling_support import Rig, pipeline

START = datetime(2025, 7, 1, tzinfo=timezone.utc).timestamp()
END = datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp()
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago")
# Every change in these zones is on a Sunday, local time (Santiago's repeated hour is Saturday 23:xx),
# so the weekend schedules see all of them; @daily runs every day of the year.
WEEKEND = ["0 0 * * *", "30 2 * * 6,0", "11,15 2 * * 6,0", "30 1 * * 6,0", "45 23 * * 6,0",
           "*/30 0-2 * * 0", "*/20 23 * * 6"]
EVERY_DAY = ["0 0 * * *", "30 2 * * *", "11,15 2 * * *", "30 1 * * *", "45 23 * * *", "*/30 0-3 * * *",
             "*/20 23 * * *", "0 * * * *"]


def expected_fires(cron: str, zone: str) -> list[float]:
    """The reference's fire times in (START, END]."""
    reference = Reference(Expr.numeric(cron), zone)
    fires: list[float] = []
    cursor = START
    while True:
        batch = [t for t in reference.fires(cursor, 64) if t <= END]
        fires.extend(batch)
        if len(batch) < 64:
            return fires
        cursor = batch[-1]


async def drive_a_year(tmp_path: Path, zone: str, crons: list[str]) -> None:
    rig = Rig(root=tmp_path, clock=ManualClock(START))
    schedules = [{"id": f"s{i}", "cron": cron, "timezone": zone, "overlap": "allow", "misfire": "run_all"}
                 for i, cron in enumerate(crons)]
    rig.write(pipeline("p", *schedules))
    scheduler = await rig.start()
    try:
        step = 0
        while True:
            shown = [s["next_fire"] for s in await scheduler.list_schedules() if s["next_fire"] is not None]
            if not shown or min(shown) > END:
                break
            step += 1
            rig.clock.set(min(shown) + (1 if step % 5 == 0 else 0))
            await scheduler.wait_idle()
        assert rig.parts is not None
        runs = await rig.parts.journal.list_runs(pipeline_id="p", limit=1_000_000)
        for schedule, cron in zip(schedules, crons):
            got = sorted(r.fire_time for r in runs if r.schedule_id == schedule["id"])
            want = expected_fires(cron, zone)
            missing = [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in sorted(set(want) - set(got))]
            extra = [datetime.fromtimestamp(t, timezone.utc).isoformat() for t in sorted(set(got) - set(want))]
            assert got == want, (cron, zone, f"missing {missing[:5]}", f"extra or repeated {extra[:5]}",
                                 len(got), len(want))
    finally:
        await rig.stop()


@pytest.mark.parametrize("zone", ZONES)
async def test_a_year_of_dst_changes_fires_every_expected_time_once(tmp_path: Path, zone: str) -> None:
    """Through a year in the zone, each schedule's runs are exactly the reference's fire times."""
    await drive_a_year(tmp_path, zone, WEEKEND)


@pytest.mark.slow
@pytest.mark.parametrize("zone", ZONES)
async def test_a_year_of_every_day_schedules_fires_every_expected_time_once(tmp_path: Path, zone: str) -> None:
    """The same with every schedule firing daily, and hourly (``--slow``)."""
    await drive_a_year(tmp_path, zone, EVERY_DAY)
