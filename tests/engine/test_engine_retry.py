"""Retry counts, backoff bounds and per-attempt timeouts."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmasond.engine.models import RetryConfig
from flowmasond.engine.retry import backoff_delay_s
from flowmasond.engine.interfaces import ErrorType, RunStatus, StageStatus
from flowmasond.testing import EventRecorder

FAST_RETRY = {"initial_delay_ms": 1, "max_delay_ms": 5, "jitter": False}


def _error_type(outcome: Any) -> str | None:
    """The ErrorType name a failed run reports (stage failures carry it in the error context)."""
    error = outcome.error or {}
    return error.get("error_type") or error.get("context", {}).get("error_type_name")


def _bounds(policy: RetryConfig, attempt: int, jitter: float) -> tuple[float, float]:
    base = min(policy.initial_delay_ms * policy.backoff_multiplier ** (attempt - 1), policy.max_delay_ms)
    return base * (1 - jitter) / 1000.0, min(base * (1 + jitter), policy.max_delay_ms) / 1000.0


# -- retry counts ------------------------------------------------------------------------------------
async def test_retry_succeeds_on_the_attempt_after_the_last_failure(run, recorder: EventRecorder) -> None:
    """A stage failing twice with three retries allowed succeeds on attempt 3."""
    stage = {"id": "f", "component": "fail", "config": {"fail_attempts": 2},
             "retry_config": {"max_retries": 3, **FAST_RETRY}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.results["f"].attempts == 3
    assert outcome.output == {"attempt": 3}
    assert recorder.attempts("f") == [1, 2, 3]
    assert len(recorder.of("retry", "f")) == 2


async def test_retry_exhaustion_fails_the_run_with_retry_exhausted(run, recorder: EventRecorder) -> None:
    """A stage that always fails is attempted max_retries+1 times and the run fails with retry_exhausted."""
    stage = {"id": "f", "component": "fail", "config": {"message": "always"},
             "retry_config": {"max_retries": 2, **FAST_RETRY}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["f"].status is StageStatus.FAILED
    assert outcome.results["f"].attempts == 3
    assert recorder.attempts("f") == [1, 2, 3]
    assert outcome.error["code"] == "retry_exhausted"
    assert outcome.failed_path == "f"
    assert "always" in outcome.error["message"]


@pytest.mark.parametrize("error_type", ["VALIDATION", "CONFIGURATION", "PERMISSION"])
async def test_non_retryable_errors_are_attempted_once(run, recorder: EventRecorder, error_type: str) -> None:
    """VALIDATION, CONFIGURATION and PERMISSION failures are not retried however many retries are allowed."""
    stage = {"id": "f", "component": "fail", "config": {"error_type": error_type},
             "retry_config": {"max_retries": 3, **FAST_RETRY}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["f"].attempts == 1
    assert outcome.results["f"].error_type is ErrorType(error_type)
    assert recorder.attempts("f") == [1]
    assert recorder.of("retry") == []
    assert _error_type(outcome) == error_type


# -- backoff -----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(initial=st.integers(1, 5000), multiplier=st.floats(1.0, 4.0), max_delay=st.integers(1, 60_000),
       jitter=st.floats(0.0, 0.9), seed=st.integers(0, 2**32 - 1))
def test_backoff_delays_lie_within_jitter_bounds(initial: int, multiplier: float, max_delay: int,
                                                 jitter: float, seed: int) -> None:
    """Every seeded draw for attempts 1..6 lies within [base*(1-j), min(base*(1+j), max_delay)]."""
    policy = RetryConfig(max_retries=6, initial_delay_ms=initial, max_delay_ms=max_delay,
                         backoff_multiplier=multiplier, jitter=jitter)
    rng = random.Random(seed)
    for attempt in range(1, 7):
        low, high = _bounds(policy, attempt, jitter)
        for _ in range(20):
            delay = backoff_delay_s(policy, attempt, rng=rng)
            assert low - 1e-9 <= delay <= high + 1e-9, (attempt, delay, low, high)


def test_backoff_default_jitter_spreads_draws_within_a_quarter() -> None:
    """jitter=True spreads draws over +-25 % of the base delay, reaching both halves of the range."""
    policy = RetryConfig(max_retries=5, initial_delay_ms=1000, max_delay_ms=60_000, jitter=True)
    rng = random.Random(7)
    draws = [backoff_delay_s(policy, 2, rng=rng) for _ in range(500)]
    assert min(draws) >= 1.5 and max(draws) <= 2.5
    assert min(draws) < 1.8 and max(draws) > 2.2


def test_backoff_grows_by_the_multiplier_until_capped() -> None:
    """Without jitter each delay is the previous one times the multiplier, until max_delay caps it."""
    policy = RetryConfig(max_retries=10, initial_delay_ms=100, max_delay_ms=2000, backoff_multiplier=3.0,
                         jitter=False)
    delays = [backoff_delay_s(policy, n) for n in range(1, 7)]
    assert delays[0] == pytest.approx(0.1)
    assert delays[1] == pytest.approx(0.3)
    assert delays[2] == pytest.approx(0.9)
    assert delays[3:] == [pytest.approx(2.0)] * 3


def test_backoff_never_exceeds_max_delay() -> None:
    """However many attempts failed, a jittered delay never exceeds max_delay."""
    policy = RetryConfig(max_retries=50, initial_delay_ms=500, max_delay_ms=4000, backoff_multiplier=2.0,
                         jitter=0.5)
    rng = random.Random(3)
    assert max(backoff_delay_s(policy, n, rng=rng) for n in range(1, 40) for _ in range(20)) <= 4.0


def test_backoff_respects_retry_after_as_a_floor() -> None:
    """A peer's Retry-After longer than the backoff is waited in full; a shorter one changes nothing."""
    policy = RetryConfig(max_retries=3, initial_delay_ms=100, max_delay_ms=1000, jitter=False)
    assert backoff_delay_s(policy, 1, retry_after_s=7.5) == pytest.approx(7.5)
    assert backoff_delay_s(policy, 2, retry_after_s=0.05) == pytest.approx(0.2)


async def test_retry_delays_reported_to_hooks_lie_within_bounds(run, recorder: EventRecorder) -> None:
    """The delays announced to on_stage_retry in a real run lie within the backoff bounds of their attempt."""
    policy = {"max_retries": 3, "initial_delay_ms": 10, "max_delay_ms": 1000, "backoff_multiplier": 2.0,
              "jitter": 0.5}
    stage = {"id": "f", "component": "fail", "config": {"fail_attempts": 3}, "retry_config": policy}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    retries = recorder.of("retry", "f")
    assert [e.value for e in retries] == [1, 2, 3]
    for event in retries:
        low, high = _bounds(RetryConfig(**policy), event.value, 0.5)
        assert low <= event.extra <= high, (event.value, event.extra)


# -- timeouts ----------------------------------------------------------------------------------------
async def test_stage_longer_than_its_timeout_fails_with_timeout(run) -> None:
    """A sleep longer than the stage's timeout_ms fails with TIMEOUT."""
    stage = {"id": "s", "component": "sleep", "timeout_ms": 50, "config": {"seconds": 10}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["s"].error_type is ErrorType.TIMEOUT
    assert _error_type(outcome) == "TIMEOUT"


async def test_each_retry_attempt_gets_its_own_timeout(run, recorder: EventRecorder) -> None:
    """Two attempts that hang until their timeout are followed by a third that gets a full timeout of its own."""
    stage = {"id": "f", "component": "flaky", "timeout_ms": 200, "config": {"fail_attempts": 2, "hang": True},
             "retry_config": {"max_retries": 2, **FAST_RETRY}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.results["f"].attempts == 3
    assert recorder.attempts("f") == [1, 2, 3]


async def test_timeouts_are_retried_until_exhausted(run, recorder: EventRecorder) -> None:
    """An attempt that always times out is retried and the run fails with TIMEOUT after the last attempt."""
    stage = {"id": "f", "component": "flaky", "timeout_ms": 40, "config": {"fail_attempts": 9, "hang": True},
             "retry_config": {"max_retries": 2, **FAST_RETRY}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["f"].attempts == 3
    assert outcome.results["f"].error_type is ErrorType.TIMEOUT
    assert outcome.error["code"] == "retry_exhausted"


async def test_component_metadata_timeout_applies_when_the_stage_sets_none(run, registry) -> None:
    """A component's decorator timeout_ms is used when the stage has no timeout_ms."""
    meta_timeout_s = registry.meta("meta_timeout_sleep").timeout_ms / 1000
    stage = {"id": "s", "component": "meta_timeout_sleep", "config": {"seconds": 10}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["s"].error_type is ErrorType.TIMEOUT
    assert f"after {meta_timeout_s:g}s" in outcome.results["s"].error


async def test_stage_timeout_overrides_component_metadata(run, registry) -> None:
    """A stage timeout_ms longer than the component's default lets a stage outlive the component default."""
    seconds = registry.meta("meta_timeout_sleep").timeout_ms / 1000 * 2
    stage = {"id": "s", "component": "meta_timeout_sleep", "timeout_ms": 5000, "config": {"seconds": seconds}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.output == {"slept": seconds}


async def test_operator_without_metadata_timeout_gets_the_generous_kind_default(run, registry) -> None:
    """An operator with no timeout anywhere runs under the 30 s operator default, not a short one."""
    seconds = registry.meta("meta_timeout_sleep").timeout_ms / 1000 * 2
    stage = {"id": "s", "component": "sleep", "config": {"seconds": seconds}}
    outcome = await run({"stages": [stage]})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert registry.meta("sleep").timeout_ms is None
    assert registry.meta("sleep").default_timeout_ms == 30_000
