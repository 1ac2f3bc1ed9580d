"""Cron expressions: APScheduler 3.11's ``CronTrigger`` does the calendar math, this module the cron rules.

Accepted: standard 5-field cron (``minute hour day month weekday``), a 6-field form whose first
field is seconds (as in node-cron and Windmill), and the ``@hourly``-style macros. APScheduler 3
differs from standard cron in three ways, corrected here without re-implementing the math:

* Weekday numbers: cron's 0 (and 7) is Sunday; APScheduler 3 counts 0 as Monday (its documented
  historical mistake). Numeric weekdays are rewritten as names before APScheduler sees them.
* Day of month *and* weekday restricted (``0 9 1 * mon``): cron fires when either matches,
  APScheduler only when both do. Such an expression becomes two triggers; the earlier fire wins.
* Fall-back DST: APScheduler fires a time inside the repeated hour twice (02:30 CEST and then
  02:30 CET). A job pinned to certain hours runs once, on the first pass; a job that runs every
  hour keeps every real occurrence (the rule of Vixie cron and cronie).

Spring-forward DST needs no correction: a wall time inside the skipped hour does not exist, and
APScheduler returns it with the pre-transition offset, which is the same minutes past the gap
(02:30 on a New York spring-forward day fires at 03:30 EDT): the job still runs once that day.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.expressions import WEEKDAYS, AllExpression, RangeExpression

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Windows (seconds back from "now") tried in turn when looking for the latest missed fires: the
# first holding enough fires wins, so a once-a-second schedule after a week of downtime costs a
# few steps, not 600,000.
_LOOKBACK_S = (2.0, 120.0, 7200.0, 2 * 86400.0, 62 * 86400.0, 800 * 86400.0)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression in an IANA time zone; times in and out are Unix epoch seconds."""

    expression: str
    timezone: str
    zone: ZoneInfo
    triggers: tuple[CronTrigger, ...]
    every_hour: bool  # fires in every hour of the day: DST's repeated hour keeps both passes

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Parse ``expression``; raises ``ValueError`` with a readable reason."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{timezone}'") from None
        text = MACROS.get(expression.strip().lower(), expression.strip())
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise ValueError(f"expected 5 fields (minute hour day month weekday) or 6 (second first), "
                             f"got {len(fields)}")
        second, minute, hour, day, month, weekday = fields
        day = "*" if day == "?" else day
        weekday = "*" if weekday == "?" else _cron_weekdays(weekday)
        common = {"second": second, "minute": minute, "hour": hour, "month": month, "timezone": zone}
        try:
            if day.startswith("*") or weekday.startswith("*"):
                triggers: tuple[CronTrigger, ...] = (CronTrigger(day=day, day_of_week=weekday, **common),)
            else:
                triggers = (CronTrigger(day=day, day_of_week="*", **common),
                            CronTrigger(day="*", day_of_week=weekday, **common))
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        return cls(expression=expression, timezone=timezone, zone=zone, triggers=triggers,
                   every_hour=_matches_every_hour(triggers[0]))

    def next_after(self, after: float) -> float | None:
        """The first fire time strictly after ``after`` (None: the expression never fires again)."""
        times = [t for t in (self._next_of(trigger, after) for trigger in self.triggers) if t is not None]
        return min(times, default=None)

    def latest_fires(self, after: float, until: float, limit: int) -> tuple[list[float], bool]:
        """Up to ``limit`` latest fire times in ``(after, until]``, oldest first.

        The flag is True when earlier fire times in that interval were left out.
        """
        if limit < 1 or until <= after:
            return [], False
        for lookback in (*_LOOKBACK_S, None):
            start = after if lookback is None else max(after, until - lookback)
            found: deque[float] = deque(maxlen=limit)
            dropped = False
            cursor: float | None = start
            while (cursor := self.next_after(cursor)) is not None and cursor <= until:
                dropped = dropped or len(found) == limit
                found.append(cursor)
            if len(found) == limit or start == after:
                if start > after and not dropped:
                    first = self.next_after(after)
                    dropped = first is not None and first <= start
                return list(found), dropped
        return [], False  # unreachable: the last window starts at ``after``

    def describe(self, ts: float) -> str:
        """``ts`` as an ISO time in the schedule's zone (for logs and listings)."""
        return datetime.fromtimestamp(ts, self.zone).isoformat()

    def _next_of(self, trigger: CronTrigger, after: float) -> float | None:
        cursor = after
        while True:
            previous = datetime.fromtimestamp(cursor, self.zone)
            fire = trigger.get_next_fire_time(previous, previous)
            if fire is None:
                return None
            ts = fire.timestamp()
            if ts <= cursor:
                # Defensive: a gap time mapped onto an instant already passed; look just beyond.
                cursor = max(cursor, ts) + 1e-3
                continue
            if not self.every_hour and _is_second_pass(fire, self.zone):
                cursor = ts
                continue
            return ts


def cron_problem(expression: str, timezone: str = "UTC") -> str | None:
    """Why ``expression`` cannot be scheduled (it does not parse, or never fires), or None."""
    try:
        schedule = CronSchedule.parse(expression, timezone)
    except ValueError as exc:
        return str(exc)
    if schedule.next_after(time.time()) is None:
        return "it never fires (no date matches it)"
    return None


def _cron_weekdays(field: str) -> str:
    """Rewrite cron's numeric weekdays (0 or 7 = Sunday) as names, which APScheduler reads right."""
    if field == "*":
        return field
    parts: list[str] = []
    for token in field.split(","):
        every = AllExpression.value_re.fullmatch(token)
        span = RangeExpression.value_re.fullmatch(token)
        if every is not None:
            numbers = range(0, 7, int(every["step"] or 1))
        elif span is not None:
            first = int(span["first"])
            last = int(span["last"]) if span["last"] is not None else first
            if not 0 <= first <= last <= 7:
                raise ValueError(f"weekday '{token}' is out of range (0-7, 0 and 7 are Sunday)")
            step = int(span["step"] or 1)
            if step < 1:
                raise ValueError(f"weekday step in '{token}' must be at least 1")
            # A bare number with a step ("1/2") means "from 1 to the end", as in cron.
            numbers = range(first, (7 if span["step"] and span["last"] is None else last) + 1, step)
        else:
            parts.append(token)  # names ("mon-fri") and APScheduler's own forms pass through
            continue
        parts.extend(WEEKDAYS[(n - 1) % 7] for n in numbers)
    return ",".join(dict.fromkeys(parts))


def _matches_every_hour(trigger: CronTrigger) -> bool:
    hour = next(f for f in trigger.fields if f.name == "hour")
    return all(hour.get_next_value(datetime(2001, 1, 1, h)) == h for h in range(24))


def _is_second_pass(fire: datetime, zone: ZoneInfo) -> bool:
    """Whether ``fire`` is the second occurrence of a wall time repeated by a fall-back transition."""
    wall = fire.replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return False
    # A wall time in a spring-forward gap also has two offsets, but exists under neither.
    if first.astimezone(dt_timezone.utc).astimezone(zone).replace(tzinfo=None) != wall:
        return False
    return fire.timestamp() == second.timestamp()
