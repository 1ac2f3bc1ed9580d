"""In-memory implementations of the engine's storage interfaces (no durability).

``MemoryRunStore`` (a ``RunStore``) is used by ``run-once``, by engine tests and as the benchmark
baseline; ``MemoryRunLedger`` (a ``RunLedger``) keeps runs and their statuses. The journal is the
durable implementation of both; tests/contracts/ runs one suite against each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence
from typing import Any

from flowmasond.engine.interfaces import Record, RunSnapshot, RunStatus
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import RunConflictError, RunNotFoundError


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


@dataclass(slots=True)
class _MemoryRun:
    status: RunStatus
    pipeline_hash: str
    resumed_count: int = 0
    output: Any = None
    error: Any = None
    store: MemoryRunStore = field(default_factory=MemoryRunStore)


class MemoryRunLedger:
    """A ``RunLedger`` in memory: statuses change only from an expected status, like the journal's."""

    def __init__(self) -> None:
        self._runs: dict[str, _MemoryRun] = {}

    def _run(self, run_id: str) -> _MemoryRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id=run_id) from None

    async def create_run(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> None:
        json.dumps(inputs)  # the journal stores JSON: refuse the same inputs it would
        self._runs[run_id] = _MemoryRun(status=RunStatus.PENDING, pipeline_hash=pipeline.content_hash())

    async def run_status(self, run_id: str) -> RunStatus:
        return self._run(run_id).status

    def _check(self, run_id: str, wanted: RunStatus, expected: Iterable[RunStatus]) -> _MemoryRun:
        run = self._run(run_id)
        allowed = {RunStatus(s) for s in expected}
        if run.status not in allowed:
            raise RunConflictError(f"run is {run.status.value}: another operation changed it first",
                                   run_id=run_id, status=run.status.value, wanted=wanted.value)
        return run

    async def set_run_status(self, run_id: str, status: RunStatus, *, expected: Iterable[RunStatus],
                             output: Any = None, error: Any = None) -> RunStatus:
        run = self._check(run_id, status, expected)
        previous, run.status, run.output, run.error = run.status, status, output, error
        return previous

    async def record_resume(self, run_id: str, *, expected: Iterable[RunStatus],
                            pipeline: PipelineConfig | None = None) -> int:
        run = self._check(run_id, RunStatus.PENDING, expected)
        run.status = RunStatus.PENDING
        run.resumed_count += 1
        if pipeline is not None:
            run.pipeline_hash = pipeline.content_hash()
        return run.resumed_count

    def run_store(self, run_id: str) -> MemoryRunStore:
        return self._run(run_id).store

    async def load_snapshot(self, run_id: str) -> RunSnapshot:
        snapshot = self._run(run_id).store.snapshot
        return RunSnapshot(results=dict(snapshot.results), states=dict(snapshot.states),
                           attempts=dict(snapshot.attempts))
