"""Small operators: logger, sleep, fail."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

RunOperator = Callable[..., Awaitable[Any]]


async def test_logger_logs_with_run_and_stage_bound(run_operator: RunOperator) -> None:
    """The message is logged at its level with run id, stage path, attempt and data."""
    with capture_logs() as logs:
        out = await run_operator("logger", {"message": "hello", "level": "warning", "data": {"n": 1}},
                                 run_id="r-1", stage_path="loop/0/log", attempt=3)
    assert (out.message, out.level) == ("hello", "warning")
    assert logs == [{"event": "hello", "log_level": "warning", "data": {"n": 1}, "run_id": "r-1",
                     "pipeline_id": "pipe", "stage_id": "step", "stage_path": "loop/0/log", "attempt": 3}]


async def test_logger_uses_the_context_logger_when_given(run_operator: RunOperator) -> None:
    """A logger handed in by the engine keeps its own bound fields."""
    with capture_logs() as logs:
        await run_operator("logger", {"message": "hi"}, logger=structlog.get_logger().bind(daemon="d1"))
    assert logs[0]["daemon"] == "d1" and logs[0]["run_id"] == "run-1"
    assert "data" not in logs[0]


async def test_sleep_reports_the_time_slept(run_operator: RunOperator) -> None:
    """sleep returns and says how long it slept (measured, so never zero)."""
    out = await run_operator("sleep", {"seconds": 0.01})
    assert out.slept_s > 0


async def test_sleep_is_cancelled_by_a_timeout(run_operator: RunOperator) -> None:
    """A long sleep ends with TimeoutError as soon as the engine's timeout fires."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run_operator("sleep", {"seconds": 3600}), 0.01)


def test_sleep_rejects_negative_seconds(registry) -> None:
    """seconds must be >= 0."""
    with pytest.raises(ValidationError):
        registry.meta("sleep").input_model.model_validate({"seconds": -1})


async def test_fail_raises_the_chosen_error_type(run_operator: RunOperator) -> None:
    """fail raises ComponentError with its message and the named ErrorType (any case)."""
    with pytest.raises(ComponentError) as info:
        await run_operator("fail", {"message": "nope", "error_type": "rate_limit"})
    assert info.value.error_type is ErrorType.RATE_LIMIT
    assert info.value.message == "nope"


async def test_fail_defaults_to_a_component_error(run_operator: RunOperator) -> None:
    """Without options fail raises a COMPONENT error saying the failure was requested."""
    with pytest.raises(ComponentError) as info:
        await run_operator("fail", {})
    assert (info.value.error_type, info.value.message) == (ErrorType.COMPONENT, "failure requested")


async def test_fail_attempts_fails_only_the_first_attempts(run_operator: RunOperator) -> None:
    """With fail_attempts=2, attempts 1 and 2 fail and attempt 3 succeeds."""
    for attempt in (1, 2):
        with pytest.raises(ComponentError):
            await run_operator("fail", {"fail_attempts": 2}, attempt=attempt)
    out = await run_operator("fail", {"fail_attempts": 2}, attempt=3)
    assert out.attempt == 3


def test_fail_rejects_unknown_error_types(registry) -> None:
    """An error_type that is not an ErrorType name fails Input validation."""
    with pytest.raises(ValidationError):
        registry.meta("fail").input_model.model_validate({"error_type": "OOPS"})
