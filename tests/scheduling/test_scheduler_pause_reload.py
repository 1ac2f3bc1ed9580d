"""Pause and unpause (persisted), and schedules following the catalog on reload (manual clock)."""

from __future__ import annotations

import pytest

from scheduling_support import T0, Rig, pipeline
from flowmasond.scheduling.scheduler import ScheduleNotFoundError


async def test_paused_schedule_does_not_fire(rig: Rig) -> None:
    """A paused schedule shows paused with no next fire, and starts nothing while paused."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    scheduler = await rig.start()
    info = await scheduler.pause("m")
    assert (info["paused"], info["next_fire"]) == (True, None)
    await rig.advance(180)
    assert await rig.runs("p") == []


async def test_pause_survives_a_restart(rig: Rig) -> None:
    """The pause is persisted in the journal: a restarted scheduler keeps the schedule paused."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    scheduler = await rig.start()
    await scheduler.pause("p/m")
    scheduler = await rig.restart()
    [info] = await scheduler.list_schedules()
    assert info["paused"] is True
    await rig.advance(120)
    assert await rig.runs("p") == []


async def test_pause_survives_removal_and_return_of_the_file(rig: Rig) -> None:
    """A schedule whose file is deleted and restored comes back still paused."""
    path = rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    scheduler = await rig.start()
    await scheduler.pause("m")
    text = path.read_text()
    path.unlink()
    await rig.reload()
    assert await scheduler.list_schedules() == []
    path.write_text(text)
    await rig.reload()
    [info] = await scheduler.list_schedules()
    assert info["paused"] is True


async def test_unpause_catches_up_by_the_misfire_policy(rig: Rig) -> None:
    """Unpausing a run_once schedule after three missed minutes runs one catch-up for the latest of them."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "misfire": "run_once"}))
    scheduler = await rig.start()
    await scheduler.pause("m")
    await rig.advance(200)
    info = await scheduler.unpause("m")
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 180]
    assert (info["paused"], info["next_fire"]) == (False, T0 + 240)


async def test_unknown_and_ambiguous_schedule_ids_are_refused(rig: Rig) -> None:
    """An unknown id is an error naming it; an id two pipelines use must be given as pipeline/schedule."""
    rig.write(pipeline("a", {"id": "nightly", "cron": "0 2 * * *"}))
    rig.write(pipeline("b", {"id": "nightly", "cron": "0 3 * * *"}))
    scheduler = await rig.start()
    with pytest.raises(ScheduleNotFoundError, match="no schedule 'nope'"):
        await scheduler.pause("nope")
    with pytest.raises(ScheduleNotFoundError, match="several pipelines"):
        await scheduler.pause("nightly")
    assert (await scheduler.pause("b/nightly"))["pipeline_id"] == "b"


async def test_changed_cron_takes_effect_on_reload(rig: Rig) -> None:
    """Editing a schedule's cron reschedules it from now: the old time no longer fires, the new one does."""
    rig.write(pipeline("p", {"id": "s", "cron": "0 11 * * *"}))
    scheduler = await rig.start()
    rig.write(pipeline("p", {"id": "s", "cron": "30 10 * * *"}))
    await rig.reload()
    [info] = await scheduler.list_schedules()
    assert info["next_fire"] == T0 + 1800
    await rig.advance(3600)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 1800]


async def test_invalid_edit_keeps_the_last_good_schedule_firing(rig: Rig) -> None:
    """A file made invalid keeps its last good version in the catalog, and its schedule keeps firing."""
    path = rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    await rig.start()
    path.write_text('{"id": "p", "stages": [')
    await rig.reload()
    await rig.advance(60)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 60]


async def test_bad_cron_in_an_edit_keeps_the_previous_schedule(rig: Rig) -> None:
    """An edit with an invalid cron is refused by validation; the previous schedule stays in force."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    scheduler = await rig.start()
    rig.write(pipeline("p", {"id": "m", "cron": "61 * * * *"}))
    await rig.reload()
    [info] = await scheduler.list_schedules()
    assert info["cron"] == "* * * * *"
    assert rig.parts is not None
    [issue] = rig.parts.catalog.entries()["p"].issues
    assert issue.field == "schedules.0.cron"


async def test_deleted_file_removes_its_schedules(rig: Rig) -> None:
    """Deleting a pipeline file removes its schedules: nothing fires for it afterwards."""
    path = rig.write(pipeline("p", {"id": "m", "cron": "* * * * *"}))
    scheduler = await rig.start()
    path.unlink()
    await rig.reload()
    assert await scheduler.list_schedules() == []
    await rig.advance(120)
    assert await rig.runs("p") == []


async def test_new_file_adds_its_schedules_from_now(rig: Rig) -> None:
    """A pipeline file added while running gets its schedules, which fire from their next time on."""
    await rig.start()
    rig.clock.advance(30)
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "misfire": "run_all"}))
    await rig.reload()
    await rig.advance(30)
    assert [r.fire_time for r in await rig.runs("p")] == [T0 + 60]
