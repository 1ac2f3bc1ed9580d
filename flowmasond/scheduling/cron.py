"""Cron expressions and their fire times, computed in local wall-clock time and mapped with ``zoneinfo``.

Syntax is cron's (Vixie cron / cronie): 5 fields ``minute hour day-of-month month day-of-week``, or
6 with a seconds field first (as in node-cron and Windmill), or a macro (``@yearly``, ``@annually``,
``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``). A field is a comma list of
``*``, ``N``, ``A-B``, each with an optional ``/step``; months and weekdays also take three-letter
names (``jan``..``dec``, ``sun``..``sat``, any case) wherever a number goes. Weekday 0 and 7 are
Sunday; a weekday range ending in Sunday may be written ``fri-sun`` (5-0 is read 5-7, as cronie
does; Vixie cron refuses it). ``N/step`` means ``N-max/step``, and ``?`` in either day field means
``*`` (extensions that cron refuses; Quartz and croniter accept them). cronie's random ``~`` is not
supported.

Day rule (Vixie cron's, unchanged in cronie): when the day-of-month or the day-of-week field starts
with ``*`` (``*``, ``*/2``) a day must match both fields; when neither does, either one is enough
(``0 9 13 * fri``: every Friday and every 13th).

Daylight-saving time. Fire times are wall-clock times in the schedule's zone. A schedule whose
minute or hour field starts with ``*`` is a *wildcard* schedule (cronie's MIN_STAR/HR_STAR); any
other is a *fixed-time* schedule. Then:

* Skipped wall times (spring forward: 02:00-02:59 in New York, 00:00-00:59 in Santiago): a
  fixed-time schedule fires once at the instant of the change (03:00 EDT) for all of its times in
  the skipped interval together; a wildcard schedule does not fire for times that do not exist.
* Repeated wall times (fall back: 01:00-01:59 twice in New York): a fixed-time schedule fires on
  the first pass only; a wildcard schedule fires on both passes (it follows real time).

That is Vixie cron's behaviour for the system time zone (vixie/cron and cronie ``cron.c``: the
"DST begins" and "DST ends" cases of the clock-jump handling) with two differences: cron runs each
skipped fixed time separately right after the change (``11,15 2 * * *`` runs twice at about 03:00),
flowmasond runs such a schedule once per skipped interval, because a fire is identified by its
instant; and cron applies its rule only to jumps of 5 minutes to 3 hours of the system clock
(cronie's source warns that ``CRON_TZ`` jobs may be missed or repeated at DST changes), while here
it applies to every change of each schedule's own zone.
"""

from __future__ import annotations

import calendar
import math
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Windows (seconds back from "now") tried in turn when looking for the latest missed fires: the
# first holding enough fires wins, so a once-a-second schedule after a week of downtime costs a
# few steps, not 600,000.
_LOOKBACK_S = (2.0, 120.0, 7200.0, 2 * 86400.0, 62 * 86400.0, 800 * 86400.0)
# The Gregorian calendar repeats every 400 years, so a date search that finds nothing in 400 years
# never will. Parsing refuses expressions with no valid date, so the search ends far sooner: the
# longest real wait is a 29 February on a given weekday (up to 40 years, across 2100).
_HORIZON_YEARS = 401
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


_FIELDS = (_Field("second", 0, 59), _Field("minute", 0, 59), _Field("hour", 0, 23),
           _Field("day of month", 1, 31), _Field("month", 1, 12, MONTH_NAMES),
           _Field("day of week", 0, 7, WEEKDAY_NAMES))


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression in an IANA time zone; times in and out are Unix epoch seconds."""

    expression: str
    timezone: str
    zone: ZoneInfo
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    either_day: bool  # neither day field starts with '*': a day matches when either field does
    wildcard: bool  # minute or hour field starts with '*': follows real time across DST changes
    _day_mask: int  # bit d set: day of month d is listed
    _weekday_masks: tuple[int, ...]  # [weekday of the 1st] -> bit d set: day d is a listed weekday

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Parse ``expression``; raises ``ValueError`` with a readable reason."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{timezone}'") from None
        text = expression.strip()
        if text.startswith("@"):
            if text.lower() not in MACROS:
                raise ValueError(f"unknown macro '{text}' (known: {', '.join(MACROS)})")
            text = MACROS[text.lower()]
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        elif len(fields) != 6:
            raise ValueError(f"expected 5 fields (minute hour day month weekday) or 6 (second first), "
                             f"got {len(fields)}")
        fields[3] = "*" if fields[3] == "?" else fields[3]
        fields[5] = "*" if fields[5] == "?" else fields[5]
        parsed = (_parse_field(f, spec) for f, spec in zip(fields, _FIELDS, strict=True))
        second, minute, hour, day, month, weekday = parsed
        weekday = {0 if d == 7 else d for d in weekday}
        day_mask = sum(1 << d for d in day)
        weekday_masks = tuple(sum(1 << d for d in range(1, 32) if (first + d - 1) % 7 in weekday)
                              for first in range(7))
        either_day = not (fields[3].startswith("*") or fields[5].startswith("*"))
        if not either_day and not any(d <= _longest_month(m) for m in month for d in day):
            # Every valid (month, day) falls on every weekday within 400 years: only this can never match.
            raise ValueError("it never fires (no date matches it)")
        return cls(expression=expression, timezone=timezone, zone=zone, seconds=tuple(sorted(second)),
                   minutes=tuple(sorted(minute)), hours=tuple(sorted(hour)), days=frozenset(day),
                   months=tuple(sorted(month)), weekdays=frozenset(weekday), either_day=either_day,
                   wildcard=fields[1].startswith("*") or fields[2].startswith("*"),
                   _day_mask=day_mask, _weekday_masks=weekday_masks)

    # -- fire times -----------------------------------------------------------------------------
    def next_after(self, after: float) -> float | None:
        """The first fire time strictly after ``after`` (None: the expression never fires again).

        The one source of fire times: the scheduler's displayed next fire, its due fires and its
        catch-up all come from here. Fire times are whole seconds.
        """
        s = math.floor(after) + 1  # the first whole second after ``after``
        local = datetime.fromtimestamp(s, self.zone)
        wall = local.replace(tzinfo=None)
        start = wall
        extra: float | None = None  # a second-pass fire of a wildcard schedule, if earlier
        off0, off1 = self._offsets(wall)
        if off0 > off1:  # ``s`` is inside a repeated interval (first or second pass)
            change = self._transition(_wall_seconds(wall) - off0, _wall_seconds(wall) - off1)
            fold_start, fold_end = _wall(change + off1), _wall(change + off0)
            if local.fold:
                start = fold_end  # every first-pass time of this interval is already past
            if self.wildcard:
                found = self._next_wall(wall if local.fold else fold_start)
                if found is not None and found < fold_end:
                    extra = float(_wall_seconds(found) - off1)
        elif not self.wildcard:
            before = datetime.fromtimestamp(s - 1, self.zone).replace(tzinfo=None)
            if wall - before > _SECOND:  # an interval was skipped just before ``s``
                found = self._next_wall(before + _SECOND)
                if found is not None and found < wall:
                    return float(s)  # its skipped times fire at the change, which is ``s``
        first = self._first_pass(start)
        if first is None or (extra is not None and extra < first):
            return extra
        return first

    def upcoming(self, after: float, count: int) -> list[float]:
        """The next ``count`` fire times after ``after`` (fewer if the expression stops firing)."""
        out: list[float] = []
        cursor = after
        while len(out) < count:
            found = self.next_after(cursor)
            if found is None:
                break
            out.append(found)
            cursor = found
        return out

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
            cursor = start
            while (following := self.next_after(cursor)) is not None and following <= until:
                dropped = dropped or len(found) == limit
                found.append(following)
                cursor = following
            if len(found) == limit or start == after:
                if start > after and not dropped:
                    first = self.next_after(after)
                    dropped = first is not None and first <= start
                return list(found), dropped
        return [], False  # unreachable: the last window starts at ``after``

    def due_fires(self, first: float, until: float, limit: int) -> tuple[list[float], bool]:
        """Up to ``limit`` latest fire times in ``[first, until]``, where ``first`` is a known fire time.

        ``first`` (the next fire the scheduler showed) is always among the candidates, so a shown
        fire is either returned or reported as left out (flag True), never lost.
        """
        later, dropped = self.latest_fires(first, until, limit)
        if first > until:
            return later, dropped
        if len(later) < limit:
            return [first, *later], dropped
        return later, True

    def describe(self, ts: float) -> str:
        """``ts`` as an ISO time with its UTC offset in the schedule's zone (for logs and listings)."""
        return datetime.fromtimestamp(ts, self.zone).isoformat()

    # -- wall-clock search ----------------------------------------------------------------------
    def _first_pass(self, start: datetime) -> float | None:
        """The earliest instant of the first matching wall time at or after ``start`` (first pass)."""
        cursor = start
        while (wall := self._next_wall(cursor)) is not None:
            off0, off1 = self._offsets(wall)
            seconds = _wall_seconds(wall)
            if off0 >= off1:  # exists once, or twice and this is the first pass
                return float(seconds - off0)
            change = self._transition(seconds - off1, seconds - off0)  # ``wall`` was skipped
            if not self.wildcard:
                return float(change)
            cursor = _wall(change + off1)  # a wildcard schedule resumes where the clock resumes
        return None

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first wall time at or after ``start`` (naive, whole seconds) that the fields match."""
        cursor = start.date()
        clock = (start.hour, start.minute, start.second)
        while (day := self._next_day(cursor)) is not None:
            found = self._first_time(clock if day == start.date() else (0, 0, 0))
            if found is not None:
                return datetime(day.year, day.month, day.day, *found)
            if day == date.max:
                return None
            cursor = day + timedelta(days=1)
        return None

    def _first_time(self, clock: tuple[int, int, int]) -> tuple[int, int, int] | None:
        """The first listed time of day at or after ``clock`` (hour, minute, second)."""
        hour, minute, second = clock
        hi = bisect_left(self.hours, hour)
        while hi < len(self.hours):
            h = self.hours[hi]
            mi = bisect_left(self.minutes, minute if h == hour else 0)
            while mi < len(self.minutes):
                m = self.minutes[mi]
                si = bisect_left(self.seconds, second if (h, m) == (hour, minute) else 0)
                if si < len(self.seconds):
                    return h, m, self.seconds[si]
                mi += 1
            hi += 1
        return None

    def _next_day(self, start: date) -> date | None:
        """The first day at or after ``start`` that the month and day rules match."""
        for year in range(start.year, min(start.year + _HORIZON_YEARS, date.max.year + 1)):
            for month in self.months:
                if (year, month) < (start.year, start.month):
                    continue
                first_weekday, length = _month_shape(year, month)
                valid = (1 << (length + 1)) - 2
                weekday_mask = self._weekday_masks[first_weekday]
                if self.either_day:
                    mask = (self._day_mask | weekday_mask) & valid
                else:
                    mask = self._day_mask & weekday_mask & valid
                if (year, month) == (start.year, start.month):
                    mask &= ~((1 << start.day) - 1)
                if mask:
                    return date(year, month, (mask & -mask).bit_length() - 1)
        return None

    # -- zone -----------------------------------------------------------------------------------
    def _offsets(self, wall: datetime) -> tuple[int, int]:
        """UTC offsets (seconds) of ``wall`` read before and after a change: equal unless skipped or repeated."""
        first = wall.replace(tzinfo=self.zone, fold=0).utcoffset()
        second = wall.replace(tzinfo=self.zone, fold=1).utcoffset()
        assert first is not None and second is not None
        return int(first.total_seconds()), int(second.total_seconds())

    def _offset_at(self, instant: int) -> timedelta | None:
        return datetime.fromtimestamp(instant, self.zone).utcoffset()

    def _transition(self, low: int, high: int) -> int:
        """The instant in ``(low, high]`` at which the zone's offset changes (a window holding one change)."""
        before = self._offset_at(low)
        while high - low > 1:
            middle = (low + high) // 2
            if self._offset_at(middle) == before:
                low = middle
            else:
                high = middle
        return high


def cron_problem(expression: str, timezone: str = "UTC") -> str | None:
    """Why ``expression`` cannot be scheduled (it does not parse, or never fires), or None."""
    try:
        schedule = CronSchedule.parse(expression, timezone)
    except ValueError as exc:
        return str(exc)
    if schedule.next_after(time.time()) is None:
        return "it never fires (no date matches it)"
    return None


def _parse_field(text: str, spec: _Field) -> set[int]:
    """The values one cron field lists; ``ValueError`` names the field and the bad part."""
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"{spec.name}: step in '{part}' must be a whole number of at least 1")
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, spec, part), _value(last, spec, part)
            if spec.names is WEEKDAY_NAMES and high == 0 and low > 0:
                high = 7  # 'fri-sun' is 5-0: cronie reads it as 5-7
            if low > high:
                raise ValueError(f"{spec.name}: range '{part}' runs backwards")
        else:
            low = _value(base, spec, part)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return values


def _value(token: str, spec: _Field, part: str) -> int:
    lowered = token.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + (1 if spec.names is MONTH_NAMES else 0)
    if not token.isdigit():
        hint = f" (or {spec.names[0]}-{spec.names[-1]})" if spec.names else ""
        raise ValueError(f"{spec.name}: '{token or part}' is not a number {spec.low}-{spec.high}{hint}")
    number = int(token)
    if not spec.low <= number <= spec.high:
        sunday = " (0 and 7 are Sunday)" if spec.names is WEEKDAY_NAMES else ""
        raise ValueError(f"{spec.name}: {number} is out of range {spec.low}-{spec.high}{sunday}")
    return number


def _longest_month(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


@lru_cache(maxsize=4096)
def _month_shape(year: int, month: int) -> tuple[int, int]:
    """(weekday of the 1st with 0 = Sunday, number of days)."""
    monday_first, length = calendar.monthrange(year, month)
    return (monday_first + 1) % 7, length


def _wall_seconds(wall: datetime) -> int:
    return (wall - _EPOCH) // _SECOND


def _wall(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)
