"""Waves: concurrency inside a wave, sequential Kahn mode, max_concurrency, joins."""

from __future__ import annotations

from flowmasond.engine.interfaces import ErrorType, RunStatus, StageStatus
from flowmasond.testing import EventRecorder, max_in_flight


async def test_stages_of_one_wave_overlap(run, recorder: EventRecorder) -> None:
    """Three independent stages are all inside a 3-party barrier at once, and all start before any ends."""
    stages = [{"id": s, "component": "barrier", "config": {"name": "w", "parties": 3, "timeout_s": 3}}
              for s in ("a", "b", "c")]
    outcome = await run({"stages": stages})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert all(outcome.results[s].status is StageStatus.SUCCESS for s in ("a", "b", "c"))
    last_start = max(recorder.index("start", s) for s in ("a", "b", "c"))
    first_complete = min(recorder.index("complete", s) for s in ("a", "b", "c"))
    assert last_start < first_complete


async def test_sequential_mode_runs_one_stage_at_a_time_in_kahn_order(run, recorder: EventRecorder) -> None:
    """With parallel_execution=False each stage completes before the next starts, in file-order Kahn order."""
    stages = [
        {"id": "x", "component": "counter", "config": {"name": "n"}},
        {"id": "y", "component": "counter", "depends_on": ["z"], "config": {"name": "n"}},
        {"id": "z", "component": "counter", "config": {"name": "n"}},
        {"id": "w", "component": "counter", "config": {"name": "n"}},
    ]
    outcome = await run({"stages": stages}, parallel_execution=False)

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    kinds = [(e.event, e.path) for e in recorder.events if e.event in ("start", "complete")]
    # x and w are ready at once but w comes later in the file; y waits for z.
    order = ["x", "z", "y", "w"]
    assert kinds == [(kind, s) for s in order for kind in ("start", "complete")]
    assert max_in_flight(outcome.run_id, "n") == 1


async def test_max_concurrency_caps_stages_in_flight(run) -> None:
    """With max_concurrency=2, six independent stages never have more than two in flight, and all finish."""
    stages = [{"id": f"s{i}", "component": "counter", "config": {"name": "cap", "hold_s": 0.03}}
              for i in range(6)]
    outcome = await run({"stages": stages}, max_concurrency=2)

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert all(outcome.results[f"s{i}"].ok for i in range(6))
    assert max_in_flight(outcome.run_id, "cap") == 2


async def test_diamond_join_starts_after_both_branches_commit(run, recorder: EventRecorder, ledger: str) -> None:
    """In a diamond a -> (b, c) -> d, d starts only after both b and c have completed."""
    stages = [
        {"id": "a", "component": "record", "config": {"ledger": ledger, "value": 1}},
        {"id": "b", "component": "sleep", "depends_on": ["a"], "config": {"seconds": 0.05}},
        {"id": "c", "component": "record", "depends_on": ["a"], "config": {"ledger": ledger, "value": 2}},
        {"id": "d", "component": "record", "depends_on": ["b", "c"],
         "config": {"ledger": ledger, "value": {"b": "{{upstream.b.slept_s}}", "c": "{{upstream.c}}"}}},
    ]
    outcome = await run({"stages": stages})

    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    d_start = recorder.index("start", "d")
    assert recorder.index("complete", "b") < d_start
    assert recorder.index("complete", "c") < d_start
    assert outcome.output == {"b": outcome.results["b"].output["slept_s"], "c": 2}


async def test_barrier_that_cannot_fill_fails_with_timeout(run, recorder: EventRecorder) -> None:
    """In sequential mode two barrier stages never meet, so the first one fails with TIMEOUT."""
    stages = [{"id": s, "component": "barrier", "config": {"name": "w", "parties": 2, "timeout_s": 0.2}}
              for s in ("a", "b")]
    outcome = await run({"stages": stages}, parallel_execution=False)

    assert outcome.status is RunStatus.FAILED
    assert outcome.results["a"].error_type is ErrorType.TIMEOUT
    assert recorder.paths("start") == ["a"]
