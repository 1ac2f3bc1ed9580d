"""Breakpoints and stepping: the engine's stage gate made an operator feature.

A run pauses before a stage whose id is one of its breakpoints (``run --break-at``,
``flowmason break``), or before every stage while it is stepping (``flowmason step``). The stage
waits at the gate with the inputs it will receive; the run's journal status is ``paused`` and
``runs.paused_at`` names the waiting stages and their inputs, so ``show`` can print them and a
daemon restart keeps the run paused (``RunManager.recover`` only touches running runs). ``continue``
releases every waiting stage and stops stepping; ``step`` releases one and keeps stepping. A
paused run found after a restart is relaunched from its journal with the stages it was paused at
let through once (``RunBreaks.released``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from flowmasond.errors import RunCancelledError

if TYPE_CHECKING:
    from flowmasond.engine.cancellation import CancellationToken
    from flowmasond.runs import RunManager

log = structlog.get_logger("flowmasond.breakpoints")


@dataclass(slots=True)
class Waiter:
    """A stage held at the gate."""

    path: str
    stage_id: str
    inputs: dict[str, Any]
    go: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class RunBreaks:
    """Breakpoints of one executing run, and the stages waiting at them."""

    breakpoints: set[str] = field(default_factory=set)
    stepping: bool = False
    released: set[str] = field(default_factory=set)  # paths let through once (resumed at a pause)
    waiting: dict[str, Waiter] = field(default_factory=dict)  # in arrival order
    stopped_while_paused: bool = False  # the daemon stopped while stages waited: stay paused

    def paused_at(self) -> dict[str, Any]:
        """``runs.paused_at``: the waiting stages and the inputs each will receive."""
        return {w.path: {"stage_id": w.stage_id, "inputs": w.inputs} for w in self.waiting.values()}

    def holds(self, path: str, stage_id: str) -> bool:
        if path in self.released:
            self.released.discard(path)
            return False
        return self.stepping or stage_id in self.breakpoints

    def release(self, count: int | None = None) -> list[str]:
        """Let ``count`` waiting stages go (all when None), oldest first; returns their paths."""
        chosen = list(self.waiting.values())[:count] if count is not None else list(self.waiting.values())
        for waiter in chosen:
            waiter.go.set()
        return [w.path for w in chosen]


class BreakpointGate:
    """The executor's ``StageGate``: holds a stage while its run says so."""

    def __init__(self, manager: RunManager) -> None:
        self.manager = manager

    async def __call__(self, run_id: str, path: str, stage_id: str, inputs: dict[str, Any],
                       cancellation: CancellationToken) -> None:
        breaks = self.manager.breaks_of(run_id)
        if breaks is None or not breaks.holds(path, stage_id):
            return
        waiter = Waiter(path=path, stage_id=stage_id, inputs=_json_safe(inputs))
        breaks.waiting[path] = waiter
        journal = self.manager.journal
        await journal.set_paused(run_id, breaks.paused_at())
        log.info("run_paused", run_id=run_id, path=path)
        self.manager.notify()
        go = asyncio.ensure_future(waiter.go.wait())
        stop = asyncio.ensure_future(cancellation.wait())
        try:
            await asyncio.wait({go, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            go.cancel()
            stop.cancel()
        if not waiter.go.is_set():
            # Cancelled or stopped while waiting. A daemon stop keeps the run paused (the manager
            # reads this flag); the journal still lists every waiting stage.
            breaks.stopped_while_paused = True
            raise RunCancelledError(cancellation.reason or "cancelled", run_id=run_id, path=path)
        del breaks.waiting[path]
        await journal.set_paused(run_id, breaks.paused_at() if breaks.waiting else None)
        log.info("run_continued", run_id=run_id, path=path)
        self.manager.notify()


def _json_safe(value: Any) -> Any:
    """Resolved inputs as the journal can store them (exotic values shown as text)."""
    import json

    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)
