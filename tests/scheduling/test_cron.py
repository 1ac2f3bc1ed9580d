"""Cron expressions: standard 5-field semantics, a seconds field, and DST in two zones."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from flowmasond.pipelines.validation import validate_pipeline
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.scheduling.cron import CronSchedule, cron_problem


def fires(expression: str, zone: str, start: tuple[int, ...], count: int) -> list[str]:
    """The next ``count`` fire times after the wall time ``start`` in ``zone``, as local ISO strings."""
    schedule = CronSchedule.parse(expression, zone)
    tz = ZoneInfo(zone)
    cursor = datetime(*start, tzinfo=tz).timestamp()
    out = []
    for _ in range(count):
        nxt = schedule.next_after(cursor)
        assert nxt is not None
        out.append(datetime.fromtimestamp(nxt, tz).isoformat())
        cursor = nxt
    return out


# -- syntax ---------------------------------------------------------------------------------------
def test_five_fields_are_minute_hour_day_month_weekday() -> None:
    """'15 9 * * *' fires daily at 09:15:00."""
    assert fires("15 9 * * *", "UTC", (2024, 1, 1), 2) == ["2024-01-01T09:15:00+00:00", "2024-01-02T09:15:00+00:00"]


def test_six_fields_start_with_seconds() -> None:
    """'*/20 * * * * *' fires every 20 seconds."""
    assert fires("*/20 * * * * *", "UTC", (2024, 1, 1), 3) == [
        "2024-01-01T00:00:20+00:00", "2024-01-01T00:00:40+00:00", "2024-01-01T00:01:00+00:00"]


def test_weekday_zero_and_seven_are_sunday() -> None:
    """Cron's weekday 0 and 7 both mean Sunday."""
    # 2024-01-01 is a Monday; the next Sunday is the 7th.
    assert fires("0 9 * * 0", "UTC", (2024, 1, 1), 1) == ["2024-01-07T09:00:00+00:00"]
    assert fires("0 9 * * 7", "UTC", (2024, 1, 1), 1) == ["2024-01-07T09:00:00+00:00"]


def test_weekday_ranges_and_steps_use_cron_numbering() -> None:
    """'1-5' is Monday to Friday and '*/2' is Sunday, Tuesday, Thursday, Saturday."""
    assert fires("0 9 * * 1-5", "UTC", (2024, 1, 5, 10), 2) == ["2024-01-08T09:00:00+00:00",
                                                                "2024-01-09T09:00:00+00:00"]
    assert fires("0 9 * * */2", "UTC", (2024, 1, 1, 10), 4) == [
        "2024-01-02T09:00:00+00:00", "2024-01-04T09:00:00+00:00", "2024-01-06T09:00:00+00:00",
        "2024-01-07T09:00:00+00:00"]


def test_day_of_month_or_weekday_when_both_are_restricted() -> None:
    """'0 9 13 * 5' fires on every Friday and on the 13th, as cron does (either field matching)."""
    assert fires("0 9 13 * 5", "UTC", (2024, 1, 1), 4) == [
        "2024-01-05T09:00:00+00:00", "2024-01-12T09:00:00+00:00", "2024-01-13T09:00:00+00:00",
        "2024-01-19T09:00:00+00:00"]


def test_macros_are_accepted() -> None:
    """'@daily' is midnight every day and '@hourly' the top of every hour."""
    assert fires("@daily", "UTC", (2024, 1, 1, 5), 1) == ["2024-01-02T00:00:00+00:00"]
    assert fires("@hourly", "UTC", (2024, 1, 1, 5, 10), 1) == ["2024-01-01T06:00:00+00:00"]


@pytest.mark.parametrize(("expression", "reason"), [
    ("* * *", "expected 5 fields"),
    ("61 * * * *", "minute: 61 is out of range 0-59"),
    ("* * * * 8", "day of week: 8 is out of range 0-7"),
    ("0 9 * * fri-mon", "runs backwards"),
    ("0 9 * * 1/0", "at least 1"),
    ("0 9 * foo *", "month: 'foo' is not a number"),
    ("* * * * 8", "out of range"),
    ("0 0 30 2 *", "never fires"),
])
def test_bad_expressions_are_explained(expression: str, reason: str) -> None:
    """Each unusable expression is refused with the reason in words."""
    problem = cron_problem(expression)
    assert problem is not None and reason in problem


def test_bad_cron_is_a_validation_issue_on_the_schedule_field() -> None:
    """A pipeline whose schedule has a bad cron fails validation on field schedules.<i>.cron."""
    config = PipelineConfig.model_validate({
        "id": "p", "stages": [{"id": "a", "component_type": "logger", "config": {"message": "x"}}],
        "schedules": [{"id": "ok", "cron": "0 2 * * *"}, {"id": "bad", "cron": "0 25 * * *"}]})
    [issue] = validate_pipeline(config, ComponentRegistry.with_builtins(), "p.pipeline.json")
    assert (issue.file, issue.stage, issue.field) == ("p.pipeline.json", None, "schedules.1.cron")
    assert "'bad'" in issue.message


def test_latest_missed_fires_are_found_without_walking_the_whole_downtime() -> None:
    """The three latest of a week of once-a-second fires come back, flagged as leaving older ones out."""
    schedule = CronSchedule.parse("* * * * * *")
    now = 1_700_000_000.0
    # Walking all 604,800 fires would take ~20 s; the look-back windows make it a few steps.
    fires_, older = schedule.latest_fires(now - 7 * 86400, now, 3)
    assert (fires_, older) == ([now - 2, now - 1, now], True)


# -- DST ------------------------------------------------------------------------------------------
def test_new_york_spring_forward_runs_a_job_in_the_skipped_hour_once_at_the_change() -> None:
    """02:30 does not exist on 2024-03-10 in New York: the job runs once, at the change (03:00 EDT)."""
    assert fires("30 2 * * *", "America/New_York", (2024, 3, 9, 12), 3) == [
        "2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00"]


def test_several_skipped_times_of_one_schedule_fire_once_together() -> None:
    """'11,15 2 * * *' on New York's spring-forward day fires once at 03:00 EDT, then both times next day."""
    assert fires("11,15 2 * * *", "America/New_York", (2024, 3, 9, 12), 3) == [
        "2024-03-10T03:00:00-04:00", "2024-03-11T02:11:00-04:00", "2024-03-11T02:15:00-04:00"]


def test_wildcard_job_does_not_fire_for_skipped_times() -> None:
    """'*/20 2 * * *' (minute starts with '*') follows real time: nothing on the spring-forward day."""
    assert fires("*/20 2 * * *", "America/New_York", (2024, 3, 9, 12), 1) == ["2024-03-11T02:00:00-04:00"]


def test_new_york_fall_back_runs_a_job_in_the_repeated_hour_once() -> None:
    """01:30 happens twice on 2024-11-03 in New York: the job runs on the first pass (EDT) only."""
    assert fires("30 1 * * *", "America/New_York", (2024, 11, 2, 12), 3) == [
        "2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00", "2024-11-05T01:30:00-05:00"]


def test_berlin_spring_forward_runs_a_job_in_the_skipped_hour_once() -> None:
    """02:30 does not exist on 2024-03-31 in Berlin: the job runs once, at the change (03:00 CEST)."""
    assert fires("30 2 * * *", "Europe/Berlin", (2024, 3, 30, 12), 2) == [
        "2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]


def test_berlin_fall_back_runs_a_job_in_the_repeated_hour_once() -> None:
    """02:30 happens twice on 2024-10-27 in Berlin: the job runs once (CEST), then next day in CET."""
    assert fires("30 2 * * *", "Europe/Berlin", (2024, 10, 26, 12), 2) == [
        "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]


def test_fixed_time_job_runs_each_slot_of_the_repeated_hour_once() -> None:
    """'0,20,40 1 * * *' on New York's fall-back day fires 01:00, 01:20, 01:40 once each (first pass)."""
    assert fires("0,20,40 1 * * *", "America/New_York", (2024, 11, 3), 4) == [
        "2024-11-03T01:00:00-04:00", "2024-11-03T01:20:00-04:00", "2024-11-03T01:40:00-04:00",
        "2024-11-04T01:00:00-05:00"]


def test_wildcard_job_runs_on_both_passes_of_the_repeated_hour() -> None:
    """'*/20 1 * * *' (minute starts with '*') follows real time: both passes of 01:xx, as cronie does."""
    assert fires("*/20 1 * * *", "America/New_York", (2024, 11, 3), 7) == [
        "2024-11-03T01:00:00-04:00", "2024-11-03T01:20:00-04:00", "2024-11-03T01:40:00-04:00",
        "2024-11-03T01:00:00-05:00", "2024-11-03T01:20:00-05:00", "2024-11-03T01:40:00-05:00",
        "2024-11-04T01:00:00-05:00"]


def test_hourly_job_keeps_every_real_hour_across_both_transitions() -> None:
    """An hourly job fires every real hour: twice in the repeated hour, and never twice at one instant."""
    assert fires("30 * * * *", "America/New_York", (2024, 11, 3, 0, 45), 3) == [
        "2024-11-03T01:30:00-04:00", "2024-11-03T01:30:00-05:00", "2024-11-03T02:30:00-05:00"]
    assert fires("30 * * * *", "Europe/Berlin", (2024, 3, 31, 0, 45), 3) == [
        "2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-03-31T04:30:00+02:00"]


def test_daily_job_keeps_every_day_across_the_changes() -> None:
    """'@daily' in Berlin fires on the Sunday of the spring change and on the Monday after it."""
    assert fires("@daily", "Europe/Berlin", (2025, 3, 29, 12), 3) == [
        "2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00", "2025-04-01T00:00:00+02:00"]


def test_daily_job_where_midnight_is_skipped_fires_at_the_change() -> None:
    """Santiago skips 00:00-00:59 on 2025-09-07: '@daily' fires at 01:00 -03, the instant of the change."""
    assert fires("@daily", "America/Santiago", (2025, 9, 6, 12), 2) == [
        "2025-09-07T01:00:00-03:00", "2025-09-08T00:00:00-03:00"]


@pytest.mark.parametrize(("zone", "start", "expected"), [
    ("America/Havana", (2025, 3, 8, 12), ["2025-03-09T01:00:00-04:00", "2025-03-10T00:00:00-04:00"]),
    ("Asia/Beirut", (2025, 3, 29, 12), ["2025-03-30T01:00:00+03:00", "2025-03-31T00:00:00+03:00"]),
])
def test_daily_job_on_a_midnight_change_day_runs_once_that_day(zone: str, start: tuple[int, ...],
                                                              expected: list[str]) -> None:
    """Havana and Beirut skip 00:00-00:59 on their spring change: '@daily' fires at the change, then daily."""
    assert fires("@daily", zone, start, 2) == expected


# -- parser ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "days"), [
    ("mon-fri/2", ["Mon", "Wed", "Fri"]),
    ("mon-7", ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]),
    ("sun-thu", ["Sun", "Mon", "Tue", "Wed", "Thu"]),
    ("1-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("5-7/3", ["Fri"]),  # 8 is past the end
    ("fri-sun", ["Sun", "Fri", "Sat"]),  # cronie reads 5-0 as 5-7
])
def test_weekday_names_ranges_and_steps(field: str, days: list[str]) -> None:
    """Weekday ranges mix names and numbers, take steps, and 7 is Sunday (the week from Sun 2025-01-05)."""
    got = fires(f"0 9 * * {field}", "UTC", (2025, 1, 5), 7)
    week = [datetime.fromisoformat(d) for d in got if d < "2025-01-12"]
    assert [d.strftime("%a") for d in week] == days


def test_month_names_take_steps() -> None:
    """'jan-dec/3' is January, April, July, October."""
    got = fires("0 0 1 jan-dec/3 *", "UTC", (2025, 1, 1, 1), 4)
    assert [d[:7] for d in got] == ["2025-04", "2025-07", "2025-10", "2026-01"]


def test_weekday_step_with_restricted_day_of_month_needs_both() -> None:
    """'0 0 1-7 * */2' fires only on days 1-7 that are Sun/Tue/Thu/Sat: a field starting with '*' means AND."""
    got = fires("0 0 1-7 * */2", "UTC", (2025, 1, 1), 4)
    assert got == ["2025-01-02T00:00:00+00:00", "2025-01-04T00:00:00+00:00", "2025-01-05T00:00:00+00:00",
                   "2025-01-07T00:00:00+00:00"]


def test_never_matching_half_of_an_or_rule_is_cheap() -> None:
    """'0 0 30 2 mon' fires on February's Mondays (30 February never exists), found without a long search."""
    schedule = CronSchedule.parse("0 0 30 2 mon")
    started = time.perf_counter()
    nxt = schedule.next_after(datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp())
    assert nxt == datetime(2025, 2, 3, tzinfo=ZoneInfo("UTC")).timestamp()
    assert time.perf_counter() - started < 0.05  # generous: the bench holds the 1 ms figure


def test_due_fires_always_account_for_the_shown_fire() -> None:
    """due_fires(first, ...) returns the shown fire ``first``, or flags it as left out by the limit."""
    schedule = CronSchedule.parse("30 2 * * *", "America/New_York")
    shown = schedule.next_after(datetime(2025, 3, 9, 1, tzinfo=ZoneInfo("America/New_York")).timestamp())
    assert shown is not None and schedule.describe(shown) == "2025-03-09T03:00:00-04:00"
    assert schedule.due_fires(shown, shown, 1) == ([shown], False)
    two_days_later = shown + 2 * 86400
    later = schedule.upcoming(shown, 2)
    assert schedule.due_fires(shown, two_days_later, 5) == ([shown, *later], False)
    assert schedule.due_fires(shown, two_days_later, 1) == ([later[-1]], True)
