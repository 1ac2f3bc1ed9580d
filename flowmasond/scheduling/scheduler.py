"""Cron schedules of the loaded pipelines: fire on time, never twice, catch up by policy.

One asyncio task sleeps until the earliest next fire time of every schedule and fires what is due;
a reload, a pause or an unpause wakes it to recompute. Fire times come from one function,
``CronSchedule.next_after`` (``flowmasond.scheduling.cron``): the next fire a schedule shows is the
first time it fires, so a shown fire is fired, or skipped by the misfire policy and logged. Which
times fire after downtime, and what a fire does when a run of the schedule is still going, is
decided here from the journal's recorded fires (``flowmasond.scheduling.policy``).

Every fire is recorded in the journal, keyed by (pipeline, schedule, fire time), *before* its run is
created, so a restart never fires a time twice; the run carries ``schedule_id`` and ``fire_time``.
If the daemon dies between the two, the next start creates the recorded run.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from flowmasond.engine.dag import new_run_id
from flowmasond.engine.interfaces import RunStatus
from flowmasond.engine.models import ScheduleConfig
from flowmasond.errors import FlowmasonError, InvalidStateError, PipelineNotFoundError, RunNotFoundError
from flowmasond.scheduling.clock import Clock, SystemClock
from flowmasond.scheduling.cron import CronSchedule
from flowmasond.scheduling.entries import (FireAction, FireResult, ScheduleKey, ScheduleNotFoundError,
                                           TrackedSchedule, find_schedule)
from flowmasond.scheduling.policy import ActiveRunView, OverlapDecision, decide_overlap, plan_catch_up

if TYPE_CHECKING:
    from flowmasond.config import DaemonConfig
    from flowmasond.journal import Journal
    from flowmasond.journal.journal import ScheduleRecord
    from flowmasond.pipelines.catalog import PipelineCatalog
    from flowmasond.runs import RunManager

log = structlog.get_logger("flowmasond.scheduling.scheduler")

# The loop never sleeps longer than this, so a wall-clock step (NTP, suspend) is noticed quickly.
MAX_SLEEP_S = 30.0
# stop() lets a pass that is recording fires finish (a fire must not be left half-done) this long.
STOP_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _RunElsewhere:
    """A run of a schedule that another node executes, as the overlap rule sees it."""

    run_id: str
    running: bool


class SchedulerHost(Protocol):
    """The daemon parts the scheduler works with (``Daemon`` has them)."""

    journal: Journal
    catalog: PipelineCatalog
    runs: RunManager
    config: DaemonConfig


class Scheduler:
    """Fires the schedules declared in the catalog's pipelines through the run manager."""

    def __init__(self, host: SchedulerHost, *, clock: Clock | None = None) -> None:
        self.journal = host.journal
        self.catalog = host.catalog
        self.runs = host.runs
        self.max_catchup_runs = host.config.scheduler.max_catchup_runs
        self.retention_days = host.config.journal.retention_days
        self.clock: Clock = clock or SystemClock()
        self._schedules: dict[ScheduleKey, TrackedSchedule] = {}
        self._lock = asyncio.Lock()  # one sync at a time (each reads the journal)
        # One fire of a schedule at a time: a fire decides its overlap from the runs that exist,
        # and its own run exists only once created, so two fires sent together (operators'
        # triggers) must not both decide before either run is there.
        self._firing: dict[ScheduleKey, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._went_idle = asyncio.Event()  # replaced each time the loop goes idle
        self._idle_at: float | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every schedule, catch up what the downtime missed, then start firing."""
        await self._sync(catch_up=True)
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        log.info("scheduler_started", schedules=self.count(),
                 paused=sum(1 for s in self._schedules.values() if s.paused))

    async def stop(self) -> None:
        """Stop firing; a pass recording fires is allowed to finish."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def sync(self) -> None:
        """Follow the catalog after a reload: new, changed and removed schedules (no catch-up)."""
        if not self._stopping:
            await self._sync(catch_up=False)

    def count(self) -> int:
        """Enabled schedules (paused ones included)."""
        return sum(1 for s in self._schedules.values() if s.config.enabled)

    async def wait_idle(self) -> None:
        """Return once every fire due at the clock's current time has been handled (a test seam)."""
        while self._task is not None and not self._task.done():
            if self._idle_at is not None and self._idle_at >= self.clock.now() and not self._wake.is_set():
                return
            went_idle = self._went_idle
            # The clock may have moved without reaching the loop's wake-up time: make it look again.
            self._wake.set()
            await went_idle.wait()

    # -- operator verbs -------------------------------------------------------------------------
    async def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule with its next and last fire and the status of the last fire's run."""
        schedules = sorted(self._schedules.values(), key=lambda s: s.key)
        statuses = await self.journal.run_statuses(s.last_run_id for s in schedules if s.last_run_id)
        active = self._active_by_schedule()
        return [s.info(statuses, active.get(s.key, 0)) for s in schedules]

    async def info(self, ref: str, pipeline_id: str | None = None) -> dict[str, Any]:
        """One schedule as ``list_schedules`` shows it."""
        schedule = self.resolve(ref, pipeline_id)
        statuses = await self.journal.run_statuses([schedule.last_run_id] if schedule.last_run_id else [])
        return schedule.info(statuses, self._active_by_schedule().get(schedule.key, 0))

    async def pause(self, ref: str, pipeline_id: str | None = None) -> dict[str, Any]:
        """Stop firing a schedule until unpaused; persisted, so it survives restarts and reloads."""
        schedule = self.resolve(ref, pipeline_id)
        if not schedule.paused:
            schedule.paused, schedule.next_fire = True, None
            try:
                await self.journal.set_schedule_paused(*schedule.key, True)
            except FlowmasonError:
                schedule.paused = False
                schedule.reschedule(self.clock.now())
                raise
            log.info("schedule_paused", schedule=schedule.name)
            self._wake.set()
        return await self.info(schedule.config.id, schedule.pipeline_id)

    async def unpause(self, ref: str, pipeline_id: str | None = None) -> dict[str, Any]:
        """Resume a paused schedule; the fires missed meanwhile are handled by its misfire policy."""
        schedule = self.resolve(ref, pipeline_id)
        if schedule.paused:
            await self.journal.set_schedule_paused(*schedule.key, False)
            schedule.paused = False
            log.info("schedule_unpaused", schedule=schedule.name)
            now = self.clock.now()
            if schedule.config.enabled:
                await self._catch_up(schedule, now)
            schedule.reschedule(now)
            self._wake.set()
        return await self.info(schedule.config.id, schedule.pipeline_id)

    async def follow_paused(self) -> None:
        """Apply pauses and unpauses made by other nodes sharing the journal (cluster mode).

        The node that unpauses a schedule does its catch-up; here it only fires again from now on.
        """
        paused = await self.journal.paused_schedules()
        now = self.clock.now()
        changed = []
        for key, schedule in self._schedules.items():
            if (key in paused) != schedule.paused:
                schedule.paused = key in paused
                if schedule.paused:
                    schedule.next_fire = None
                else:
                    schedule.reschedule(now)
                changed.append(schedule.name)
        if changed:
            log.info("schedule_pauses_followed", schedules=changed)
            self._wake.set()

    async def start_recorded_fire(self, pipeline_id: str, schedule_id: str, fire_time: float,
                                  run_id: str) -> None:
        """Create the run of a fire another node recorded but died before creating (cluster mode)."""
        schedule = self._schedules.get((pipeline_id, schedule_id))
        if schedule is None:
            return  # not loaded here: a node that has the pipeline does it
        log.warning("schedule_fire_without_run", schedule=schedule.name, run_id=run_id,
                    fire_time=schedule.cron.describe(fire_time))
        await self._start_run(schedule, fire_time, run_id, OverlapDecision(start=True))

    async def trigger(self, ref: str, pipeline_id: str | None = None) -> dict[str, Any]:
        """Fire a schedule now (recorded like any fire, with fire time = now; overlap policy applies)."""
        schedule = self.resolve(ref, pipeline_id)
        result = await self._fire(schedule, self.clock.now(), manual=True)
        return {**result.to_dict(), "schedule": await self.info(schedule.config.id, schedule.pipeline_id)}

    async def next_fires(self, ref: str, count: int, pipeline_id: str | None = None) -> dict[str, Any]:
        """The schedule's next ``count`` fire times (from its shown next fire on), with UTC offsets.

        A paused or disabled schedule lists the times it would fire if it were live.
        """
        schedule = self.resolve(ref, pipeline_id)
        cron = schedule.cron
        if schedule.next_fire is not None:
            rest = await asyncio.to_thread(cron.upcoming, schedule.next_fire, count - 1)
            times = [schedule.next_fire, *rest]
        else:
            times = await asyncio.to_thread(cron.upcoming, self.clock.now(), count)
        fires = []
        for ts in times:
            local = datetime.fromtimestamp(ts, cron.zone)
            text = local.isoformat(timespec="seconds")
            fires.append({"time": ts, "local": text, "utc_offset": text[19:]})
        return {"schedule": await self.info(schedule.config.id, schedule.pipeline_id), "fires": fires}

    def resolve(self, ref: str, pipeline_id: str | None = None) -> TrackedSchedule:
        """A schedule by ``pipeline/schedule``, or by its bare id when only one pipeline has it."""
        return find_schedule(self._schedules.values(), ref, pipeline_id)

    # -- loading --------------------------------------------------------------------------------
    async def _sync(self, *, catch_up: bool) -> None:
        async with self._lock:
            now = self.clock.now()
            wanted: dict[ScheduleKey, ScheduleConfig] = {}
            for pipeline in self.catalog.pipelines():
                for config in pipeline.schedules:
                    wanted[(pipeline.id, config.id)] = config
            for key in self._schedules.keys() - wanted.keys():
                removed = self._schedules.pop(key)
                log.info("schedule_removed", schedule=removed.name)
            new: list[TrackedSchedule] = []
            for key, config in wanted.items():
                current = self._schedules.get(key)
                if current is None:
                    schedule = self._parse(key[0], config)
                    if schedule is not None:
                        new.append(schedule)
                elif current.config != config:
                    self._update(current, config, now)
            if new:
                await self._add(new, now, catch_up=catch_up)
            self._wake.set()

    async def _add(self, new: list[TrackedSchedule], now: float, *, catch_up: bool) -> None:
        keys = [s.key for s in new]
        await self.journal.mark_schedules_seen(keys)
        records = await self.journal.schedule_records(keys)
        for schedule in new:
            record = records[schedule.key]
            schedule.paused = record.paused
            schedule.first_seen = record.first_seen_at
            schedule.last_fire, schedule.last_run_id = record.last_fire_time, record.last_run_id
            self._schedules[schedule.key] = schedule
            if not catch_up:
                log.info("schedule_added", schedule=schedule.name, cron=schedule.config.cron,
                         timezone=schedule.config.timezone, paused=schedule.paused)
        if catch_up:
            live = [s for s in new if s.live]
            await asyncio.gather(*(self._recover(s, records[s.key], now) for s in live))
        for schedule in new:
            schedule.reschedule(now)

    def _parse(self, pipeline_id: str, config: ScheduleConfig) -> TrackedSchedule | None:
        try:
            cron = CronSchedule.parse(config.cron, config.timezone)
        except ValueError as exc:
            # Validation refuses such a file at load time; this only guards the scheduler.
            log.error("schedule_invalid", schedule=f"{pipeline_id}/{config.id}", error=str(exc))
            return None
        return TrackedSchedule(pipeline_id=pipeline_id, config=config, cron=cron)

    def _update(self, schedule: TrackedSchedule, config: ScheduleConfig, now: float) -> None:
        timing_changed = (config.cron, config.timezone, config.enabled) != \
            (schedule.config.cron, schedule.config.timezone, schedule.config.enabled)
        if (config.cron, config.timezone) != (schedule.config.cron, schedule.config.timezone):
            parsed = self._parse(schedule.pipeline_id, config)
            if parsed is None:
                return
            schedule.cron = parsed.cron
        schedule.config = config
        if timing_changed:
            schedule.reschedule(now)
        log.info("schedule_changed", schedule=schedule.name, cron=config.cron, timezone=config.timezone,
                 enabled=config.enabled)

    # -- catch-up -------------------------------------------------------------------------------
    async def _recover(self, schedule: TrackedSchedule, record: ScheduleRecord, now: float) -> None:
        """On start: create a recorded fire's missing run, then catch up by the misfire policy."""
        try:
            if self._run_never_created(record, now):
                assert record.last_fire_time is not None and record.last_run_id is not None
                log.warning("schedule_fire_without_run", schedule=schedule.name, run_id=record.last_run_id,
                            fire_time=schedule.cron.describe(record.last_fire_time))
                await self._start_run(schedule, record.last_fire_time, record.last_run_id,
                                      OverlapDecision(start=True, after=tuple(await self._waits_for(schedule))))
            await self._catch_up(schedule, now)
        except FlowmasonError as exc:
            log.error("schedule_catch_up_failed", schedule=schedule.name, error=str(exc))

    def _run_never_created(self, record: ScheduleRecord, now: float) -> bool:
        # A fire naming a run the journal does not hold: the daemon stopped between recording the
        # fire and creating its run -- unless the run finished long ago and retention pruned it.
        if record.last_run_id is None or record.last_run_status is not None or record.last_recorded_at is None:
            return False
        return self.retention_days is None or record.last_recorded_at > now - self.retention_days * 86400.0

    async def _catch_up(self, schedule: TrackedSchedule, now: float) -> None:
        since = schedule.last_fire if schedule.last_fire is not None else schedule.first_seen
        # Off the loop: a long downtime may take many next-fire computations.
        plan = await asyncio.to_thread(plan_catch_up, schedule.cron, schedule.config.misfire, since=since,
                                       now=now, max_catchup_runs=self.max_catchup_runs)
        if plan.missed_latest is None:
            return
        if not plan.fires:
            log.info("schedule_misfire_skipped", schedule=schedule.name,
                     latest_missed=schedule.cron.describe(plan.missed_latest))
            return
        log.info("schedule_catch_up", schedule=schedule.name, policy=schedule.config.misfire,
                 fires=[schedule.cron.describe(t) for t in plan.fires], older_left_out=plan.older_left_out)
        await self._fire_in_order(schedule, plan.fires)

    async def _fire_in_order(self, schedule: TrackedSchedule, fires: list[float]) -> None:
        """Catch-up fires: each run waits for the one before (and for active runs), unless overlap allows."""
        after = await self._waits_for(schedule)
        for fire_time in fires:
            result = await self._fire(schedule, fire_time, after=after)
            if result.run_id is not None and result.action in ("started", "queued") \
                    and schedule.config.overlap != "allow":
                after = [result.run_id]

    async def _waits_for(self, schedule: TrackedSchedule) -> list[str]:
        if schedule.config.overlap == "allow":
            return []
        return [run.run_id for run in await self._active_runs(schedule)]

    # -- firing ---------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self.clock.now()
            try:
                due = [s for s in list(self._schedules.values())
                       if s.next_fire is not None and s.next_fire <= now and s.live]
                if due:
                    await asyncio.gather(*(self._fire_due(s, now) for s in due))
                    continue
                upcoming = [s.next_fire for s in self._schedules.values() if s.next_fire is not None and s.live]
                delay = min(max(min(upcoming) - now, 0.0), MAX_SLEEP_S) if upcoming else MAX_SLEEP_S
            except Exception:  # noqa: BLE001 - a bug here must not end every schedule for good
                log.exception("scheduler_pass_failed")
                delay = 1.0
            self._idle_at = now
            went_idle, self._went_idle = self._went_idle, asyncio.Event()
            went_idle.set()
            await self._sleep(delay)
        went_idle, self._went_idle = self._went_idle, asyncio.Event()
        went_idle.set()

    async def _sleep(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _fire_due(self, schedule: TrackedSchedule, now: float) -> None:
        assert schedule.next_fire is not None
        first_due = schedule.next_fire  # the fire `schedules` showed: it is fired or logged as misfired
        try:
            if now < first_due + 1.0:
                # On time, the usual case. Fire times are whole seconds, so the next one is after
                # ``now``: it is computed once this fire's run has started, not before (with 1,000
                # schedules due together, 1,000 next-fire computations delayed the last run).
                try:
                    await self._fire(schedule, first_due)
                finally:
                    if schedule.next_fire == first_due:  # not paused, unpaused or changed meanwhile
                        schedule.next_fire = schedule.cron.next_after(first_due)
                return
            following = schedule.cron.next_after(first_due)
            if following is None or following > now:  # on time: the usual case, one computation
                schedule.next_fire = following
                await self._fire(schedule, first_due)
                return
            schedule.next_fire = schedule.cron.next_after(now)
            limit = self.max_catchup_runs if schedule.config.misfire == "run_all" else 1
            # Off the loop: a long sleep (suspend) may take many next-fire computations.
            fires, older = await asyncio.to_thread(schedule.cron.due_fires, first_due, now, limit)
            # The loop woke late (suspend, a clock step, a blocked loop): treat it like downtime,
            # except that the latest due time counts as on time under every policy.
            log.warning("schedule_misfired", schedule=schedule.name, policy=schedule.config.misfire,
                        first_missed=schedule.cron.describe(first_due), running=len(fires),
                        older_left_out=older)
            if len(fires) == 1:
                await self._fire(schedule, fires[0])
            else:
                await self._fire_in_order(schedule, fires)
        except Exception:  # noqa: BLE001 - one schedule's failure must not stop the others
            log.exception("schedule_fire_crashed", schedule=schedule.name)

    async def _fire(self, schedule: TrackedSchedule, fire_time: float, *, after: list[str] | None = None,
                    manual: bool = False) -> FireResult:
        """Record one fire, then start (or, by the overlap policy, skip) its run."""
        async with self._firing.setdefault(schedule.key, asyncio.Lock()):
            return await self._fire_alone(schedule, fire_time, after=after, manual=manual)

    async def _fire_alone(self, schedule: TrackedSchedule, fire_time: float, *, after: list[str] | None,
                          manual: bool) -> FireResult:
        try:
            self.catalog.get(schedule.pipeline_id)
        except PipelineNotFoundError as exc:  # removed; the next sync drops the schedule
            return FireResult(fire_time, "failed", reason=str(exc))
        if after is None:
            decision = decide_overlap(schedule.config.overlap, await self._active_runs(schedule))
        else:
            decision = OverlapDecision(start=True, after=tuple(after))
        run_id = new_run_id() if decision.start else None
        try:
            recorded = await self.journal.record_fire(schedule.pipeline_id, schedule.config.id, fire_time,
                                                      run_id=run_id)
        except FlowmasonError as exc:
            # Unrecorded means not fired: a run without its record could fire twice after a restart.
            log.error("schedule_fire_not_recorded", schedule=schedule.name, error=str(exc),
                      fire_time=schedule.cron.describe(fire_time))
            return FireResult(fire_time, "failed", reason=str(exc))
        if not recorded:
            log.info("schedule_fire_already_recorded", schedule=schedule.name,
                     fire_time=schedule.cron.describe(fire_time))
            return FireResult(fire_time, "duplicate", reason="this fire time was already recorded")
        if schedule.last_fire is None or fire_time >= schedule.last_fire:
            schedule.last_fire, schedule.last_run_id = fire_time, run_id
        if run_id is None:
            log.info("schedule_fire_skipped", schedule=schedule.name, fire_time=schedule.cron.describe(fire_time),
                     reason=decision.reason, manual=manual)
            return FireResult(fire_time, "skipped", reason=decision.reason)
        return await self._start_run(schedule, fire_time, run_id, decision, manual=manual)

    async def _start_run(self, schedule: TrackedSchedule, fire_time: float, run_id: str, decision: OverlapDecision,
                         *, manual: bool = False) -> FireResult:
        for previous in decision.cancel:
            with contextlib.suppress(InvalidStateError, RunNotFoundError):  # it finished meanwhile
                await self.runs.cancel(previous)
        try:
            await self.runs.start(schedule.pipeline_id, dict(schedule.config.inputs), schedule_id=schedule.config.id,
                                  fire_time=fire_time, run_id=run_id, after=decision.after)
        except FlowmasonError as exc:
            log.error("schedule_run_not_started", schedule=schedule.name, run_id=run_id, error=str(exc),
                      fire_time=schedule.cron.describe(fire_time))
            return FireResult(fire_time, "failed", run_id=run_id, reason=str(exc))
        action: FireAction = "queued" if decision.after else "started"
        log.info("schedule_fired", schedule=schedule.name, run_id=run_id, action=action, manual=manual,
                 fire_time=schedule.cron.describe(fire_time), cancelled=list(decision.cancel) or None)
        return FireResult(fire_time, action, run_id=run_id)

    # -- views ----------------------------------------------------------------------------------
    async def _active_runs(self, schedule: TrackedSchedule) -> list[ActiveRunView]:
        """The schedule's runs still going: this node's, and with several nodes the others' too,
        so an overlap policy holds across the cluster, not per node."""
        local: list[ActiveRunView] = [
            run for run in self.runs.active.values()
            if run.schedule_id == schedule.config.id and run.pipeline_id == schedule.pipeline_id]
        if self.runs.ownership is None:
            return local
        mine = {run.run_id for run in local}
        # Oldest first, as the local ones are (the ``skip`` reason names the first). An interrupted
        # run does not count: it waits for a resume or a takeover, and must not hold its schedule.
        rows = await self.journal.active_runs_of_schedule(schedule.pipeline_id, schedule.config.id)
        others = [_RunElsewhere(run_id, status is not RunStatus.PENDING)
                  for run_id, status in rows if run_id not in mine]
        return [*local, *others]

    def _active_by_schedule(self) -> dict[ScheduleKey, int]:
        counts: dict[ScheduleKey, int] = {}
        for run in self.runs.active.values():
            if run.schedule_id is not None:
                key = (run.pipeline_id, run.schedule_id)
                counts[key] = counts.get(key, 0) + 1
        return counts


__all__ = ["FireResult", "ScheduleNotFoundError", "Scheduler", "SchedulerHost"]
