"""``MemoryRunStore``: the in-memory ``RunStore`` (no durability).

Used by ``run-once``, by engine tests and as the benchmark baseline; the journal's
``JournalRunStore`` is the durable implementation. Both pass tests/contracts/.
"""

from __future__ import annotations

from typing import Sequence

from flowmasond.engine.interfaces import Record, RunSnapshot


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
