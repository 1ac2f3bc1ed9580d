"""Retry delays: exponential backoff with jitter, never shorter than a peer's Retry-After."""

from __future__ import annotations

import random

from flowmasond.engine.models import RetryConfig

NO_RETRY = RetryConfig(max_retries=0)


def backoff_delay_s(policy: RetryConfig, failed_attempt: int, *, retry_after_s: float | None = None,
                    rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failed_attempt`` (1-based) before the next one.

    The base delay is ``initial * multiplier**(n-1)`` capped at ``max_delay``. Jitter (``True`` means
    ±25 %, a float sets the fraction) spreads retries of stages that failed together, staying within
    ``[base*(1-j), min(base*(1+j), max_delay)]``. A peer's Retry-After raises the floor.
    """
    base_ms = min(policy.initial_delay_ms * policy.backoff_multiplier ** (failed_attempt - 1),
                  float(policy.max_delay_ms))
    fraction = 0.25 if policy.jitter is True else float(policy.jitter or 0.0)
    if fraction > 0 and base_ms > 0:
        r = (rng or random).uniform(-fraction, fraction)
        base_ms = min(base_ms * (1.0 + r), float(policy.max_delay_ms))
    delay_s = max(base_ms, 0.0) / 1000.0
    if retry_after_s is not None and retry_after_s > delay_s:
        delay_s = retry_after_s
    return delay_s
