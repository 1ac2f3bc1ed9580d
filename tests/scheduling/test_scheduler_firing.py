"""The scheduler fires on time, records every fire first, and never fires a time twice (manual clock)."""

from __future__ import annotations

from scheduling_support import T0, Rig, pipeline


async def test_schedule_fires_at_its_time_and_not_before(rig: Rig) -> None:
    """An every-minute schedule has no run at 10:00:59 and one run, fired at 10:01:00, after it."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    await rig.start()
    await rig.advance(59)
    assert await rig.runs("p") == []
    await rig.advance(1)
    runs = await rig.runs("p")
    assert [(r.schedule_id, r.fire_time) for r in runs] == [("m", T0 + 60)]


async def test_seconds_field_fires_every_matching_second(rig: Rig) -> None:
    """A 6-field expression's first field is seconds: '*/15 * * * * *' fires at :15, :30 and :45."""
    rig.write(pipeline("p", {"id": "s", "cron": "*/15 * * * * *", "overlap": "allow"}))
    await rig.start()
    for _ in range(3):
        await rig.advance(15)
    assert [r.fire_time - T0 for r in await rig.runs("p")] == [15, 30, 45]


async def test_fire_is_recorded_before_its_run_with_the_run_id(rig: Rig) -> None:
    """The journal's fire record names the run the fire created, and that run succeeds with the schedule's inputs."""
    rig.write({**pipeline("p", {"id": "m", "cron": "* * * * *", "inputs": {"who": "cron"}})})
    await rig.start()
    await rig.advance(60)
    [run] = await rig.runs("p")
    assert rig.parts is not None
    records = await rig.parts.journal.schedule_records([("p", "m")])
    assert (records[("p", "m")].last_fire_time, records[("p", "m")].last_run_id) == (T0 + 60, run.run_id)
    assert run.inputs == {"who": "cron"}
    assert (await rig.wait_status(run.run_id, {"succeeded"})).output is not None


async def test_restart_never_fires_a_recorded_time_twice(rig: Rig) -> None:
    """A scheduler restarted at the same instant does not fire again the time the previous one fired."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "misfire": "run_all"}))
    await rig.start()
    await rig.advance(60)
    await rig.restart()
    await rig.advance(0)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 60]


async def test_record_fire_refuses_a_second_record_of_the_same_time(rig: Rig) -> None:
    """The fire key (pipeline, schedule, fire time) is unique: recording it again reports False."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    await rig.start()
    assert rig.parts is not None
    assert await rig.parts.journal.record_fire("p", "m", T0 + 60, run_id="r-first") is True
    await rig.advance(60)
    assert await rig.runs("p") == []


async def test_disabled_schedule_never_fires(rig: Rig) -> None:
    """A schedule with enabled=false is listed but does not fire."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "enabled": False}))
    scheduler = await rig.start()
    await rig.advance(180)
    assert await rig.runs("p") == []
    [info] = await scheduler.list_schedules()
    assert (info["enabled"], info["next_fire"]) == (False, None)


async def test_trigger_fires_now_and_is_recorded_at_that_time(rig: Rig) -> None:
    """`trigger` starts a run whose fire time is the current time, and records that fire."""
    rig.write(pipeline("p", {"id": "daily", "cron": "0 3 * * *"}))
    scheduler = await rig.start()
    rig.clock.advance(12.5)
    result = await scheduler.trigger("daily")
    assert (result["action"], result["fire_time"]) == ("started", T0 + 12.5)
    [run] = await rig.runs("p")
    assert (run.run_id, run.schedule_id, run.fire_time) == (result["run_id"], "daily", T0 + 12.5)
    assert result["schedule"]["last_fire"] == T0 + 12.5


async def test_time_zone_decides_the_wall_clock_of_a_fire(rig: Rig) -> None:
    """'0 11 * * *' in Europe/Berlin fires at 10:00 UTC in winter; in UTC it would fire an hour later."""
    rig.clock.set(T0 - 3600)  # 09:00 UTC
    rig.write(pipeline("p", {"id": "berlin", "cron": "0 11 * * *", "timezone": "Europe/Berlin"},
                       {"id": "utc", "cron": "0 11 * * *"}))
    await rig.start()
    await rig.advance(3600)
    assert [(r.schedule_id, r.fire_time) for r in await rig.runs("p")] == [("berlin", T0)]


async def test_listing_shows_next_and_last_fire_and_the_last_run_status(rig: Rig) -> None:
    """`list` reports cron, zone, next fire, last fire and the status of the run that fire started."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "timezone": "Europe/Paris"}))
    scheduler = await rig.start()
    await rig.advance(60)
    [run] = await rig.runs("p")
    await rig.wait_status(run.run_id, {"succeeded"})
    [info] = await scheduler.list_schedules()
    assert {k: info[k] for k in ("id", "pipeline_id", "cron", "timezone", "paused", "next_fire", "last_fire",
                                 "last_run_id", "last_run_status")} == {
        "id": "m", "pipeline_id": "p", "cron": "* * * * *", "timezone": "Europe/Paris", "paused": False,
        "next_fire": T0 + 120, "last_fire": T0 + 60, "last_run_id": run.run_id, "last_run_status": "succeeded"}


async def test_a_late_loop_fires_only_the_latest_time_under_skip(rig: Rig) -> None:
    """When the loop wakes five minutes late, misfire=skip fires the latest due time only."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "misfire": "skip"}))
    await rig.start()
    await rig.advance(300)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 300]


async def test_a_late_loop_runs_each_missed_time_under_run_all_bounded(rig: Rig) -> None:
    """misfire=run_all after a five-minute stall runs the latest max_catchup_runs times, in order."""
    rig.settings = {"scheduler": {"max_catchup_runs": 3}}
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "misfire": "run_all"}))
    await rig.start()
    await rig.advance(300)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 180, T0 + 240, T0 + 300]
