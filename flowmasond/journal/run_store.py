"""``JournalRunStore``: the engine's ``RunStore`` for one run, backed by the journal writer.

A commit appends the records to ``run_records`` (per-run ``seq`` 1, 2, 3... without gaps) and adds
to the run's usage totals in one transaction; each record and attempt row is its own stage event
(``event_id``, migration 0007), so no event row is written beside it. Records are encoded in the
caller, so an unserialisable output fails only that caller.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any
from collections.abc import Callable, Sequence

from flowmasond.engine.interfaces import MIXED, Record, RecordKind, UsageMetrics
from flowmasond.errors import JournalError, RunNotFoundError
from flowmasond.journal.records import result_values, state_value
from flowmasond.journal.sqlfiles import queries
from flowmasond.journal.writer import JournalWriter

# One record: the insert statement and its positional parameters.
_Row = tuple[str, tuple[Any, ...]]


def raise_missing_run(exc: sqlite3.IntegrityError, run_id: str) -> None:
    """Turn a foreign-key failure on ``run_id`` into ``RunNotFoundError``."""
    if "FOREIGN KEY" in str(exc):
        raise RunNotFoundError(run_id=run_id) from exc


def _commit_records(conn: sqlite3.Connection, run_id: str, rows: list[_Row],
                    usage: dict[str, Any] | None) -> None:
    # One INSERT per record: the next seq and the event id are taken inside it.
    try:
        for sql, params in rows:
            conn.execute(sql, params)
        if usage is not None:
            conn.execute(queries().add_run_usage, usage)
    except sqlite3.IntegrityError as exc:
        raise_missing_run(exc, run_id)
        raise


def _insert_attempt(conn: sqlite3.Connection, params: tuple[str, str, int, float]) -> None:
    try:
        conn.execute(queries().insert_attempt, params)
    except sqlite3.IntegrityError as exc:
        raise_missing_run(exc, params[0])
        raise


def _nothing(conn: sqlite3.Connection) -> None:
    """A write with no statement: its transaction carries the deferred writes queued before it."""


class JournalRunStore:
    """Commits one run's records durably; implements ``flowmasond.engine.interfaces.RunStore``."""

    def __init__(self, writer: JournalWriter, run_id: str, clock: Callable[[], float]) -> None:
        self._writer = writer
        self._clock = clock
        self.run_id = run_id
        self._commit_label = f"commit of run {run_id}"

    async def commit(self, records: Sequence[Record]) -> None:
        """Append ``records`` atomically; returns once they are durable.

        An empty commit is a barrier: deferred attempt starts queued before it become durable too,
        so a snapshot read after any commit sees every start made before it.
        """
        if not records:
            if self._writer.pending:
                await self._writer.write(_nothing, label=f"barrier of run {self.run_id}")
            return
        rows, usage = self._encode(records, self._clock())
        await self._writer.write(partial(_commit_records, run_id=self.run_id, rows=rows,
                                         usage=usage),
                                 label=self._commit_label)

    async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
        """Record that ``attempt`` of ``path`` begins; ``durable=False`` rides along later."""
        work = partial(_insert_attempt, params=(self.run_id, path, attempt, self._clock()))
        label = f"start of {path} attempt {attempt} in run {self.run_id}"
        if durable:
            await self._writer.write(work, label=label)
        else:
            self._writer.write_later(work, label=label)

    def _encode(self, records: Sequence[Record],
                now: float) -> tuple[list[_Row], dict[str, Any] | None]:
        return encode_records(self.run_id, records, now)


def insert_records(conn: sqlite3.Connection, run_id: str, records: Sequence[Record], now: float) -> None:
    """Insert ``records`` inside the caller's transaction, without adding their usage to the run.

    A rerun seeds itself with the results it reuses: they cost this run nothing.
    """
    rows, _ = encode_records(run_id, records, now)
    _commit_records(conn, run_id, rows, None)


def encode_records(run_id: str, records: Sequence[Record],
                   now: float) -> tuple[list[_Row], dict[str, Any] | None]:
    """The INSERTs of ``records`` and the run usage they add (None: nothing to add)."""
    q = queries()
    rows: list[_Row] = []
    total: UsageMetrics | None = None
    for record in records:
        try:
            if record.kind is RecordKind.RESULT:
                result = record.result
                if result is None:
                    raise JournalError("a result record carries no result",
                                       run_id=run_id, path=record.path)
                rows.append((q.insert_result,
                             (run_id, record.path, now, *result_values(result))))
                total = result.usage if total is None else total + result.usage
            else:
                if record.state is None:
                    raise JournalError("a control-flow record carries no state",
                                       run_id=run_id, path=record.path)
                rows.append((q.insert_decision,
                             (run_id, record.path, now, state_value(record.state))))
        except (TypeError, ValueError) as exc:
            raise JournalError(f"record is not JSON-serialisable: {exc}", run_id=run_id,
                               path=record.path, kind=record.kind.value) from exc
    # Durations alone are summed once, when the run finishes (update_run_status): an UPDATE of
    # the run's row on every commit would be the hot path's most expensive statement.
    if total is None or not (total.input_tokens or total.output_tokens or total.cost_usd
                             or total.provider or total.model):
        return rows, None
    usage = {"run_id": run_id, "input_tokens": total.input_tokens,
             "output_tokens": total.output_tokens, "cost_usd": total.cost_usd,
             "duration_ms": total.duration_ms, "provider": total.provider,
             "model": total.model, "mixed": MIXED}
    return rows, usage
