"""Run ids: unique even when a busy daemon mints thousands in one second."""

from __future__ import annotations

import re

from flowmasond.engine.dag import new_run_id


def test_run_ids_minted_in_one_burst_never_collide() -> None:
    """300,000 ids in a burst (a few seconds of a daemon at its throughput aim) are all distinct
    (with 32 random bits per second, about ten pairs would collide)."""
    ids = [new_run_id() for _ in range(300_000)]

    assert len(set(ids)) == len(ids)


def test_a_run_id_is_its_second_in_hex_then_64_random_bits() -> None:
    """The form tools and logs rely on: r<hex seconds>-<16 hex digits>."""
    assert re.fullmatch(r"r[0-9a-f]+-[0-9a-f]{16}", new_run_id())
