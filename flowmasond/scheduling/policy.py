"""The misfire and overlap rules of a schedule, as plain functions of what has happened.

Misfire (fire times missed while the daemon was down or the schedule paused, counted from the
schedule's latest recorded fire): ``skip`` runs none, ``run_once`` runs one for the latest missed
time, ``run_all`` runs each missed time, at most ``max_catchup_runs`` (the latest ones).

Overlap (a fire while a run of the same schedule is still active): ``skip`` records the fire and
starts nothing, ``queue`` starts a run that waits for the active ones (at most one waiting: a
further fire is skipped), ``allow`` starts a run at once, ``cancel_previous`` cancels the active
runs and starts a run that waits for them to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol
from collections.abc import Sequence

from flowmasond.scheduling.cron import CronSchedule

MisfirePolicy = Literal["skip", "run_once", "run_all"]
OverlapPolicy = Literal["skip", "queue", "allow", "cancel_previous"]


class ActiveRunView(Protocol):
    """What the overlap rule needs to know about an active run (``runs.ActiveRun`` has it)."""

    run_id: str
    running: bool  # holds a concurrency slot; False: still waiting to execute


@dataclass(frozen=True, slots=True)
class OverlapDecision:
    """Whether a fire starts a run, which runs that run waits for, and which it cancels."""

    start: bool
    after: tuple[str, ...] = ()
    cancel: tuple[str, ...] = ()
    reason: str | None = None  # why a fire starts nothing


@dataclass(frozen=True, slots=True)
class CatchUp:
    """The missed fire times a schedule runs now, oldest first."""

    fires: list[float]
    missed_latest: float | None  # the latest missed time, even when the policy runs nothing
    older_left_out: bool  # run_all only ran the latest ``max_catchup_runs`` of them


def decide_overlap(policy: OverlapPolicy, active: Sequence[ActiveRunView]) -> OverlapDecision:
    """What a fire does while ``active`` runs of its schedule are still going."""
    if not active or policy == "allow":
        return OverlapDecision(start=True)
    ids = tuple(run.run_id for run in active)
    if policy == "skip":
        return OverlapDecision(start=False, reason=f"run {ids[0]} of this schedule is still active (overlap: skip)")
    if policy == "queue":
        waiting = [run.run_id for run in active if not run.running]
        if waiting:
            return OverlapDecision(start=False,
                                   reason=f"run {waiting[0]} is already waiting (overlap: queue holds one)")
        return OverlapDecision(start=True, after=ids)
    return OverlapDecision(start=True, after=ids, cancel=ids)  # cancel_previous


def plan_catch_up(cron: CronSchedule, policy: MisfirePolicy, *, since: float | None, now: float,
                  max_catchup_runs: int) -> CatchUp:
    """The fire times to run now for the ones missed in ``(since, now]``."""
    if since is None:
        return CatchUp(fires=[], missed_latest=None, older_left_out=False)
    limit = max_catchup_runs if policy == "run_all" else 1
    missed, older = cron.latest_fires(since, now, limit)
    if not missed:
        return CatchUp(fires=[], missed_latest=None, older_left_out=False)
    if policy == "skip":
        return CatchUp(fires=[], missed_latest=missed[-1], older_left_out=False)
    return CatchUp(fires=missed, missed_latest=missed[-1], older_left_out=older)
