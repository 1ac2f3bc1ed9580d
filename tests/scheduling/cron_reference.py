"""A brute-force cron reference for the tests: slow, and simple enough to be obviously right.

It shares nothing with ``flowmasond.scheduling.cron``: expressions are built as data (``Expr``) and
rendered to text for the code under test, while the reference expands each field with ``range``
and checks every day, minute and second against the sets with cron's rules. A wall time's instants
are found by trying ``wall - offset`` for every offset the zone uses around that day and keeping
those whose local time reads back as ``wall`` (the inverse of what the code does); a skipped wall
time's change is found by stepping real instants minute by minute. Then the documented rule:

* a wall time seen at one instant fires there;
* seen at two instants (repeated): a fixed-time schedule fires at the first, a wildcard one at both;
* seen at none (skipped): a fixed-time schedule fires at the first instant whose wall time is later
  (the change), a wildcard one not at all.

Transitions are assumed to happen on whole minutes (checked while scanning), and no zone changes\nits offset twice within one hour.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
BOUNDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}


@dataclass(frozen=True)
class Part:
    """One comma-separated element of a field: ``*``, ``a``, ``a-b`` or ``a/step`` with an optional step."""

    kind: str  # "star", "one", "range", "from"
    first: int = 0
    last: int = 0
    step: int | None = None
    first_name: bool = False  # write ``first`` as a name (months, weekdays)
    last_name: bool = False


@dataclass(frozen=True)
class Expr:
    """A cron expression as data: one list of parts per field (``second`` None: 5-field form)."""

    second: tuple[Part, ...] | None
    minute: tuple[Part, ...]
    hour: tuple[Part, ...]
    dom: tuple[Part, ...]
    month: tuple[Part, ...]
    dow: tuple[Part, ...]
    macro: str | None = None  # written as this macro (``@daily``), which stands for the fields above

    @classmethod
    def numeric(cls, text: str) -> Expr:
        """A 5-field expression written with numbers only (``*``, ``a``, ``a-b``, each ``/step``), as data."""
        def field(raw: str) -> tuple[Part, ...]:
            out = []
            for item in raw.split(","):
                base, _, step = item.partition("/")
                step_value = int(step) if step else None
                if base == "*":
                    out.append(Part("star", step=step_value))
                elif "-" in base:
                    first, last = base.split("-")
                    out.append(Part("range", int(first), int(last), step=step_value))
                else:
                    out.append(Part("from" if step else "one", int(base), step=step_value))
            return tuple(out)
        minute, hour, dom, month, dow = (field(f) for f in text.split())
        return cls(None, minute, hour, dom, month, dow)

    def text(self) -> str:
        if self.macro is not None:
            return self.macro
        fields = [("minute", self.minute), ("hour", self.hour), ("dom", self.dom), ("month", self.month),
                  ("dow", self.dow)]
        if self.second is not None:
            fields.insert(0, ("second", self.second))
        return " ".join(",".join(_render(name, p) for p in parts) for name, parts in fields)

    def values(self, name: str) -> set[int]:
        parts = getattr(self, name)
        low, high = BOUNDS[name]
        out: set[int] = set()
        for p in parts if parts is not None else (Part("one", 0),):
            if p.kind == "star":
                out.update(range(low, high + 1, p.step or 1))
            elif p.kind == "one":
                out.add(p.first)
            elif p.kind == "range":
                last = 7 if name == "dow" and p.last == 0 and p.first > 0 else p.last  # fri-sun
                out.update(range(p.first, last + 1, p.step or 1))
            else:  # "from": a/step is a-max/step
                out.update(range(p.first, high + 1, p.step or 1))
        if name == "dow":
            out = {0 if v == 7 else v for v in out}
        return out

    def starts_with_star(self, name: str) -> bool:
        return getattr(self, name)[0].kind == "star"


def _name(field: str, value: int, as_name: bool) -> str:
    if as_name and field == "month":
        return MONTHS[value - 1]
    if as_name and field == "dow" and value < 7:
        return DAYS[value]
    return str(value)


def _render(field: str, p: Part) -> str:
    step = f"/{p.step}" if p.step is not None else ""
    if p.kind == "star":
        return "*" + step
    if p.kind == "one":
        return _name(field, p.first, p.first_name)
    if p.kind == "range":
        return f"{_name(field, p.first, p.first_name)}-{_name(field, p.last, p.last_name)}{step}"
    return f"{_name(field, p.first, p.first_name)}{step}"


class Reference:
    """Fire times of one expression in one zone, by brute force."""

    def __init__(self, expr: Expr, zone: str) -> None:
        self.zone = ZoneInfo(zone)
        self.seconds = expr.values("second")
        self.minutes, self.hours = expr.values("minute"), expr.values("hour")
        self.doms, self.months, self.dows = expr.values("dom"), expr.values("month"), expr.values("dow")
        self.either = not (expr.starts_with_star("dom") or expr.starts_with_star("dow"))
        self.wildcard = expr.starts_with_star("minute") or expr.starts_with_star("hour")

    def day_matches(self, d: date) -> bool:
        """Vixie cron's day rule: either day field when neither starts with '*', else both."""
        dom_ok = d.day in self.doms
        dow_ok = (d.isoweekday() % 7) in self.dows
        return d.month in self.months and ((dom_ok or dow_ok) if self.either else (dom_ok and dow_ok))

    def fires(self, after: float, count: int, horizon_days: int = 366 * 15) -> list[float]:
        """The first ``count`` fire times after ``after`` found within ``horizon_days`` local days."""
        first_day = datetime.fromtimestamp(after, self.zone).date() - timedelta(days=1)
        found: set[float] = set()  # skipped times of one interval share an instant
        stop_after: date | None = None
        for n in range(horizon_days):
            d = first_day + timedelta(days=n)
            if stop_after is not None and d > stop_after:
                break
            if not self.day_matches(d):
                continue
            found.update(t for t in self._fires_on(d) if t > after)
            if len(found) >= count and stop_after is None:
                # Instants of one day's wall times can interleave with the next day's (a repeated
                # interval across midnight), never with the day after that.
                stop_after = d + timedelta(days=1)
        return sorted(found)[:count]

    def fires_between(self, after: float, until: float) -> list[float]:
        """Every fire time in ``(after, until]``."""
        day = datetime.fromtimestamp(after, self.zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(until, self.zone).date() + timedelta(days=1)
        found: set[float] = set()
        while day <= last:
            if self.day_matches(day):
                found.update(t for t in self._fires_on(day) if after < t <= until)
            day += timedelta(days=1)
        return sorted(found)

    def _fires_on(self, d: date) -> list[float]:
        offsets = _offsets_in_use(self.zone, d)
        out: list[float] = []
        for hour in range(24):
            for minute in range(60):
                if hour not in self.hours or minute not in self.minutes:
                    continue
                wall = datetime(d.year, d.month, d.day, hour, minute)
                instants = self._instants_of(wall, offsets)
                if len(instants) == 1:
                    picked = instants
                elif len(instants) == 2:
                    picked = instants if self.wildcard else instants[:1]
                else:  # skipped by a change of offset
                    picked = [] if self.wildcard else [self._first_instant_later_than(wall, offsets)]
                for base in picked:
                    if not instants:  # a skipped minute fires once at the change, whatever its seconds
                        out.append(base)
                        continue
                    out.extend(base + s for s in range(60) if s in self.seconds)
        return out

    def _instants_of(self, wall: datetime, offsets: tuple[float, ...]) -> list[float]:
        """The instants whose local wall time is ``wall``: each is ``wall - offset`` for an offset in use."""
        seconds = (wall - _EPOCH).total_seconds()
        return sorted({seconds - o for o in offsets if self._wall_of(seconds - o) == wall})

    def _wall_of(self, instant: float) -> datetime:
        local = datetime.fromtimestamp(instant, self.zone)
        offset = local.utcoffset()
        assert offset is not None and offset.total_seconds() % 60 == 0, "transition off a whole minute"
        return local.replace(tzinfo=None, fold=0)

    def _first_instant_later_than(self, wall: datetime, offsets: tuple[float, ...]) -> float:
        """The first instant (whole minutes) whose wall time is later than ``wall``: the change."""
        instant = (wall - _EPOCH).total_seconds() - max(offsets)  # its wall time is at most ``wall``
        instant -= instant % 60
        while self._wall_of(instant) <= wall:
            instant += 60
        return instant


@functools.lru_cache(maxsize=4096)
def _offsets_in_use(zone: ZoneInfo, d: date) -> tuple[float, ...]:
    """Every UTC offset the zone uses within a day either side of ``d`` (read every 30 minutes)."""
    middle = datetime(d.year, d.month, d.day, 12, tzinfo=timezone.utc).timestamp()
    found = set()
    for k in range(-4 * 48, 4 * 48):
        offset = datetime.fromtimestamp(middle + 1800 * k, zone).utcoffset()
        assert offset is not None
        found.add(offset.total_seconds())
    return tuple(sorted(found))


_EPOCH = datetime(1970, 1, 1)

