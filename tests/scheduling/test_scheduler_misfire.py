"""Catch-up after downtime, by misfire policy, counted from the journal's recorded fires (manual clock)."""

from __future__ import annotations

from scheduling_support import T0, Rig, pipeline

HOUR = 3600.0


async def _down_for_five_hours(rig: Rig, misfire: str) -> None:
    """An hourly schedule fired at T0, then the daemon was down until T0 + 5h 30min."""
    rig.write(pipeline("p", {"id": "h", "cron": "0 * * * *", "misfire": misfire}))
    await rig.start()
    assert rig.parts is not None
    await rig.parts.journal.record_fire("p", "h", T0, run_id=None)
    await rig.stop()
    rig.clock.set(T0 + 5 * HOUR + 1800)
    await rig.start()
    await rig.advance(0)


async def test_skip_runs_nothing_for_the_downtime(rig: Rig) -> None:
    """misfire=skip: the five hourly times missed while down start no run, and the next one fires on time."""
    await _down_for_five_hours(rig, "skip")
    assert await rig.runs("p") == []
    await rig.advance(1800)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 6 * HOUR]


async def test_run_once_runs_one_catch_up_for_the_latest_missed_time(rig: Rig) -> None:
    """misfire=run_once: one run, fired for the latest missed time (T0 + 5h)."""
    await _down_for_five_hours(rig, "run_once")
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 5 * HOUR]


async def test_run_all_runs_each_missed_time_in_order(rig: Rig) -> None:
    """misfire=run_all: one run per missed hour, each waiting for the one before."""
    await _down_for_five_hours(rig, "run_all")
    runs = await rig.runs("p")
    assert [r.fire_time for r in runs] == [T0 + h * HOUR for h in range(1, 6)]
    finished = [await rig.wait_status(r.run_id, {"succeeded"}) for r in runs]
    starts = [r.started_at for r in finished]
    assert starts == sorted(starts)


async def test_run_all_is_bounded_by_max_catchup_runs(rig: Rig) -> None:
    """With scheduler.max_catchup_runs = 2, run_all runs only the two latest missed times."""
    rig.settings = {"scheduler": {"max_catchup_runs": 2}}
    await _down_for_five_hours(rig, "run_all")
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 4 * HOUR, T0 + 5 * HOUR]


async def test_catch_up_fires_are_recorded_so_a_second_restart_runs_nothing_more(rig: Rig) -> None:
    """After a run_all catch-up, restarting again at the same time starts no further run."""
    await _down_for_five_hours(rig, "run_all")
    await rig.restart()
    await rig.advance(0)
    assert len(await rig.runs("p")) == 5


async def test_a_schedule_that_never_fired_catches_up_from_when_it_was_first_loaded(rig: Rig) -> None:
    """A daily schedule loaded before its first fire time, with the daemon down over it, still runs once."""
    rig.write(pipeline("p", {"id": "d", "cron": "0 12 * * *", "misfire": "run_once"}))
    await rig.start()
    await rig.stop()
    rig.clock.set(T0 + 5 * HOUR)  # 15:00: noon passed while down
    await rig.start()
    await rig.advance(0)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 2 * HOUR]


async def test_a_new_schedule_does_not_catch_up_times_before_it_existed(rig: Rig) -> None:
    """A schedule seen for the first time starts from now: no run for times before it was loaded."""
    rig.clock.set(T0 + 5 * HOUR)
    rig.write(pipeline("p", {"id": "h", "cron": "0 * * * *", "misfire": "run_all"}))
    await rig.start()
    await rig.advance(0)
    assert await rig.runs("p") == []


async def test_a_fire_recorded_without_its_run_gets_the_run_on_start(rig: Rig) -> None:
    """A fire recorded with a run id the journal lacks (the daemon died in between) is started on start."""
    rig.write(pipeline("p", {"id": "h", "cron": "0 * * * *", "misfire": "skip"}))
    await rig.start()
    assert rig.parts is not None
    await rig.parts.journal.record_fire("p", "h", T0, run_id="r-lost-1")
    await rig.restart()
    await rig.advance(0)
    assert [(r.run_id, r.fire_time) for r in await rig.runs("p")] == [("r-lost-1", T0)]
