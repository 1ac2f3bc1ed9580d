"""The engine's interfaces in one place: the values it exchanges and the seams others implement.

- Values: ``ErrorType``, ``StageStatus``, ``RunStatus``, ``UsageMetrics``, ``ComponentResult``.
- Durability seam: the engine never talks to SQLite. It hands ``Record`` batches to a run's
  ``RunStore`` and awaits them before any dependent work starts (write-ahead); a ``RunLedger``
  holds runs, their statuses (conditional changes only) and hands out their stores. The journal
  implements both durably, ``MemoryRunStore`` and ``MemoryRunLedger``
  (``flowmasond.engine.checkpoint``) in memory. A resumed run starts from a ``RunSnapshot``.
- Observation: ``ExecutionHooks`` (and ``CompositeHooks`` fanning out to several).
- Extension: ``Component`` (what a component class provides), ``ChildRunner`` (who runs a
  subpipeline's child run) and ``StageDispatcher`` (who runs a distributed leaf stage elsewhere).

Stage paths name every execution uniquely within a run: top-level stages by id (``fetch``),
children of a control-flow stage under it (``tc/cleanup``), foreach iterations by index
(``loop/3/transform``, ``outer/0/inner/2/step``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from pydantic import BaseModel

from flowmasond.engine.flow_state import ControlFlowState

if TYPE_CHECKING:
    from flowmasond.engine.cancellation import CancellationToken
    from flowmasond.engine.context import ExecutionContext
    from flowmasond.engine.dag import ExecutingRun, RunOutcome
    from flowmasond.engine.models import PipelineConfig, StageConfig

log = structlog.get_logger("flowmasond.engine")


class ErrorType(str, Enum):
    """Classification of every stage failure; decides whether a retry can help."""

    VALIDATION = "VALIDATION"  # input/output did not match the component's model; retrying won't help
    CONFIGURATION = "CONFIGURATION"  # the stage or daemon is set up wrongly (unknown provider, bad template)
    TIMEOUT = "TIMEOUT"  # an attempt ran past its timeout
    CONNECTIVITY = "CONNECTIVITY"  # network or peer unreachable; usually transient
    RATE_LIMIT = "RATE_LIMIT"  # the peer asked us to slow down (HTTP 429)
    PERMISSION = "PERMISSION"  # the OS or a peer refused access
    COMPONENT = "COMPONENT"  # the component itself reported a failure (non-zero exit, HTTP 4xx...)
    CANCELLATION = "CANCELLATION"  # the run was cancelled while the stage was in flight
    STORAGE = "STORAGE"  # the journal could not commit
    UNKNOWN = "UNKNOWN"  # an unexpected exception inside a component

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({ErrorType.TIMEOUT, ErrorType.CONNECTIVITY, ErrorType.RATE_LIMIT,
                        ErrorType.COMPONENT, ErrorType.UNKNOWN})


class StageStatus(str, Enum):
    """The outcome of one stage execution."""

    SUCCESS = "success"  # finished and produced an output
    FAILED = "failed"  # failed after all attempts
    SKIPPED = "skipped"  # not run: a branch not taken, all dependencies skipped, or a return happened


class RunStatus(str, Enum):
    """Lifecycle of a run as the daemon sees it."""

    PENDING = "pending"  # accepted, waiting for a concurrency slot
    RUNNING = "running"  # executing
    PAUSED = "paused"  # stopped before a breakpoint; waits for an operator's continue or step
    SUCCEEDED = "succeeded"  # finished; output available
    FAILED = "failed"  # a stage failed and the error propagated
    CANCELLED = "cancelled"  # cancelled by a user; resumable
    INTERRUPTED = "interrupted"  # the daemon stopped or died mid-run, or an unsafe stage needs a decision

    @property
    def finished(self) -> bool:
        """True for states in which nothing is executing."""
        return self not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED)

    @property
    def resumable(self) -> bool:
        """States from which ``resume`` continues the run."""
        return self in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)


MIXED = "mixed"  # a sum over several providers or models


def _merge_name(a: str | None, b: str | None) -> str | None:
    # None is neutral so that summing from an empty UsageMetrics keeps the provider/model name.
    if a is None:
        return b
    if b is None:
        return a
    return a if a == b else MIXED


@dataclass(slots=True)
class UsageMetrics:
    """Resources one stage (or, summed, one run) consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: float = 0.0
    provider: str | None = None
    model: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: UsageMetrics) -> UsageMetrics:
        return UsageMetrics(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            duration_ms=self.duration_ms + other.duration_ms,
            provider=_merge_name(self.provider, other.provider),
            model=_merge_name(self.model, other.model),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "provider": self.provider,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UsageMetrics:
        if not data:
            return cls()
        return cls(
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            cost_usd=float(data.get("cost_usd") or 0.0),
            duration_ms=float(data.get("duration_ms") or 0.0),
            provider=data.get("provider"),
            model=data.get("model"),
        )


@dataclass(slots=True)
class ComponentResult:
    """The committed outcome of one stage execution at one stage path."""

    stage_id: str
    component_type: str
    status: StageStatus
    output: Any = None
    error: str | None = None
    error_type: ErrorType | None = None
    usage: UsageMetrics = field(default_factory=UsageMetrics)
    attempts: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    # A failure the pipeline chose to live with (on_error=continue, a foreach that does not break,
    # a trycatch that caught it). Unhandled failures are retried when a failed run is resumed.
    handled: bool = False
    # The W3C trace (the run's) and span (this execution's) ids, hex; None when nothing traced it.
    trace_id: str | None = None
    span_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is StageStatus.SUCCESS

    def with_(self, **changes: Any) -> ComponentResult:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "component_type": self.component_type,
            "status": self.status.value,
            "output": self.output,
            "error": self.error,
            "error_type": self.error_type.value if self.error_type else None,
            "usage": self.usage.to_dict(),
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "handled": self.handled,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComponentResult:
        return cls(
            stage_id=data["stage_id"],
            component_type=data["component_type"],
            status=StageStatus(data["status"]),
            output=data.get("output"),
            error=data.get("error"),
            error_type=ErrorType(data["error_type"]) if data.get("error_type") else None,
            usage=UsageMetrics.from_dict(data.get("usage")),
            attempts=int(data.get("attempts") or 0),
            started_at=float(data.get("started_at") or 0.0),
            finished_at=float(data.get("finished_at") or 0.0),
            handled=bool(data.get("handled")),
            trace_id=data.get("trace_id"),
            span_id=data.get("span_id"),
        )

    @classmethod
    def skipped(cls, stage_id: str, component_type: str, reason: str) -> ComponentResult:
        now = time.time()
        return cls(stage_id=stage_id, component_type=component_type, status=StageStatus.SKIPPED,
                   output=None, error=reason, started_at=now, finished_at=now)



class RecordKind(str, Enum):
    """What a journal record holds."""

    RESULT = "result"  # a ComponentResult for one stage path
    DECISION = "decision"  # a ControlFlowState at a control-flow stage's path (latest one wins)


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of an atomic commit."""

    kind: RecordKind
    path: str
    result: ComponentResult | None = None
    state: ControlFlowState | None = None

    @classmethod
    def of_result(cls, path: str, result: ComponentResult) -> Record:
        return cls(RecordKind.RESULT, path, result=result)

    @classmethod
    def of_state(cls, path: str, state: ControlFlowState) -> Record:
        return cls(RecordKind.DECISION, path, state=state)


@dataclass(slots=True)
class RunSnapshot:
    """Everything committed for one run: the state a resumed run continues from."""

    results: dict[str, ComponentResult] = field(default_factory=dict)
    states: dict[str, ControlFlowState] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # highest started attempt per path

    def apply(self, record: Record) -> None:
        if record.kind is RecordKind.RESULT:
            assert record.result is not None
            self.results[record.path] = record.result
        else:
            assert record.state is not None
            self.states[record.path] = record.state

    def for_resume(self) -> RunSnapshot:
        """The snapshot a resume starts from: unhandled failures are dropped so they run again."""
        kept = {p: r for p, r in self.results.items()
                if r.status is not StageStatus.FAILED or r.handled}
        return RunSnapshot(results=kept, states=dict(self.states), attempts=dict(self.attempts))

    def in_flight(self) -> list[str]:
        """Paths that started an attempt but have no committed result (candidates to re-run)."""
        return [p for p in self.attempts if p not in self.results]


class RunStore(Protocol):
    """Where a run's records go. ``commit`` returns only once the batch is durable."""

    async def commit(self, records: Sequence[Record]) -> None: ...

    async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
        """Record that ``attempt`` of ``path`` begins.

        ``durable=True`` waits until it is committed (stages that are not safe to repeat);
        ``durable=False`` may ride along with the next commit, so a crash can lose it.
        """
        ...


class RunLedger(Protocol):
    """Where runs live: their status, changed only by conditional updates, and their records.

    Every status change names the statuses it may start from; of two racing changes exactly one
    applies and the other raises ``RunConflictError`` (``RunNotFoundError`` for an unknown run).
    The journal implements it on SQLite, ``MemoryRunLedger`` in memory; both pass the one contract
    suite in tests/contracts/.
    """

    async def create_run(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> Any:
        """Record a new ``pending`` run pinned to ``pipeline``."""
        ...

    async def run_status(self, run_id: str) -> RunStatus:
        """The run's current status."""
        ...

    async def set_run_status(self, run_id: str, status: RunStatus, *, expected: Iterable[RunStatus],
                             output: Any = None, error: Any = None) -> RunStatus:
        """Move the run to ``status`` if it is in one of ``expected``; returns the status it left."""
        ...

    async def record_resume(self, run_id: str, *, expected: Iterable[RunStatus],
                            pipeline: PipelineConfig | None = None) -> int:
        """Claim the run for a resume (back to ``pending``) if in ``expected``; the new resume count."""
        ...

    def run_store(self, run_id: str) -> RunStore:
        """The engine's ``RunStore`` for the run's records."""
        ...

    async def load_snapshot(self, run_id: str) -> RunSnapshot:
        """Everything committed for the run: latest result and decision per path, attempts."""
        ...



class ExecutionHooks:
    """Callbacks around a run; every method is optional (the base does nothing).

    A hook's exception is logged and swallowed: observing a run must never break it.
    """

    async def on_run_start(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> None: ...

    async def on_stage_start(self, run_id: str, path: str, stage: StageConfig, attempt: int) -> None: ...

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None: ...

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig,
                                result: ComponentResult) -> None: ...

    async def on_stage_skipped(self, run_id: str, path: str, stage: StageConfig, reason: str) -> None: ...

    async def on_run_complete(self, run_id: str, outcome: Any) -> None: ...


class CompositeHooks(ExecutionHooks):
    """Fans each callback out to several hooks, isolating their failures."""

    def __init__(self, hooks: Sequence[ExecutionHooks]) -> None:
        self.hooks = [h for h in hooks if h is not None]

    async def _each(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                await getattr(hook, name)(*args)
            except Exception:  # noqa: BLE001 - by contract a hook cannot kill the run
                log.exception("hook_failed", hook=type(hook).__name__, callback=name)

    async def on_run_start(self, *args: Any) -> None:
        await self._each("on_run_start", *args)

    async def on_stage_start(self, *args: Any) -> None:
        await self._each("on_stage_start", *args)

    async def on_stage_retry(self, *args: Any) -> None:
        await self._each("on_stage_retry", *args)

    async def on_stage_complete(self, *args: Any) -> None:
        await self._each("on_stage_complete", *args)

    async def on_stage_skipped(self, *args: Any) -> None:
        await self._each("on_stage_skipped", *args)

    async def on_run_complete(self, *args: Any) -> None:
        await self._each("on_run_complete", *args)


class Component(Protocol):
    """What a component class provides."""

    Input: type[BaseModel]

    async def execute(self, input: Any, context: ExecutionContext) -> Any: ...


class ChildRunner(Protocol):
    """Runs (or resumes) a subpipeline's child run; the daemon supplies a journaled one."""

    async def __call__(self, parent: ExecutingRun, path: str, child_run_id: str, pipeline_id: str,
                       inputs: dict[str, Any], *, cancellation: CancellationToken | None = None) -> RunOutcome: ...


class StageGate(Protocol):
    """Asked before a stage starts, with the inputs it will receive; may wait (a breakpoint).

    It returns when the stage may start, or raises ``RunCancelledError`` when the run is cancelled
    while waiting. The seed's ``check_and_wait_at_stage`` hook, as one awaitable.
    """

    async def __call__(self, run_id: str, path: str, stage_id: str, inputs: dict[str, Any],
                       cancellation: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class StageTask:
    """A leaf stage handed to a ``StageDispatcher``: what a worker needs to run it as the owner would."""

    run_id: str
    pipeline_id: str
    path: str
    stage: StageConfig  # with its effective retry policy (a trycatch's default applied)
    config: dict[str, Any]  # the stage's config with its templates resolved (the component's input)
    variables: Mapping[str, Any]  # loop variables of the frame (foreach item and index)
    attempt_base: int  # attempts started at this path before (attempt numbers continue)
    safe_to_repeat: bool  # the component's declaration: may an attempt started before run again
    force: bool  # the run was resumed with force: unsafe stages run again anyway
    epoch: int  # the owner's lease epoch for the run when the stage was handed over


class StageDispatcher(Protocol):
    """Runs opted-in leaf stages on any node's workers; the engine commits what comes back.

    ``epoch_of`` says whether the stage of ``run_id`` is dispatched (the owner's lease epoch) or
    runs locally (None: a child run, a run this node holds no lease on). ``dispatch`` returns the
    stage's result once a worker finished it (every attempt, same timeouts and retries as local
    execution); it raises ``UnsafeToRepeatError`` for a stage that is not safe to repeat and was
    in flight, and ``FencedError`` when another owner adopted the task. Cancelling the awaiting
    task withdraws the stage.
    """

    def epoch_of(self, run_id: str) -> int | None: ...

    async def dispatch(self, task: StageTask) -> ComponentResult: ...
