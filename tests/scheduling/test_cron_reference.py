"""Next-fire times equal a brute-force reference on generated expressions, zones and DST changes.

Expressions come from a hypothesis strategy (names, ranges, steps on ranges and names, lists, 7 for
Sunday, 5 and 6 fields); zones are the six named in issue 12 plus any IANA zone; start times sit
within two days of a UTC-offset change between 2025 and 2027. The CI profile compares a few
thousand fire times in about a minute; ``--slow`` runs ten times as many.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from cron_reference import BOUNDS, Expr, Part, Reference
from flowmasond.scheduling.cron import CronSchedule

NAMED_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "America/Havana",
               "Asia/Beirut")
ALL_ZONES = tuple(sorted(z for z in available_timezones() if "/" in z or z == "UTC"))
FIRES_PER_CASE = 3
CI_EXAMPLES = 1500
SLOW_EXAMPLES = 15000
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.lru_cache(maxsize=None)
def offset_changes(zone: str) -> tuple[float, ...]:
    """Instants (UTC, whole minutes) where the zone's UTC offset changes in 2025-2027."""
    tz = ZoneInfo(zone)
    start = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
    end = datetime(2028, 1, 1, tzinfo=timezone.utc).timestamp()
    changes: list[float] = []
    previous = datetime.fromtimestamp(start, tz).utcoffset()
    t = start
    while t < end:
        t += 6 * 3600
        current = datetime.fromtimestamp(t, tz).utcoffset()
        if current != previous:
            low, high = t - 6 * 3600, t
            while high - low > 60:
                middle = low + (high - low) // 120 * 60
                if datetime.fromtimestamp(middle, tz).utcoffset() == previous:
                    low = middle
                else:
                    high = middle
            changes.append(high)
            previous = current
    return tuple(changes)


# -- expressions ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def parts(field: str, hot: tuple[int, ...] = ()) -> st.SearchStrategy[tuple[Part, ...]]:
    """A field as a list of 1-3 parts; ``hot`` values (the hours of a change) are drawn more often.

    Day fields start with '*' half of the time, so that the day of a change is often a fire day.
    """
    low, high = BOUNDS[field]
    named = field in ("month", "dow")
    value = st.integers(low, high) if not hot else st.one_of(st.sampled_from(hot), st.integers(low, high))
    step = st.none() | st.integers(1, high - low + 2)

    @st.composite
    def part(draw: st.DrawFn) -> Part:
        kind = draw(st.sampled_from(("star", "one", "one", "range", "range", "from")))
        if kind == "star":
            return Part("star", step=draw(step))
        first = draw(value)
        first_name = named and draw(st.booleans())
        if kind == "one":
            return Part("one", first, first_name=first_name)
        if kind == "from":
            return Part("from", first, step=draw(st.integers(1, high - low + 1)))
        last = draw(st.integers(first, high))
        if field == "dow" and first > 0 and draw(st.integers(0, 5)) == 0:
            last = 0  # 'fri-sun': cronie reads x-0 as x-7
        return Part("range", first, last, step=draw(step), first_name=first_name,
                    last_name=named and draw(st.booleans()))

    first = st.one_of(st.just(Part("star")), part()) if field in ("dom", "month", "dow") else part()
    return st.tuples(first, st.lists(part(), max_size=2)).map(_flatten)


def _flatten(drawn: tuple[Part, list[Part]]) -> tuple[Part, ...]:
    return (drawn[0], *drawn[1])


STAR, ZERO = (Part("star"),), (Part("one", 0),)
MACROS = [Expr(None, ZERO, ZERO, (Part("one", 1),), (Part("one", 1),), STAR, macro="@yearly"),
          Expr(None, ZERO, ZERO, (Part("one", 1),), (Part("one", 1),), STAR, macro="@annually"),
          Expr(None, ZERO, ZERO, (Part("one", 1),), STAR, STAR, macro="@monthly"),
          Expr(None, ZERO, ZERO, STAR, STAR, ZERO, macro="@weekly"),
          Expr(None, ZERO, ZERO, STAR, STAR, STAR, macro="@daily"),
          Expr(None, ZERO, ZERO, STAR, STAR, STAR, macro="@midnight"),
          Expr(None, ZERO, STAR, STAR, STAR, STAR, macro="@hourly")]


@st.composite
def expressions(draw: st.DrawFn, hot_hours: tuple[int, ...]) -> Expr:
    """Cron expressions in the 5-field form, or 6 with seconds first, now and then a macro."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(MACROS))
    seconds = draw(st.none() | st.none() | parts("second", hot=(0, 30, 59)))
    return Expr(second=seconds,
                minute=draw(parts("minute", hot=(0, 15, 30, 45, 59))),
                hour=draw(parts("hour", hot=hot_hours)),
                dom=draw(parts("dom")),
                month=draw(parts("month")),
                dow=draw(parts("dow")))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Expr, str, float]:
    """An expression, a zone, and a start time within two days of one of the zone's offset changes
    in 2025-2027; the expression's hours lean towards the local hours around that change."""
    zone = draw(ZONES)
    changes = offset_changes(zone)
    if changes:
        base = draw(st.sampled_from(changes))
        shift = draw(st.one_of(st.integers(-3 * 3600, 3600), st.integers(-2 * 86400, 2 * 86400)))
        tz = ZoneInfo(zone)
        around = {datetime.fromtimestamp(base + d, tz).hour for d in (-3600, -1, 0, 3600)}
        hot = tuple(sorted(around | {0, 23}))
    else:
        base, shift = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp(), draw(st.integers(0, 3 * 365 * 86400))
        hot = (0, 1, 2, 3, 23)
    fraction = draw(st.sampled_from((0.0, 0.0, -0.001, 0.5)))
    return draw(expressions(hot)), zone, base + shift + fraction


ZONES = st.one_of(st.sampled_from(NAMED_ZONES), st.sampled_from(NAMED_ZONES), st.sampled_from(ALL_ZONES))


def check(expr: Expr, zone: str, after: float) -> None:
    """The code's next fire times equal the reference's (or both say it never fires)."""
    reference = Reference(expr, zone)
    expected = reference.fires(after, FIRES_PER_CASE)
    tz = ZoneInfo(zone)
    for t in expected if currently_in_test_context() else ():  # --hypothesis-show-statistics
        local = datetime.fromtimestamp(t, tz)
        if datetime.fromtimestamp(t - 1, tz).utcoffset() != local.utcoffset():
            event("a fire at the instant of an offset change")
        elif local.fold:
            event("a fire on the second pass of a repeated time")
        elif local.replace(fold=1).utcoffset() != local.utcoffset():
            event("a fire on the first pass of a repeated time")
    try:
        schedule = CronSchedule.parse(expr.text(), zone)
    except ValueError as exc:
        assert "never fires" in str(exc) and expected == [], (expr.text(), str(exc))
        return
    got = schedule.upcoming(after, FIRES_PER_CASE)
    if len(expected) < FIRES_PER_CASE:  # the reference looks 15 years ahead: compare 14
        horizon = after + 14 * 365 * 86400
        got, expected = [t for t in got if t <= horizon], [t for t in expected if t <= horizon]
    describe = [datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat() for t in expected]
    assert got == expected, (expr.text(), zone, datetime.fromtimestamp(after, ZoneInfo(zone)).isoformat(),
                             describe, [schedule.describe(t) for t in got])
    assert all(t == math.floor(t) for t in got)


REGRESSIONS = [
    # '@daily' around the spring change in Berlin, New York and Lord Howe.
    (Expr(None, (Part("one", 0),), (Part("one", 0),), (Part("star"),), (Part("star"),), (Part("star"),)),
     "Europe/Berlin", datetime(2025, 3, 29, 12, tzinfo=timezone.utc).timestamp()),
    (Expr(None, (Part("one", 0),), (Part("one", 0),), (Part("star"),), (Part("star"),), (Part("star"),)),
     "Australia/Lord_Howe", datetime(2025, 10, 4, 12, tzinfo=timezone.utc).timestamp()),
    # Two times in New York's skipped hour.
    (Expr(None, (Part("one", 11), Part("one", 15)), (Part("one", 2),), (Part("star"),), (Part("star"),),
          (Part("star"),)), "America/New_York", datetime(2025, 3, 9, 6, 59, tzinfo=timezone.utc).timestamp()),
    # A wildcard schedule inside Havana's repeated hour (the change is at 01:00 -> 00:00).
    (Expr(None, (Part("star", step=20),), (Part("one", 0),), (Part("star"),), (Part("star"),), (Part("star"),)),
     "America/Havana", datetime(2025, 11, 2, 4, 30, tzinfo=timezone.utc).timestamp()),
]


@pytest.mark.parametrize(("expr", "zone", "after"), REGRESSIONS)
def test_known_cases_match_the_reference(expr: Expr, zone: str, after: float) -> None:
    """Hand-named cases from issue 12 (and shrunk failures) agree with the reference."""
    check(expr, zone, after)


@settings(max_examples=CI_EXAMPLES, **COMMON)
@given(cases())
def test_next_fires_equal_the_brute_force_reference(case: tuple[Expr, str, float]) -> None:
    """For any expression, zone and start near a DST change, the next three fires equal the reference's."""
    check(*case)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **COMMON)
@given(cases())
def test_next_fires_equal_the_brute_force_reference_at_length(case: tuple[Expr, str, float]) -> None:
    """The same comparison on ten times as many cases (``--slow``)."""
    check(*case)


@st.composite
def catch_up_cases(draw: st.DrawFn) -> tuple[Expr, str, float, float, int]:
    """A 5-field case, a window of up to two days after its start, and a catch-up limit."""
    expr, zone, after = draw(cases())
    if expr.second is not None:
        expr = Expr(None, expr.minute, expr.hour, expr.dom, expr.month, expr.dow)
    return expr, zone, after, after + draw(st.integers(0, 2 * 86400)), draw(st.integers(1, 5))


@settings(max_examples=CI_EXAMPLES // 5, **COMMON)
@given(catch_up_cases())
def test_latest_missed_fires_equal_the_reference(case: tuple[Expr, str, float, float, int]) -> None:
    """latest_fires(after, until, limit), used for catch-up, is the reference's last ``limit`` fires in the window."""
    expr, zone, after, until, limit = case
    try:
        schedule = CronSchedule.parse(expr.text(), zone)
    except ValueError:
        return  # never fires: covered by the comparison above
    window = Reference(expr, zone).fires_between(after, until)
    assert schedule.latest_fires(after, until, limit) == (window[-limit:], len(window) > limit), expr.text()
