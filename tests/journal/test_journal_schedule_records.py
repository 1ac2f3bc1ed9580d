"""``Journal.schedule_records`` (one statement for any number of schedules) against a reference
kept in Python from the operations made."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st
from journal_helpers import make_pipeline

from flowmasond.engine.interfaces import RunStatus
from flowmasond.journal import Journal

_KEYS = [("p1", "a"), ("p1", "b"), ("p2", "a"), ("p 3", "x'y")]
_key = st.sampled_from(_KEYS)
_operation = st.one_of(
    st.tuples(st.just("seen"), _key),
    st.tuples(st.just("pause"), _key, st.booleans()),
    st.tuples(st.just("fire"), _key, st.integers(0, 20), st.booleans(),
              st.sampled_from([RunStatus.PENDING, RunStatus.SUCCEEDED, RunStatus.FAILED, None])),
)


async def _play(path: Path, operations: list[tuple]) -> tuple[dict, dict]:
    journal = await Journal.open(path)
    expected: dict[tuple[str, str], dict] = {}
    try:
        pipeline = make_pipeline()
        for n, op in enumerate(operations):
            key = op[1]
            state = expected.setdefault(key, {"paused": False, "seen": False, "fires": {}})
            if op[0] == "seen":
                await journal.mark_schedules_seen([key])
                state["seen"] = True
            elif op[0] == "pause":
                await journal.set_schedule_paused(*key, op[2])
                state["paused"] = op[2]
            else:
                _, _, fire_time, with_run, status = op
                run_id = None
                if with_run:
                    run_id = f"run-{n}"
                    if status is not None:  # None: the run was pruned, its fire kept
                        await journal.create_run(run_id, pipeline, {}, status=status)
                if await journal.record_fire(*key, float(fire_time), run_id=run_id):
                    state["fires"][float(fire_time)] = (run_id, status if with_run else None)
        got = await journal.schedule_records(_KEYS + [("nobody", "none")])
    finally:
        await journal.close()
    return expected, got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(_operation, max_size=25))
def test_schedule_records_match_the_operations_made(operations: list[tuple]) -> None:
    """Each schedule's pause state, first sighting and latest fire (with its run's status) are
    what the operations made; an unknown schedule reads as never seen, never fired."""
    with tempfile.TemporaryDirectory() as directory:
        expected, got = asyncio.run(_play(Path(directory) / "j.sqlite3", operations))
    assert set(got) == set(_KEYS) | {("nobody", "none")}
    for key in [*_KEYS, ("nobody", "none")]:
        state = expected.get(key, {"paused": False, "seen": False, "fires": {}})
        record = got[key]
        assert record.paused is state["paused"], key
        assert (record.first_seen_at is not None) is state["seen"], key
        if state["fires"]:
            last = max(state["fires"])
            run_id, status = state["fires"][last]
            assert (record.last_fire_time, record.last_run_id, record.last_run_status) == (
                last, run_id, status), key
            assert record.last_recorded_at is not None
        else:
            assert (record.last_fire_time, record.last_run_id, record.last_recorded_at,
                    record.last_run_status) == (None, None, None, None), key
