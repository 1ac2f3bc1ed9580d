"""The engine's durability seam: what it commits, and what a resumed run starts from.

The engine never talks to SQLite. It hands ``Record`` batches to a ``RunStore`` and awaits them
before any dependent work starts (write-ahead). The journal implements ``RunStore`` durably;
``MemoryRunStore`` is the in-memory implementation used by ``run-once`` and as the benchmark
baseline. A resumed run starts from a ``RunSnapshot`` that the store rebuilds from its records.

Stage paths name every execution uniquely within a run: top-level stages by id (``fetch``),
children of a control-flow stage under it (``tc/cleanup``), foreach iterations by index
(``loop/3/transform``, ``outer/0/inner/2/step``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, Sequence

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.types import ComponentResult, StageStatus


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


class MemoryRunStore:
    """A ``RunStore`` that keeps records in memory (no durability)."""

    def __init__(self, snapshot: RunSnapshot | None = None) -> None:
        self.snapshot = snapshot or RunSnapshot()
        self.commits = 0
        self.records: list[Record] = []

    async def commit(self, records: Sequence[Record]) -> None:
        self.commits += 1
        for record in records:
            self.records.append(record)
            self.snapshot.apply(record)

    async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
        if attempt > self.snapshot.attempts.get(path, 0):
            self.snapshot.attempts[path] = attempt
