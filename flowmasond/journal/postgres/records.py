"""Run records on PostgreSQL: encoding them for ``insert_record``, the ``RunStore``, the snapshot.

The mapping is the SQLite journal's (flowmasond.journal.records): a result field by field, a
decision as its versioned JSON document; ``seq`` numbers a run's records 1, 2, 3... without gaps.
"""

from __future__ import annotations

import gc
import json
from typing import Any
from collections.abc import Callable, Sequence

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import (MIXED, ComponentResult, ErrorType, Record, RecordKind, RunSnapshot,
                                          StageStatus, UsageMetrics)
from flowmasond.errors import JournalError, RunNotFoundError
from flowmasond.journal.postgres.fence import RunFence
from flowmasond.journal.postgres.sql import pg_queries
from flowmasond.journal.postgres.writer import PgWriter

# allow_nan=False: PostgreSQL's json type refuses NaN and Infinity, so they are refused here,
# where the error can name the record, rather than by the server.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_STATUS = {status.value: status for status in StageStatus}
_ERROR_TYPE = {error_type.value: error_type for error_type in ErrorType}


def pg_dumps(value: Any) -> str:
    """Encode a JSON document for a ``json``/``jsonb`` column."""
    return _ENCODER.encode(value)


def pg_dumps_or_none(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


def pg_text(value: str | None) -> str | None:
    """``value`` without NUL characters, which PostgreSQL text cannot hold (U+FFFD instead)."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _record_params(run_id: str, record: Record, now: float) -> dict[str, Any]:
    params: dict[str, Any] = {"run_id": run_id, "path": record.path, "now": now, "decision": None,
                              "stage_id": None, "component_type": None, "status": None, "output": None,
                              "error": None, "error_type": None, "attempts": None, "started_at": None,
                              "finished_at": None, "handled": None, "input_tokens": None,
                              "output_tokens": None, "cost_usd": None, "duration_ms": None,
                              "provider": None, "model": None, "trace_id": None, "span_id": None}
    if record.kind is RecordKind.RESULT:
        result = record.result
        if result is None:
            raise JournalError("a result record carries no result", run_id=run_id, path=record.path)
        usage = result.usage
        params.update(kind="result", stage_id=result.stage_id, component_type=result.component_type,
                      status=result.status.value, output=pg_dumps_or_none(result.output),
                      error=pg_text(result.error),
                      error_type=None if result.error_type is None else result.error_type.value,
                      attempts=result.attempts, started_at=result.started_at,
                      finished_at=result.finished_at, handled=bool(result.handled),
                      input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                      cost_usd=float(usage.cost_usd), duration_ms=float(usage.duration_ms),
                      provider=usage.provider, model=usage.model, trace_id=result.trace_id,
                      span_id=result.span_id)
    else:
        if record.state is None:
            raise JournalError("a control-flow record carries no state", run_id=run_id, path=record.path)
        params.update(kind="decision", decision=pg_dumps(record.state.to_json()))
    return params


def encode_records(run_id: str, records: Sequence[Record],
                   now: float) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``insert_record`` parameters of ``records``, and the run usage they add (None: nothing)."""
    rows: list[dict[str, Any]] = []
    total: UsageMetrics | None = None
    for record in records:
        try:
            rows.append(_record_params(run_id, record, now))
        except (TypeError, ValueError) as exc:
            raise JournalError(f"record is not JSON-serialisable: {exc}", run_id=run_id,
                               path=record.path, kind=record.kind.value) from exc
        if record.result is not None:
            total = record.result.usage if total is None else total + record.result.usage
    # As in the SQLite journal, durations alone are summed when the run finishes.
    if total is None or not (total.input_tokens or total.output_tokens or total.cost_usd
                             or total.provider or total.model):
        return rows, None
    return rows, {"run_id": run_id, "input_tokens": total.input_tokens, "output_tokens": total.output_tokens,
                  "cost_usd": float(total.cost_usd), "duration_ms": float(total.duration_ms),
                  "provider": total.provider, "model": total.model, "mixed": MIXED}


async def insert_records(cur: Any, run_id: str, rows: list[dict[str, Any]],
                         usage: dict[str, Any] | None) -> None:
    """Insert encoded records (and add their usage) in the caller's transaction."""
    from psycopg import errors

    q = pg_queries()
    try:
        # executemany pipelines the statements: one round trip for the whole batch.
        await cur.executemany(q.insert_record, rows)
        if usage is not None:
            await cur.execute(q.add_run_usage, usage)
    except errors.ForeignKeyViolation as exc:
        raise RunNotFoundError(run_id=run_id) from exc


async def _commit(cur: Any, *, fence: RunFence, run_id: str, rows: list[dict[str, Any]],
                  usage: dict[str, Any] | None) -> None:
    await fence.check(cur, run_id)
    await insert_records(cur, run_id, rows, usage)


async def _insert_attempt(cur: Any, *, fence: RunFence, params: dict[str, Any]) -> None:
    from psycopg import errors

    await fence.check(cur, params["run_id"])
    try:
        await cur.execute(pg_queries().insert_attempt, params)
    except errors.ForeignKeyViolation as exc:
        raise RunNotFoundError(run_id=params["run_id"]) from exc


async def _nothing(cur: Any) -> None:
    """A write with no statement: its transaction carries the deferred writes queued before it."""


class PgRunStore:
    """Commits one run's records durably; implements ``flowmasond.engine.interfaces.RunStore``."""

    def __init__(self, writer: PgWriter, run_id: str, clock: Callable[[], float], fence: RunFence) -> None:
        self._writer = writer
        self._clock = clock
        self._fence = fence
        self.run_id = run_id

    async def commit(self, records: Sequence[Record]) -> None:
        """Append ``records`` atomically; returns once they are committed.

        An empty commit is a barrier: deferred attempt starts queued before it are committed too.
        """
        if not records:
            if self._writer.pending:
                await self._writer.write(_nothing, label=f"barrier of run {self.run_id}")
            return
        rows, usage = encode_records(self.run_id, records, self._clock())

        async def work(cur: Any) -> None:
            await _commit(cur, fence=self._fence, run_id=self.run_id, rows=rows, usage=usage)

        await self._writer.write(work, label=f"commit of run {self.run_id}")

    async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
        """Record that ``attempt`` of ``path`` begins; ``durable=False`` rides along later."""
        params = {"run_id": self.run_id, "path": path, "attempt": attempt, "now": self._clock()}

        async def work(cur: Any) -> None:
            await _insert_attempt(cur, fence=self._fence, params=params)

        label = f"start of {path} attempt {attempt} in run {self.run_id}"
        if durable:
            await self._writer.write(work, label=label)
        else:
            self._writer.write_later(work, label=label)


async def read_snapshot(conn: Any, run_id: str) -> RunSnapshot | None:
    """Rebuild ``run_id``'s snapshot from one consistent read (None if there is no such run)."""
    q = pg_queries()
    async with conn.transaction():
        # Binary results: numbers arrive without text parsing (a third of the time at 10,000 records).
        cur = conn.cursor(binary=True)
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await cur.execute(q.run_exists, {"run_id": run_id})
        if await cur.fetchone() is None:
            return None
        await cur.execute(q.snapshot_records, {"run_id": run_id})
        records = await cur.fetchall()
        await cur.execute(q.snapshot_attempts, {"run_id": run_id})
        attempts = await cur.fetchall()
    collecting = gc.isenabled()
    if collecting:
        gc.disable()  # thousands of small acyclic objects: see flowmasond.journal.records
    try:
        snapshot = _decode(records)
    finally:
        if collecting:
            gc.enable()
    snapshot.attempts = {path: int(attempt) for path, attempt in attempts}
    return snapshot


def _decode(records: list[tuple[Any, ...]]) -> RunSnapshot:
    snapshot = RunSnapshot()
    results, states = snapshot.results, snapshot.states
    loads = json.loads
    for (kind, path, decision, stage_id, component_type, status, output, error, error_type,
         input_tokens, output_tokens, cost_usd, provider, model, duration_ms, attempts, started_at,
         finished_at, handled, trace_id, span_id) in records:
        if kind == "result":
            usage = UsageMetrics(int(input_tokens or 0), int(output_tokens or 0), float(cost_usd or 0.0),
                                 float(duration_ms or 0.0), provider, model)
            results[path] = ComponentResult(
                stage_id, component_type, _STATUS[status], None if output is None else loads(output), error,
                None if error_type is None else _ERROR_TYPE.get(error_type), usage, attempts,
                started_at, finished_at, bool(handled), trace_id, span_id)
        else:
            states[path] = ControlFlowState.from_json(loads(decision))
    return snapshot
