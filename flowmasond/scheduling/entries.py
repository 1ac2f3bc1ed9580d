"""What the scheduler holds per schedule, how an operator names one, and what a fire reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Iterable, Mapping

from flowmasond.engine.models import ScheduleConfig
from flowmasond.engine.interfaces import RunStatus
from flowmasond.errors import ScheduleNotFoundError  # noqa: F401 - re-exported
from flowmasond.scheduling.cron import CronSchedule

ScheduleKey = tuple[str, str]  # (pipeline_id, schedule_id): schedule ids are unique per pipeline
FireAction = Literal["started", "queued", "skipped", "duplicate", "failed"]


@dataclass(frozen=True, slots=True)
class FireResult:
    """What one fire did: started or queued a run, was skipped by the overlap policy, or failed."""

    fire_time: float
    action: FireAction
    run_id: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fire_time": self.fire_time, "action": self.action, "run_id": self.run_id, "reason": self.reason}


@dataclass(slots=True, eq=False)
class TrackedSchedule:
    """One schedule as the scheduler tracks it: its definition, pause state and fire times."""

    pipeline_id: str
    config: ScheduleConfig
    cron: CronSchedule
    paused: bool = False
    first_seen: float | None = None
    next_fire: float | None = None  # None: paused, disabled, or never fires again
    last_fire: float | None = None
    last_run_id: str | None = None  # None with a last_fire: that fire was skipped

    @property
    def key(self) -> ScheduleKey:
        return (self.pipeline_id, self.config.id)

    @property
    def name(self) -> str:
        return f"{self.pipeline_id}/{self.config.id}"

    @property
    def live(self) -> bool:
        """Fires by itself (enabled in its file and not paused)."""
        return self.config.enabled and not self.paused

    def reschedule(self, now: float) -> None:
        """Set the next fire time after ``now`` (none while not live)."""
        self.next_fire = self.cron.next_after(now) if self.live else None

    def info(self, statuses: Mapping[str, RunStatus], active_runs: int) -> dict[str, Any]:
        """The schedule as `schedules.list` shows it; ``statuses`` holds its last run's status."""
        config = self.config
        if self.last_fire is None:
            last_status = None
        elif self.last_run_id is None:
            last_status = "skipped"
        else:
            status = statuses.get(self.last_run_id)
            last_status = status.value if status is not None else "not_started"
        return {
            "id": config.id, "pipeline_id": self.pipeline_id, "name": self.name, "cron": config.cron,
            "timezone": config.timezone, "enabled": config.enabled, "paused": self.paused,
            "misfire": config.misfire, "overlap": config.overlap, "inputs": config.inputs,
            "next_fire": self.next_fire, "last_fire": self.last_fire,
            "last_run_id": self.last_run_id, "last_run_status": last_status, "active_runs": active_runs,
        }


def find_schedule(schedules: Iterable[TrackedSchedule], ref: str, pipeline_id: str | None = None) -> TrackedSchedule:
    """A schedule by ``pipeline/schedule`` (or ``pipeline_id`` + id), or by a bare id only one pipeline uses."""
    candidates = list(schedules)
    if pipeline_id is not None:
        for schedule in candidates:
            if schedule.key == (pipeline_id, ref):
                return schedule
        raise ScheduleNotFoundError(f"no schedule {ref!r} in pipeline {pipeline_id!r}",
                                    pipeline_id=pipeline_id, schedule_id=ref)
    for schedule in candidates:
        if schedule.name == ref:
            return schedule
    matches = [s for s in candidates if s.config.id == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ScheduleNotFoundError(f"schedule id {ref!r} is used by several pipelines; name it as "
                                    "pipeline/schedule", schedule_id=ref, candidates=sorted(s.name for s in matches))
    raise ScheduleNotFoundError(f"no schedule {ref!r}", schedule_id=ref,
                                known=sorted(s.name for s in candidates)[:20])
