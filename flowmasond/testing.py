"""Helpers for testing components and pipelines the way flowmasond's own tests do.

``run_pipeline`` runs a definition (a dict or a ``PipelineConfig``) on a real ``DAGExecutor``
with the built-ins plus the test components below; ``EventRecorder`` observes the run through
the public hooks so a test can assert *order* (what started before what completed) instead of
timing thresholds.

Test components (registered from this module):

* ``record`` appends ``{path, attempt, run_id, value}`` as one JSON line to the file ``ledger``
  and returns ``value``: the side-effect ledger that shows what really ran, and how often.
* ``unsafe_record`` is ``record`` declared ``safe_to_repeat=False``.
* ``barrier`` waits until ``parties`` stages with the same ``name`` in the same run are inside
  it, failing with TIMEOUT after ``timeout_s``: proof of overlap without a clock.
* ``counter`` holds for ``hold_s`` and tracks how many instances with the same ``name`` in the
  same run were in flight at once (read it with ``max_in_flight``).
* ``flaky`` fails (or hangs until a timeout) on its first ``fail_attempts`` attempts.

Their state lives in module-level dicts keyed by run id, so concurrent runs never interfere;
call ``reset()`` between tests to drop it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Mapping

from pydantic import Field

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.interfaces import ComponentResult, ErrorType, ExecutionHooks, RunSnapshot, RunStore
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.dag import DAGExecutor, RunOutcome
from flowmasond.engine.models import PipelineConfig, StageConfig
from flowmasond.engine.registry import ComponentInput, ComponentOutput, ComponentRegistry, operator
from flowmasond.errors import ComponentError

__all__ = [
    "Event",
    "EventRecorder",
    "build_registry",
    "max_in_flight",
    "pipeline",
    "read_ledger",
    "reset",
    "run_pipeline",
]

# Pipelines written in tests rarely care about their id.
DEFAULT_PIPELINE_ID = "test"
# Long enough for any honest overlap on a loaded CI machine, short enough to fail a test quickly.
DEFAULT_BARRIER_TIMEOUT_S = 5.0


# -- observing a run ------------------------------------------------------------------------------
class Event(NamedTuple):
    """One hook callback as seen by ``EventRecorder``.

    ``value`` is the attempt (``start``, ``retry``), the status string (``complete``), the skip
    reason (``skipped``) or the run status (``run_complete``); ``at`` is ``time.monotonic()``.
    ``extra`` carries the retry delay in seconds (``retry``) or the ``ComponentResult`` (``complete``).
    """

    event: str
    path: str | None
    value: Any
    at: float
    extra: Any = None


class EventRecorder(ExecutionHooks):
    """Records every hook callback, in order, as ``Event`` tuples."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def _add(self, event: str, path: str | None, value: Any, extra: Any = None) -> None:
        self.events.append(Event(event, path, value, time.monotonic(), extra))
        self._changed.set()

    async def on_run_start(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> None:
        self._add("run_start", None, run_id)

    async def on_stage_start(self, run_id: str, path: str, stage: StageConfig, attempt: int) -> None:
        self._add("start", path, attempt)

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None:
        self._add("retry", path, attempt, delay_s)

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig,
                                result: ComponentResult) -> None:
        self._add("complete", path, result.status.value, result)

    async def on_stage_skipped(self, run_id: str, path: str, stage: StageConfig, reason: str) -> None:
        self._add("skipped", path, reason)

    async def on_run_complete(self, run_id: str, outcome: Any) -> None:
        status = getattr(outcome, "status", None)
        self._add("run_complete", None, getattr(status, "value", status), outcome)

    # -- queries ----------------------------------------------------------------------------------
    def of(self, event: str, path: str | None = None) -> list[Event]:
        """Events of one kind, optionally for one stage path, in the order they happened."""
        return [e for e in self.events if e.event == event and (path is None or e.path == path)]

    def paths(self, event: str) -> list[str]:
        """Stage paths of one kind of event, in order (a path repeats once per retry or resume)."""
        return [e.path for e in self.events if e.event == event and e.path is not None]

    def index(self, event: str, path: str) -> int:
        """Position in ``events`` of the first ``event`` for ``path``; ValueError if none."""
        for i, e in enumerate(self.events):
            if e.event == event and e.path == path:
                return i
        raise ValueError(f"no {event!r} event for {path!r}")

    def attempts(self, path: str) -> list[int]:
        """Attempt numbers that started at ``path``, in order."""
        return [e.value for e in self.of("start", path)]

    def retry_delays(self, path: str) -> list[float]:
        """Delays (seconds) announced before each retry of ``path``."""
        return [e.extra for e in self.of("retry", path)]

    async def wait_for(self, event: str, path: str | None = None, *, timeout: float = 5.0) -> Event:
        """Wait until an ``event`` (for ``path``) has been recorded; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.of(event, path)
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()


# -- running pipelines ----------------------------------------------------------------------------
def build_registry(*modules: Any) -> ComponentRegistry:
    """A registry with the built-ins, this module's test components and any extra ``modules``."""
    registry = ComponentRegistry.with_builtins()
    registry.register_module(__name__)
    for module in modules:
        registry.register_module(module)
    return registry


def pipeline(definition: Mapping[str, Any] | PipelineConfig) -> PipelineConfig:
    """A ``PipelineConfig`` from a dict (``id`` defaults to ``"test"``)."""
    if isinstance(definition, PipelineConfig):
        return definition
    data = dict(definition)
    data.setdefault("id", DEFAULT_PIPELINE_ID)
    return PipelineConfig.model_validate(data)


async def run_pipeline(definition: Mapping[str, Any] | PipelineConfig, inputs: dict[str, Any] | None = None,
                       *, registry: ComponentRegistry | None = None, run_id: str | None = None,
                       store: RunStore | None = None, snapshot: RunSnapshot | None = None,
                       cancellation: CancellationToken | None = None, force: bool = False,
                       **executor_kwargs: Any) -> RunOutcome:
    """Run ``definition`` to the end on a fresh ``DAGExecutor`` and return its ``RunOutcome``.

    ``executor_kwargs`` go to ``DAGExecutor`` (``hooks``, ``max_concurrency``,
    ``parallel_execution``, ``pipelines``...); pipeline dicts in ``pipelines`` are converted.
    """
    pipelines = executor_kwargs.get("pipelines")
    if isinstance(pipelines, Mapping):
        executor_kwargs["pipelines"] = {
            key: pipeline({"id": key, **value} if isinstance(value, Mapping) else value)
            for key, value in pipelines.items()}
    engine = DAGExecutor(registry or build_registry(), **executor_kwargs)
    return await engine.execute(pipeline(definition), inputs, run_id=run_id, store=store,
                                snapshot=snapshot, cancellation=cancellation, force=force)


def read_ledger(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries ``record`` stages appended to ``path``, in order (empty if none ran)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- module state, keyed by run so concurrent runs never share it ---------------------------------
@dataclass(slots=True)
class _Rendezvous:
    arrived: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Gauge:
    current: int = 0
    peak: int = 0


_barriers: dict[tuple[str, str], _Rendezvous] = {}
_gauges: dict[tuple[str, str], _Gauge] = {}


def max_in_flight(run_id: str, name: str) -> int:
    """The most ``counter`` stages named ``name`` that were executing at once in ``run_id``."""
    gauge = _gauges.get((run_id, name))
    return gauge.peak if gauge is not None else 0


def reset() -> None:
    """Forget every barrier and counter (call between tests)."""
    _barriers.clear()
    _gauges.clear()


def _append_line(path: str, entry: dict[str, Any]) -> None:
    # One O_APPEND write per entry: concurrent stages never interleave within a line, and the line
    # is in the kernel before the stage returns, so a process crash right after cannot lose it.
    data = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# -- test components --------------------------------------------------------------------------------
class _RecordInput(ComponentInput):
    ledger: str
    value: Any = None
    hold_s: float = 0.0  # unsafe_record only: stay in flight this long after the side effect


@operator("record", description="Append {path, attempt, run_id, value} to a ledger file; return value.")
class LedgerRecord:
    """Append one JSON line to ``ledger`` and return ``value`` (a dict ``{}`` when value is None)."""

    Input = _RecordInput

    async def execute(self, input: _RecordInput, context: ExecutionContext) -> Any:
        _append_line(input.ledger, {"path": context.stage_path, "attempt": context.attempt,
                                    "run_id": context.run_id, "value": input.value,
                                    "pid": os.getpid(), "key": context.idempotency_key})
        if input.hold_s:
            await asyncio.sleep(input.hold_s)  # in flight after the side effect: the crash window
        return input.value


@operator("unsafe_record", description="Like record, but declared not safe to repeat after a crash.",
          safe_to_repeat=False)
class UnsafeLedgerRecord(LedgerRecord):
    """``record`` for a side effect that must not happen twice (e.g. charging a card)."""


@operator("barrier", description="Wait until `parties` barrier stages of the same name are inside.")
class Barrier:
    """Succeed once ``parties`` stages named ``name`` of this run are all inside; else TIMEOUT."""

    class Input(ComponentInput):
        name: str = "barrier"
        parties: int = Field(ge=1)
        timeout_s: float = Field(default=DEFAULT_BARRIER_TIMEOUT_S, gt=0)

    class Output(ComponentOutput):
        parties: int

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        key = (context.run_id, input.name)
        rendezvous = _barriers.get(key)
        if rendezvous is None:
            rendezvous = _barriers[key] = _Rendezvous()
        rendezvous.arrived += 1
        if rendezvous.arrived >= input.parties:
            rendezvous.released.set()
        try:
            async with asyncio.timeout(input.timeout_s):
                await rendezvous.released.wait()
        except TimeoutError:
            rendezvous.arrived -= 1
            raise ComponentError(
                f"barrier '{input.name}': {rendezvous.arrived + 1} of {input.parties} arrived within "
                f"{input.timeout_s:g}s", error_type=ErrorType.TIMEOUT, stage=context.stage_path) from None
        return self.Output(parties=input.parties)


@operator("counter", description="Hold for hold_s while counting concurrent instances of the same name.")
class Counter:
    """Track the peak number of ``counter`` stages named ``name`` executing at once in this run."""

    class Input(ComponentInput):
        name: str = "counter"
        hold_s: float = Field(default=0.02, ge=0)
        value: Any = None

    async def execute(self, input: Input, context: ExecutionContext) -> Any:
        key = (context.run_id, input.name)
        gauge = _gauges.get(key)
        if gauge is None:
            gauge = _gauges[key] = _Gauge()
        gauge.current += 1
        gauge.peak = max(gauge.peak, gauge.current)
        try:
            await asyncio.sleep(input.hold_s)
        finally:
            gauge.current -= 1
        return {"value": input.value, "attempt": context.attempt}


@operator("flaky", description="Fail (or hang) on the first fail_attempts attempts, then succeed.")
class Flaky:
    """Raise ``error_type`` while ``attempt <= fail_attempts``; with ``hang`` wait forever instead.

    ``hang`` makes only a timeout (or cancellation) end a failing attempt, which shows that each
    attempt gets its own timeout.
    """

    class Input(ComponentInput):
        fail_attempts: int = Field(ge=0)
        error_type: ErrorType = ErrorType.COMPONENT
        hang: bool = False

    class Output(ComponentOutput):
        attempt: int

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        if context.attempt <= input.fail_attempts:
            if input.hang:
                await asyncio.Event().wait()
            raise ComponentError(f"flaky: attempt {context.attempt} fails", error_type=input.error_type,
                                 stage=context.stage_path, attempt=context.attempt)
        return self.Output(attempt=context.attempt)
