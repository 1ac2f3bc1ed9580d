"""Cron expressions: standard 5-field semantics, a seconds field, and DST in two zones."""

from __future__ import annotations

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
    """Cron's weekday 0 and 7 both mean Sunday (APScheduler 3 alone would read 0 as Monday)."""
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
    ("61 * * * *", "higher than the maximum"),
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
def test_new_york_spring_forward_runs_a_job_in_the_skipped_hour_once() -> None:
    """02:30 does not exist on 2024-03-10 in New York: the job runs once, at 03:30 EDT, then 02:30 again."""
    assert fires("30 2 * * *", "America/New_York", (2024, 3, 9, 12), 3) == [
        "2024-03-10T03:30:00-04:00", "2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00"]


def test_new_york_fall_back_runs_a_job_in_the_repeated_hour_once() -> None:
    """01:30 happens twice on 2024-11-03 in New York: the job runs on the first pass (EDT) only."""
    assert fires("30 1 * * *", "America/New_York", (2024, 11, 2, 12), 3) == [
        "2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00", "2024-11-05T01:30:00-05:00"]


def test_berlin_spring_forward_runs_a_job_in_the_skipped_hour_once() -> None:
    """02:30 does not exist on 2024-03-31 in Berlin: the job runs once, at 03:30 CEST."""
    assert fires("30 2 * * *", "Europe/Berlin", (2024, 3, 30, 12), 2) == [
        "2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"]


def test_berlin_fall_back_runs_a_job_in_the_repeated_hour_once() -> None:
    """02:30 happens twice on 2024-10-27 in Berlin: the job runs once (CEST), then next day in CET."""
    assert fires("30 2 * * *", "Europe/Berlin", (2024, 10, 26, 12), 2) == [
        "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]


def test_pinned_hour_job_runs_each_slot_of_the_repeated_hour_once() -> None:
    """'*/20 1 * * *' on New York's fall-back day fires 01:00, 01:20, 01:40 once each, not twice."""
    assert fires("*/20 1 * * *", "America/New_York", (2024, 11, 3), 4) == [
        "2024-11-03T01:00:00-04:00", "2024-11-03T01:20:00-04:00", "2024-11-03T01:40:00-04:00",
        "2024-11-04T01:00:00-05:00"]


def test_hourly_job_keeps_every_real_hour_across_both_transitions() -> None:
    """An hourly job fires every real hour: twice in the repeated hour, and never twice at one instant."""
    assert fires("30 * * * *", "America/New_York", (2024, 11, 3, 0, 45), 3) == [
        "2024-11-03T01:30:00-04:00", "2024-11-03T01:30:00-05:00", "2024-11-03T02:30:00-05:00"]
    assert fires("30 * * * *", "Europe/Berlin", (2024, 3, 31, 0, 45), 3) == [
        "2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-03-31T04:30:00+02:00"]
