"""The SQLite journal: durable runs, records, attempts and events (see state/README.md)."""

from __future__ import annotations

from flowmasond.journal.events import EventKind
from flowmasond.journal.journal import Journal
from flowmasond.journal.rows import EventRow, PruneResult, RunRow
from flowmasond.journal.run_store import JournalRunStore
from flowmasond.journal.writer import JournalWriter, WriterStats

__all__ = ["EventKind", "EventRow", "Journal", "JournalRunStore", "JournalWriter", "PruneResult",
           "RunRow", "WriterStats"]
