"""What a fire does while the previous run of its schedule is still going, per overlap policy."""

from __future__ import annotations

from scheduling_support import T0, Rig, pipeline

# Long enough that the first run is still going when the test fires again; cancelled at teardown.
HOLD_S = 60.0


async def _second_fire_while_first_runs(rig: Rig, overlap: str) -> list[str]:
    """Fire an every-minute schedule twice, the first run still holding; returns both fire's run ids."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "overlap": overlap}, hold_s=HOLD_S))
    await rig.start()
    await rig.advance(60)
    [first] = await rig.runs("p")
    await rig.wait_active(first.run_id)
    await rig.advance(60)
    return [r.run_id for r in await rig.runs("p")]


async def test_skip_records_the_fire_but_starts_no_run(rig: Rig) -> None:
    """overlap=skip: the second fire is recorded (so never retried) with no run, and shows as skipped."""
    ids = await _second_fire_while_first_runs(rig, "skip")
    assert len(ids) == 1
    assert rig.scheduler is not None
    [info] = await rig.scheduler.list_schedules()
    assert (info["last_fire"], info["last_run_id"], info["last_run_status"]) == (T0 + 120, None, "skipped")


async def test_queue_starts_the_second_run_only_after_the_first_ends(rig: Rig) -> None:
    """overlap=queue: the second run waits (pending) while the first runs, then runs once it ends."""
    first, second = await _second_fire_while_first_runs(rig, "queue")
    assert rig.parts is not None
    assert rig.parts.runs.active[second].running is False
    assert (await rig.parts.journal.get_run(second)).status.value == "pending"
    await rig.parts.runs.cancel(first)
    await rig.wait_status(first, {"cancelled"})
    await rig.wait_active(second)


async def test_queue_holds_at_most_one_waiting_run(rig: Rig) -> None:
    """overlap=queue: a third fire while one run is already waiting is skipped."""
    await _second_fire_while_first_runs(rig, "queue")
    await rig.advance(60)
    assert len(await rig.runs("p")) == 2
    assert rig.scheduler is not None
    [info] = await rig.scheduler.list_schedules()
    assert (info["last_fire"], info["last_run_status"]) == (T0 + 180, "skipped")


async def test_allow_runs_both_at_once(rig: Rig) -> None:
    """overlap=allow: the second run starts while the first is still running."""
    first, second = await _second_fire_while_first_runs(rig, "allow")
    await rig.wait_active(second)
    assert rig.parts is not None
    assert rig.parts.runs.active[first].running is True


async def test_cancel_previous_cancels_the_first_and_then_runs_the_second(rig: Rig) -> None:
    """overlap=cancel_previous: the first run ends cancelled, then the second one runs."""
    first, second = await _second_fire_while_first_runs(rig, "cancel_previous")
    assert (await rig.wait_status(first, {"cancelled", "succeeded", "failed"})).status.value == "cancelled"
    await rig.wait_active(second)


async def test_catch_up_runs_wait_for_a_run_of_the_schedule_still_active(rig: Rig) -> None:
    """After an unpause, run_all catch-up runs queue behind the schedule's active run even under overlap=skip."""
    rig.write(pipeline("p", {"id": "m", "cron": "* * * * *", "misfire": "run_all"}, hold_s=HOLD_S))
    scheduler = await rig.start()
    await rig.advance(60)
    [first] = await rig.runs("p")
    await scheduler.pause("m")
    await rig.advance(120)
    await scheduler.unpause("m")
    runs = await rig.runs("p")
    assert [r.fire_time for r in runs] == [T0 + 60, T0 + 120, T0 + 180]
    assert rig.parts is not None
    assert [rig.parts.runs.active[r.run_id].running for r in runs] == [True, False, False]
