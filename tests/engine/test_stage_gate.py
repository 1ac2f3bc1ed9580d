"""The executor's stage gate (breakpoints' seam): asked before each stage with its resolved inputs,
it holds the stage until it returns, and a cancellation while it holds cancels the run."""

from __future__ import annotations

import asyncio
from typing import Any

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.dag import DAGExecutor
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.interfaces import RunStatus
from flowmasond.errors import RunCancelledError
from flowmasond.testing import pipeline, read_ledger


def _definition(ledger: str) -> dict[str, Any]:
    return {"id": "p", "stages": [
        {"id": "a", "component": "record", "config": {"ledger": ledger, "value": "{{input.x}}"}},
        {"id": "b", "component": "record", "config": {"ledger": ledger, "value": "{{upstream.a}}"},
         "depends_on": ["a"]},
    ]}


async def test_gate_sees_resolved_inputs_and_holds_the_stage(registry: ComponentRegistry, ledger: str) -> None:
    """While the gate holds stage b, a has run and b has not; b's inputs are already resolved."""
    asked: list[tuple[str, dict[str, Any]]] = []
    release = asyncio.Event()
    held = asyncio.Event()

    async def gate(run_id: str, path: str, stage_id: str, inputs: dict[str, Any], cancellation: Any) -> None:
        asked.append((path, inputs))
        if stage_id == "b":
            held.set()
            await release.wait()

    executor = DAGExecutor(registry, stage_gate=gate)
    task = asyncio.create_task(executor.execute(pipeline(_definition(ledger)), {"x": 7}))
    await asyncio.wait_for(held.wait(), 10)
    assert [e["path"] for e in read_ledger(ledger)] == ["a"]
    assert [p for p, _ in asked] == ["a", "b"] and asked[1][1]["value"] is not None
    release.set()
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.status is RunStatus.SUCCEEDED
    assert [e["path"] for e in read_ledger(ledger)] == ["a", "b"]


async def test_cancelling_while_the_gate_holds_cancels_the_run(registry: ComponentRegistry, ledger: str) -> None:
    """A gate that raises RunCancelledError on cancellation ends the run cancelled; b never runs."""
    token = CancellationToken(grace_s=0.1)
    held = asyncio.Event()

    async def gate(run_id: str, path: str, stage_id: str, inputs: dict[str, Any], cancellation: Any) -> None:
        if stage_id == "b":
            held.set()
            await cancellation.wait()
            raise RunCancelledError("cancelled", run_id=run_id, path=path)

    executor = DAGExecutor(registry, stage_gate=gate)
    task = asyncio.create_task(executor.execute(pipeline(_definition(ledger)), {"x": 1}, cancellation=token))
    await asyncio.wait_for(held.wait(), 10)
    token.cancel("cancelled by request")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.status is RunStatus.CANCELLED
    assert [e["path"] for e in read_ledger(ledger)] == ["a"]
