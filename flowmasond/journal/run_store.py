"""``JournalRunStore``: the engine's ``RunStore`` for one run, backed by the journal writer.

A commit appends the records to ``run_records`` (per-run ``seq`` 1, 2, 3... without gaps), the
matching ``run_events`` rows and the run's usage totals, all in the same transaction. Records are
encoded in the caller, so an unserialisable output fails only that caller.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any, Callable, Sequence

from flowmasond.engine.checkpoint import Record, RecordKind
from flowmasond.engine.types import MIXED, ComponentResult, StageStatus, UsageMetrics
from flowmasond.errors import JournalError, RunNotFoundError
from flowmasond.journal.events import EventKind
from flowmasond.journal.records import decision_params, result_params
from flowmasond.journal.rows import dumps
from flowmasond.journal.sqlfiles import queries
from flowmasond.journal.writer import JournalWriter

_RESULT_EVENT = {
    StageStatus.SUCCESS: EventKind.STAGE_COMPLETED.value,
    StageStatus.FAILED: EventKind.STAGE_FAILED.value,
    StageStatus.SKIPPED: EventKind.STAGE_SKIPPED.value,
}

# One record: (query name, path, its parameters); one event: (kind, path, data json).
_Row = tuple[str, str, dict[str, Any]]
_Event = tuple[str, str | None, str | None]


def result_summary(result: ComponentResult) -> dict[str, Any]:
    """The event payload of a committed result: its outcome without the (possibly large) output."""
    return {
        "stage_id": result.stage_id,
        "component_type": result.component_type,
        "status": result.status.value,
        "attempts": result.attempts,
        "error": result.error,
        "error_type": result.error_type.value if result.error_type else None,
        "handled": result.handled,
        "duration_ms": max(0.0, (result.finished_at - result.started_at) * 1000.0),
    }


def raise_missing_run(exc: sqlite3.IntegrityError, run_id: str) -> None:
    """Turn a foreign-key failure on ``run_id`` into ``RunNotFoundError``."""
    if "FOREIGN KEY" in str(exc):
        raise RunNotFoundError(run_id=run_id) from exc


def _commit_records(conn: sqlite3.Connection, run_id: str, rows: list[_Row],
                    events: list[_Event], usage: dict[str, Any] | None, now: float) -> None:
    q = queries()
    try:
        seq = conn.execute(q.last_record_seq, {"run_id": run_id}).fetchone()[0]
        for query, path, params in rows:
            seq += 1
            params.update(run_id=run_id, seq=seq, path=path, now=now)
            conn.execute(getattr(q, query), params)
        conn.executemany(q.insert_event, [
            {"run_id": run_id, "now": now, "kind": kind, "path": path, "data": data}
            for kind, path, data in events])
        if usage is not None:
            conn.execute(q.add_run_usage, usage)
    except sqlite3.IntegrityError as exc:
        raise_missing_run(exc, run_id)
        raise


def _insert_attempt(conn: sqlite3.Connection, run_id: str, path: str, attempt: int,
                    now: float) -> None:
    q = queries()
    kind = EventKind.STAGE_STARTED if attempt <= 1 else EventKind.STAGE_RETRY
    try:
        conn.execute(q.insert_attempt, {"run_id": run_id, "path": path, "attempt": attempt,
                                        "now": now})
        conn.execute(q.insert_event, {"run_id": run_id, "now": now, "kind": kind.value,
                                      "path": path, "data": dumps({"attempt": attempt})})
    except sqlite3.IntegrityError as exc:
        raise_missing_run(exc, run_id)
        raise


class JournalRunStore:
    """Commits one run's records durably; implements ``flowmasond.engine.checkpoint.RunStore``."""

    def __init__(self, writer: JournalWriter, run_id: str, clock: Callable[[], float]) -> None:
        self._writer = writer
        self._clock = clock
        self.run_id = run_id

    async def commit(self, records: Sequence[Record]) -> None:
        """Append ``records`` atomically; returns once they are durable."""
        if not records:
            return
        rows, events, usage = self._encode(records)
        await self._writer.write(
            partial(_commit_records, run_id=self.run_id, rows=rows, events=events, usage=usage,
                    now=self._clock()),
            label=f"commit of run {self.run_id}")

    async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
        """Record that ``attempt`` of ``path`` begins; ``durable=False`` rides along later."""
        work = partial(_insert_attempt, run_id=self.run_id, path=path, attempt=attempt,
                       now=self._clock())
        label = f"start of {path} attempt {attempt} in run {self.run_id}"
        if durable:
            await self._writer.write(work, label=label)
        else:
            self._writer.write_later(work, label=label)

    def _encode(self, records: Sequence[Record]) -> tuple[list[_Row], list[_Event],
                                                          dict[str, Any] | None]:
        rows: list[_Row] = []
        events: list[_Event] = []
        total: UsageMetrics | None = None
        for record in records:
            try:
                if record.kind is RecordKind.RESULT:
                    result = record.result
                    if result is None:
                        raise JournalError("a result record carries no result",
                                           run_id=self.run_id, path=record.path)
                    rows.append(("insert_result", record.path, result_params(result)))
                    events.append((_RESULT_EVENT[result.status], record.path,
                                   dumps(result_summary(result))))
                    total = result.usage if total is None else total + result.usage
                else:
                    if record.decision is None:
                        raise JournalError("a decision record carries no decision",
                                           run_id=self.run_id, path=record.path)
                    params = decision_params(record.decision)
                    rows.append(("insert_decision", record.path, params))
                    events.append((EventKind.STAGE_DECISION.value, record.path,
                                   params["decision"]))
            except (TypeError, ValueError) as exc:
                raise JournalError(f"record is not JSON-serialisable: {exc}", run_id=self.run_id,
                                   path=record.path, kind=record.kind.value) from exc
        # Durations alone are summed once, when the run finishes (update_run_status): an UPDATE of
        # the run's row on every commit would be the hot path's most expensive statement.
        if total is None or not (total.input_tokens or total.output_tokens or total.cost_usd
                                 or total.provider or total.model):
            return rows, events, None
        usage = {"run_id": self.run_id, "input_tokens": total.input_tokens,
                 "output_tokens": total.output_tokens, "cost_usd": total.cost_usd,
                 "duration_ms": total.duration_ms, "provider": total.provider,
                 "model": total.model, "mixed": MIXED}
        return rows, events, usage
