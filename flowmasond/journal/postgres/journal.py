"""``PgJournal``: the daemon's durable record of runs, on a PostgreSQL database.

The public surface is the SQLite ``Journal``'s (flowmasond.journal.journal), so the run manager,
scheduler, log store and API use either unchanged. Writes go through the single group-committing
``PgWriter`` session; queries use a small pool of autocommit reader sessions. The schema is
``state/postgresql/migrations``, the queries ``state/postgresql/queries``.

One owner: with the default fence, the writer's session holds a session-level advisory lock on a
fixed key for the journal's life (re-taken on every reconnection before anything is written), so a
second daemon on the same database is refused with ``JournalLockedError`` naming the holder, as the
SQLite journal's flock does for a state directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import structlog

from flowmasond.engine.interfaces import Record, RunSnapshot, RunStatus, UsageMetrics
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import FlowmasonError, JournalError, JournalLockedError, RunNotFoundError
from flowmasond.journal.events import EventKind
from flowmasond.journal.journal import ScheduleRecord
from flowmasond.journal.params import conflict_error, list_params, pin_params, status_values
from flowmasond.journal.postgres.fence import NoFence, RunFence
from flowmasond.journal.postgres.records import (PgRunStore, encode_records, insert_records, pg_dumps,
                                                 pg_dumps_or_none, pg_text, read_snapshot)
from flowmasond.journal.postgres.sql import OWNER_LOCK_KEY, migrate, pg_queries
from flowmasond.journal.postgres.writer import (DEFAULT_RECONNECT_TIMEOUT_S, Backoff, PgWriter,
                                                is_connection_lost, translate)
from flowmasond.journal.rows import EventRow, LogRow, PruneResult, RunRow
from flowmasond.journal.writer import DEFAULT_FLUSH_DELAY_S, WriterStats

T = TypeVar("T")
log = structlog.get_logger("flowmasond.journal")

_EVENTS_PAGE = 1000
_FOLLOW_POLL_S = 0.5
READER_POOL_SIZE = 4
CONNECT_TIMEOUT_S = 10
PING_TIMEOUT_S = 5.0
_WAIT_LOG_EVERY_S = 5.0


def describe_dsn(dsn: str) -> str:
    """``dsn`` without its password, for logs and error messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is reported by connect itself
        return "<unparsable dsn>"
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()) if k in ("host", "port", "dbname", "user"))


def application_name() -> str:
    """How this daemon's sessions appear in ``pg_stat_activity`` (the lock refusal quotes it)."""
    return f"flowmasond pid={os.getpid()} host={socket.gethostname()}"[:63]


@dataclass(frozen=True, slots=True)
class _Options:
    dsn: str
    label: str
    single_owner: bool
    reconnect_timeout_s: float


class PgJournal:
    """The PostgreSQL journal; implements ``flowmasond.engine.interfaces.RunLedger`` like ``Journal``."""

    def __init__(self, *, options: _Options, writer: PgWriter, pool: Any, clock: Callable[[], float],
                 fence: RunFence) -> None:
        self._options = options
        self._writer = writer
        self._pool = pool
        self._clock = clock
        self._fence = fence
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, dsn: str, *, fence: RunFence | None = None, single_owner: bool | None = None,
                   flush_delay_s: float = DEFAULT_FLUSH_DELAY_S,
                   reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
                   clock: Callable[[], float] = time.time) -> PgJournal:
        """Connect to ``dsn``, migrate, take the single-owner lock, start the writer.

        ``fence``: checked in every run-writing transaction (flowmasond.journal.postgres.fence).
        ``single_owner`` (default: True without a fence) takes the advisory lock that makes this
        daemon the database's only writer; raises ``JournalLockedError`` naming the holder.
        Raises ``SchemaTooNewError`` for a database migrated by a newer flowmasond.
        """
        from psycopg_pool import AsyncConnectionPool

        options = _Options(dsn=dsn, label=describe_dsn(dsn),
                           single_owner=fence is None if single_owner is None else single_owner,
                           reconnect_timeout_s=reconnect_timeout_s)
        first = await _connect_at_start(dsn, options.label, reconnect_timeout_s)
        try:
            applied = await migrate(first, now=clock())
            if applied:
                log.info("journal migrated", database=options.label, applied=applied)
            if options.single_owner:
                await _take_owner_lock(first, options.label)
        except BaseException as exc:
            await first.close()
            if isinstance(exc, FlowmasonError) or not isinstance(exc, Exception):
                raise
            raise translate(exc, dsn=options.label, operation="open") from exc

        async def writer_session() -> Any:
            conn = await _connect(dsn)
            if options.single_owner:
                try:
                    await _take_owner_lock(conn, options.label)
                except BaseException:
                    await conn.close()
                    raise
            return conn

        writer = PgWriter(writer_session, dsn=options.label, flush_delay_s=flush_delay_s,
                          reconnect_timeout_s=reconnect_timeout_s)
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=READER_POOL_SIZE, open=False, timeout=5.0,
                                   kwargs={"autocommit": True, "application_name": application_name()},
                                   name="flowmasond-journal-readers", reconnect_timeout=reconnect_timeout_s)
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except BaseException as exc:
            await first.close()
            await pool.close()
            if not isinstance(exc, Exception):
                raise
            raise translate(exc, dsn=options.label, operation="open readers") from exc
        await writer.start(first)
        return cls(options=options, writer=writer, pool=pool, clock=clock, fence=fence or NoFence())

    async def close(self) -> None:
        """Commit queued writes, close the sessions (the owner lock goes with the writer's)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.close()
        finally:
            self._writer.commit_signal().set()
            await self._pool.close()

    async def __aenter__(self) -> PgJournal:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def database(self) -> str:
        """The database, as host/port/dbname/user (no password)."""
        return self._options.label

    @property
    def writer(self) -> PgWriter:
        """The writer (``stats()``, ``commit_observer``, ``reconnects``)."""
        return self._writer

    @property
    def fence(self) -> RunFence:
        return self._fence

    def stats(self) -> WriterStats:
        return self._writer.stats()

    # -- pipelines and runs ----------------------------------------------------------------------

    async def pin_pipeline(self, pipeline: PipelineConfig) -> str:
        """Store ``pipeline``'s canonical JSON once; returns its content hash."""
        pin = pin_params(pipeline, self._clock())

        async def work(cur: Any) -> None:
            await cur.execute(pg_queries().pin_pipeline, pin)

        await self._writer.write(work, label=f"pin of {pipeline.id}")
        return str(pin["hash"])

    async def create_run(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any], *,
                         status: RunStatus = RunStatus.PENDING,
                         parent_run_id: str | None = None, parent_path: str | None = None,
                         schedule_id: str | None = None, fire_time: float | None = None,
                         forked_from: str | None = None, from_stage: str | None = None,
                         breakpoints: Iterable[str] = (),
                         seed: list[Record] | None = None, start: bool = False) -> RunRow:
        """Record a new run pinned to ``pipeline`` (pinning it if needed); see ``Journal.create_run``
        (``start``: created ``pending`` and marked ``running`` in the same transaction)."""
        if start and status is not RunStatus.PENDING:
            raise ValueError("start=True creates a pending run and marks it running")
        now = self._clock()
        pin = pin_params(pipeline, now)
        try:
            inputs_json = pg_dumps(inputs)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"run inputs are not JSON-serialisable: {exc}", run_id=run_id) from exc
        points = sorted(set(breakpoints))
        stored = RunStatus.RUNNING if start else status
        params = {"run_id": run_id, "pipeline_id": pipeline.id, "pipeline_hash": pin["hash"],
                  "inputs": inputs_json, "status": stored.value, "now": now,
                  "started_at": now if start else None,
                  "parent_run_id": parent_run_id, "parent_path": parent_path,
                  "schedule_id": schedule_id, "fire_time": fire_time,
                  "forked_from": forked_from, "from_stage": from_stage, "breakpoints": pg_dumps(points)}
        event = pg_dumps({"pipeline_id": pipeline.id, "pipeline_hash": pin["hash"], "status": status.value,
                          "parent_run_id": parent_run_id, "parent_path": parent_path,
                          "schedule_id": schedule_id, "fire_time": fire_time})
        forked = None
        if forked_from is not None:
            forked = pg_dumps({"forked_from": forked_from, "from_stage": from_stage,
                               "reused": sorted({r.path for r in seed or []})})
        rows, _ = encode_records(run_id, seed or [], now)
        fence = self._fence

        async def work(cur: Any) -> None:
            q = pg_queries()
            await fence.check(cur, run_id)
            await cur.execute(q.pin_pipeline, pin)
            await cur.execute(q.insert_run, params)
            if await cur.fetchone() is None:
                raise JournalError("a run with this id already exists", run_id=run_id)
            await _event(cur, run_id, now, EventKind.RUN_CREATED, event)
            if forked is not None:
                await _event(cur, run_id, now, EventKind.RUN_FORKED, forked)
            if rows:
                # A rerun's seed: the reused results cost this run nothing (no usage added).
                await insert_records(cur, run_id, rows, None)
            if start:
                # Last, where set_run_status right after the creation would have put it.
                await _event(cur, run_id, now, EventKind.RUN_STATUS, _STARTED_EVENT)

        await self._writer.write(work, label=f"creation of run {run_id}")
        return RunRow(run_id=run_id, pipeline_id=pipeline.id, pipeline_hash=str(pin["hash"]),
                      inputs=json.loads(inputs_json), status=stored, created_at=now,
                      started_at=params["started_at"],
                      parent_run_id=parent_run_id, parent_path=parent_path, schedule_id=schedule_id,
                      fire_time=fire_time, usage=UsageMetrics(), forked_from=forked_from,
                      from_stage=from_stage, breakpoints=tuple(points))

    async def set_run_status(self, run_id: str, status: RunStatus, *, expected: Iterable[RunStatus],
                             output: Any = None, error: FlowmasonError | dict[str, Any] | None = None) -> RunStatus:
        """Move a run to ``status`` if it is in one of ``expected``; returns the status it left.

        ``UPDATE ... WHERE status = ANY(expected) RETURNING``: of two racing changes exactly one
        applies, the other raises ``RunConflictError`` (``RunNotFoundError`` for no run).
        """
        error_dict = error.to_dict() if isinstance(error, FlowmasonError) else error
        try:
            output_json = pg_dumps_or_none(output)
            error_json = pg_dumps_or_none(error_dict)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"run output is not JSON-serialisable: {exc}", run_id=run_id) from exc
        wanted = status_values(expected)
        now = self._clock()
        params = {"run_id": run_id, "status": status.value, "output": output_json, "error": error_json,
                  "finished": status.finished, "now": now, "expected": wanted}
        fence = self._fence

        async def work(cur: Any) -> RunStatus:
            q = pg_queries()
            await fence.check(cur, run_id)
            previous = await _locked_status(cur, run_id)
            await cur.execute(q.update_run_status, params)
            if await cur.fetchone() is None:
                raise conflict_error(run_id, previous, status.value, wanted)
            await _event(cur, run_id, now, EventKind.RUN_STATUS,
                         pg_dumps({"status": status.value, "previous": previous, "error": error_dict}))
            return RunStatus(previous)

        return await self._writer.write(work, label=f"status {status.value} of run {run_id}")

    async def record_resume(self, run_id: str, *, expected: Iterable[RunStatus],
                            pipeline: PipelineConfig | None = None, start: bool = False) -> int:
        """Claim ``run_id`` for a resume (back to ``pending``); returns the new ``resumed_count``.

        ``start``: also ``running``, in the same transaction (as ``set_run_status`` right after)."""
        now = self._clock()
        pin = pin_params(pipeline, now) if pipeline is not None else None
        wanted = status_values(expected)
        fence = self._fence

        async def work(cur: Any) -> int:
            q = pg_queries()
            await fence.check(cur, run_id)
            await cur.execute(q.run_status, {"run_id": run_id})
            row = await cur.fetchone()
            if row is None:
                raise RunNotFoundError(run_id=run_id)
            previous, previous_hash = row
            if pin is not None:
                await cur.execute(q.pin_pipeline, pin)
            await cur.execute(q.record_resume, {"run_id": run_id, "expected": wanted,
                                                "pipeline_hash": pin["hash"] if pin else None})
            claimed = await cur.fetchone()
            if claimed is None:
                raise conflict_error(run_id, previous, RunStatus.PENDING.value, wanted)
            count = int(claimed[0])
            await _event(cur, run_id, now, EventKind.RUN_STATUS,
                         pg_dumps({"status": RunStatus.PENDING.value, "previous": previous, "error": None}))
            await _event(cur, run_id, now, EventKind.RUN_RESUMED,
                         pg_dumps({"resumed_count": count, "pipeline_hash": pin["hash"] if pin else previous_hash,
                                   "previous_hash": previous_hash}))
            if start:
                await cur.execute(q.update_run_status, {
                    "run_id": run_id, "status": RunStatus.RUNNING.value, "output": None, "error": None,
                    "finished": False, "now": now, "expected": [RunStatus.PENDING.value]})
                if await cur.fetchone() is None:
                    raise conflict_error(run_id, RunStatus.PENDING.value, RunStatus.RUNNING.value,
                                         [RunStatus.PENDING.value])
                await _event(cur, run_id, now, EventKind.RUN_STATUS,
                             pg_dumps({"status": RunStatus.RUNNING.value, "previous": RunStatus.PENDING.value,
                                       "error": None}))
            return count

        return await self._writer.write(work, label=f"resume of run {run_id}")

    async def increment_recovery_attempts(self, run_id: str) -> int:
        """Count one more crash recovery of ``run_id``; returns the new count."""
        now = self._clock()
        fence = self._fence

        async def work(cur: Any) -> int:
            await fence.check(cur, run_id)
            await cur.execute(pg_queries().increment_recovery_attempts, {"run_id": run_id})
            row = await cur.fetchone()
            if row is None:
                raise RunNotFoundError(run_id=run_id)
            count = int(row[0])
            await _event(cur, run_id, now, EventKind.RUN_RECOVERY, pg_dumps({"recovery_attempts": count}))
            return count

        return await self._writer.write(work, label=f"recovery of run {run_id}")

    async def emit(self, run_id: str, kind: str, *, path: str | None = None,
                   data: dict[str, Any] | None = None, durable: bool = False) -> None:
        """Append an event; by default it rides along with the next commit."""
        try:
            data_json = pg_dumps_or_none(data)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"event data is not JSON-serialisable: {exc}", run_id=run_id, kind=kind) from exc
        params = {"run_id": run_id, "now": self._clock(), "kind": kind, "path": path, "data": data_json}

        async def work(cur: Any) -> None:
            from psycopg import errors

            try:
                await cur.execute(pg_queries().insert_event, params)
            except errors.ForeignKeyViolation as exc:
                raise RunNotFoundError(run_id=run_id) from exc

        if durable:
            await self._writer.write(work, label=f"event {kind} of run {run_id}")
        else:
            self._writer.write_later(work, label=f"event {kind} of run {run_id}")

    def run_store(self, run_id: str) -> PgRunStore:
        """The engine's ``RunStore`` for ``run_id``."""
        return PgRunStore(self._writer, run_id, self._clock, self._fence)

    # -- queries (reader pool) -------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRow:
        """The run ``run_id``; raises ``RunNotFoundError``."""
        rows = await self._fetch_dicts("get_run", pg_queries().get_run, {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id=run_id)
        return RunRow.from_row(cast(Any, rows[0]))

    async def run_status(self, run_id: str) -> RunStatus:
        """The status of ``run_id``; raises ``RunNotFoundError``."""
        rows = await self._fetch("run_status", pg_queries().run_status_read, {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id=run_id)
        return RunStatus(rows[0][0])

    async def list_runs(self, *, status: RunStatus | Iterable[RunStatus] | None = None,
                        pipeline_id: str | None = None, limit: int = 100,
                        offset: int = 0, since: float | None = None, until: float | None = None,
                        schedule_id: str | None = None, parent_run_id: str | None = None,
                        cursor: tuple[float, str] | None = None) -> list[RunRow]:
        """Runs newest first, filtered (every None matches all); ``cursor``: after that run."""
        params = list_params(status, pipeline_id, since, until, schedule_id, parent_run_id)
        params.update({"limit": limit, "offset": offset, "cursor_at": cursor[0] if cursor else None,
                       "cursor_id": cursor[1] if cursor else None})
        rows = await self._fetch_dicts("list_runs", pg_queries().list_runs, params)
        return [RunRow.from_row(cast(Any, row)) for row in rows]

    async def count_runs(self, *, status: RunStatus | Iterable[RunStatus] | None = None,
                         pipeline_id: str | None = None, since: float | None = None,
                         until: float | None = None, schedule_id: str | None = None,
                         parent_run_id: str | None = None) -> int:
        """How many runs ``list_runs`` would list with these filters (without paging)."""
        params = list_params(status, pipeline_id, since, until, schedule_id, parent_run_id)
        rows = await self._fetch("count_runs", pg_queries().count_runs, params)
        return int(rows[0][0])

    async def child_runs(self, run_id: str) -> list[RunRow]:
        """Runs started by ``run_id`` (subpipelines), oldest first."""
        rows = await self._fetch_dicts("child_runs", pg_queries().child_runs, {"run_id": run_id})
        return [RunRow.from_row(cast(Any, row)) for row in rows]

    async def load_snapshot(self, run_id: str) -> RunSnapshot:
        """Everything committed for ``run_id``: latest result and decision per path, attempts."""
        snapshot = await self._read("load_snapshot", lambda conn: read_snapshot(conn, run_id))
        if snapshot is None:
            raise RunNotFoundError(run_id=run_id)
        return snapshot

    async def pinned_definition(self, run_id: str) -> PipelineConfig:
        """The exact pipeline definition ``run_id`` is pinned to."""
        rows = await self._fetch("pinned_definition", pg_queries().run_definition, {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id=run_id)
        return PipelineConfig.model_validate_json(rows[0][0])

    async def pinned_pipeline(self, pipeline_hash: str) -> PipelineConfig | None:
        """The pinned definition with ``pipeline_hash``, if the journal holds it."""
        rows = await self._fetch("pinned_pipeline", pg_queries().pinned_definition, {"hash": pipeline_hash})
        return PipelineConfig.model_validate_json(rows[0][0]) if rows else None

    async def events(self, run_id: str | None = None, *, after_id: int = 0,
                     limit: int = _EVENTS_PAGE, settled: bool = True) -> list[EventRow]:
        """Events after the event ``after_id`` in follower order (of one run, or of all).

        Follower order is (writing transaction, id): with several writers, ids are not commit order.
        ``settled`` (the default) returns only events of transactions older than every transaction
        still in progress, so that resuming after the last one returned never skips an event that
        commits later; False returns everything committed (for a last read: nothing follows it).
        Resume with the last returned event's id (not the largest id).
        """
        q = pg_queries()
        params = {"after_id": after_id, "limit": limit, "settled": settled}
        if run_id is None:
            rows = await self._fetch_dicts("events", q.events_after, params)
        else:
            rows = await self._fetch_dicts("events", q.run_events_after, {**params, "run_id": run_id})
        return [EventRow.from_row(cast(Any, row)) for row in rows]

    async def follow(self, run_id: str | None = None, *, after_id: int = 0) -> AsyncIterator[EventRow]:
        """Yield events after ``after_id`` as they are committed, until the journal closes."""
        cursor = after_id
        while not self._closed:
            signal = self._writer.commit_signal()  # taken before reading (see Journal.follow)
            try:
                batch = await self.events(run_id, after_id=cursor)
            except JournalError:
                if self._closed:
                    return
                raise
            for event in batch:
                cursor = event.id
                yield event
            if len(batch) < _EVENTS_PAGE:
                # Other nodes' commits (and events held back behind their open transactions) wake
                # no local signal: poll as well.
                try:
                    await asyncio.wait_for(signal.wait(), timeout=_FOLLOW_POLL_S)
                except TimeoutError:
                    pass

    async def count_runs_by_status(self) -> dict[str, int]:
        """How many runs the journal holds in each status."""
        rows = await self._fetch("count_runs_by_status", pg_queries().count_runs_by_status, {})
        return {str(row[0]): int(row[1]) for row in rows}

    async def active_runs_of_schedule(self, pipeline_id: str, schedule_id: str) -> list[tuple[str, RunStatus]]:
        """The schedule's pending, running and paused runs, oldest first (its overlap policy counts them)."""
        rows = await self._fetch("active_runs_of_schedule", pg_queries().active_runs_of_schedule,
                                 {"pipeline_id": pipeline_id, "schedule_id": schedule_id})
        return [(row[0], RunStatus(row[1])) for row in rows]

    async def ping(self) -> bool:
        """True when a reader session and the writer's session answer, or while the database is
        unreachable and the writer waits for it (the systemd watchdog's check: restarting the
        daemon would not bring the database back, and would stop the stages running meanwhile).
        """
        from psycopg_pool import PoolTimeout

        conn = None
        try:
            async with self._pool.connection(timeout=PING_TIMEOUT_S) as conn:
                await conn.execute(pg_queries().ping)
        except Exception as exc:
            if not (isinstance(exc, PoolTimeout) or is_connection_lost(conn, exc)) or not self._writer.alive:
                raise translate(exc, dsn=self._options.label, operation="ping") from exc
            log.warning("journal database unreachable", database=self._options.label, error=str(exc))
            return True
        if self._writer.reconnecting:
            return True

        async def ping_writer(cur: Any) -> None:
            await cur.execute(pg_queries().ping)

        await self._writer.call(ping_writer)
        return True

    async def last_event_id(self) -> int:
        """The id of the newest event (0 when there is none); a follower's starting point."""
        rows = await self._fetch("last_event_id", pg_queries().last_event_id, {})
        return int(rows[0][0])

    # -- scheduler state -------------------------------------------------------------------------

    async def record_fire(self, pipeline_id: str, schedule_id: str, fire_time: float, *,
                          run_id: str | None = None) -> bool:
        """Record one fire of a schedule; False if that fire was already recorded (by any daemon)."""
        params = {"pipeline_id": pipeline_id, "schedule_id": schedule_id, "fire_time": fire_time,
                  "run_id": run_id, "now": self._clock()}

        async def work(cur: Any) -> bool:
            await cur.execute(pg_queries().record_fire, params)
            return await cur.fetchone() is not None

        return await self._writer.write(work, label=f"fire of {pipeline_id}/{schedule_id}")

    async def last_fire_time(self, pipeline_id: str, schedule_id: str) -> float | None:
        """The latest recorded fire time of a schedule."""
        rows = await self._fetch("last_fire_time", pg_queries().last_fire_time,
                                 {"pipeline_id": pipeline_id, "schedule_id": schedule_id})
        return None if rows[0][0] is None else float(rows[0][0])

    async def set_schedule_paused(self, pipeline_id: str, schedule_id: str, paused: bool) -> None:
        """Persist a schedule's pause state."""
        params = {"pipeline_id": pipeline_id, "schedule_id": schedule_id, "paused": bool(paused),
                  "now": self._clock()}

        async def work(cur: Any) -> None:
            await cur.execute(pg_queries().set_schedule_paused, params)

        await self._writer.write(work, label=f"pause state of {pipeline_id}/{schedule_id}")

    async def paused_schedules(self) -> set[tuple[str, str]]:
        """``(pipeline_id, schedule_id)`` of every paused schedule."""
        rows = await self._fetch("paused_schedules", pg_queries().paused_schedules, {})
        return {(row[0], row[1]) for row in rows}

    async def mark_schedules_seen(self, keys: Iterable[tuple[str, str]]) -> None:
        """Note ``(pipeline_id, schedule_id)`` schedules as loaded (the first time is kept)."""
        params = [{"pipeline_id": pid, "schedule_id": sid, "now": self._clock()} for pid, sid in keys]
        if not params:
            return

        async def work(cur: Any) -> None:
            await cur.executemany(pg_queries().mark_schedule_seen, params)

        await self._writer.write(work, label=f"{len(params)} schedules seen")

    async def schedule_records(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ScheduleRecord]:
        """Each schedule's persisted state and latest fire, read in one pass."""
        wanted = list(keys)

        async def read(conn: Any) -> dict[tuple[str, str], ScheduleRecord]:
            q = pg_queries()
            records: dict[tuple[str, str], ScheduleRecord] = {}
            cur = conn.cursor()
            for pid, sid in wanted:
                params = {"pipeline_id": pid, "schedule_id": sid}
                await cur.execute(q.schedule_state_of, params)
                state = await cur.fetchone()
                await cur.execute(q.latest_fire, params)
                fire = await cur.fetchone()
                records[(pid, sid)] = ScheduleRecord(
                    paused=bool(state[0]) if state else False,
                    first_seen_at=state[1] if state else None,
                    last_fire_time=fire[0] if fire else None,
                    last_run_id=fire[1] if fire else None,
                    last_recorded_at=fire[2] if fire else None,
                    last_run_status=RunStatus(fire[3]) if fire and fire[3] else None)
            return records

        return await self._read("schedule_records", read)

    async def run_statuses(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        """The status of each run in ``run_ids`` that the journal holds."""
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        rows = await self._fetch("run_statuses", pg_queries().run_statuses, {"run_ids": ids})
        return {row[0]: RunStatus(row[1]) for row in rows}

    # -- operating: breakpoints, logs, delete --------------------------------------------------

    async def set_paused(self, run_id: str, paused_at: dict[str, Any] | None) -> bool:
        """Mark a running run ``paused`` with the stages waiting (None: back to ``running``)."""
        paused = paused_at is not None
        params = {"run_id": run_id, "paused_at": pg_dumps_or_none(paused_at)}
        now = self._clock()
        fence = self._fence

        async def work(cur: Any) -> bool:
            q = pg_queries()
            await fence.check(cur, run_id)
            await cur.execute(q.set_paused if paused else q.set_unpaused, params)
            if await cur.fetchone() is None:
                return False
            if paused:
                await _event(cur, run_id, now, EventKind.RUN_PAUSED, pg_dumps({"paused_at": paused_at}))
            await _event(cur, run_id, now, EventKind.RUN_STATUS,
                         pg_dumps({"status": "paused" if paused else "running",
                                   "previous": "running" if paused else "paused", "error": None}))
            return True

        return await self._writer.write(work, label=f"pause state of run {run_id}")

    async def set_breakpoints(self, run_id: str, breakpoints: Iterable[str], stepping: bool) -> None:
        """Replace a run's breakpoints and stepping flag (journaled with an event)."""
        points = sorted(set(breakpoints))
        params = {"run_id": run_id, "breakpoints": pg_dumps(points), "stepping": bool(stepping)}
        now = self._clock()

        async def work(cur: Any) -> None:
            await cur.execute(pg_queries().set_breakpoints, params)
            if await cur.fetchone() is None:
                raise RunNotFoundError(run_id=run_id)
            await _event(cur, run_id, now, EventKind.RUN_BREAKPOINTS,
                         pg_dumps({"breakpoints": points, "stepping": stepping}))

        await self._writer.write(work, label=f"breakpoints of run {run_id}")

    async def append_logs(self, chunks: list[dict[str, Any]]) -> None:
        """Store stage log chunks (``run_id``, ``path``, ``stream``, ``ts``, ``text`` each)."""
        if not chunks:
            return
        rows = [{**chunk, "text": pg_text(chunk["text"])} for chunk in chunks]

        async def work(cur: Any) -> None:
            await cur.executemany(pg_queries().insert_log, rows)

        await self._writer.write(work, label=f"{len(chunks)} stage log chunks")

    async def logs(self, run_id: str, *, path: str | None = None, after_id: int = 0,
                   limit: int = _EVENTS_PAGE) -> list[LogRow]:
        """Log chunks of ``run_id`` (of one stage path and what is nested under it) after ``after_id``."""
        rows = await self._fetch_dicts("logs", pg_queries().run_logs_after,
                                       {"run_id": run_id, "path": path, "after_id": after_id, "limit": limit})
        return [LogRow.from_row(cast(Any, row)) for row in rows]

    async def log_stages(self, run_id: str) -> list[dict[str, Any]]:
        """Stage paths that have logs, with chunk and character counts."""
        rows = await self._fetch("log_stages", pg_queries().run_log_stages, {"run_id": run_id})
        return [{"path": r[0], "chunks": int(r[1]), "chars": int(r[2])} for r in rows]

    async def prune_candidates(self, before: float, statuses: Iterable[RunStatus] | None = None
                               ) -> list[dict[str, Any]]:
        """The runs ``prune_before`` would delete (the dry run), oldest first."""
        rows = await self._fetch("prune_candidates", pg_queries().prune_candidates,
                                 {"before": before, "statuses": _statuses_or_all(statuses)})
        return [_candidate(r) for r in rows]

    async def prune_before(self, before: float, statuses: Iterable[RunStatus] | None = None
                           ) -> list[dict[str, Any]]:
        """Delete finished runs created before ``before`` (and their finished children); returns them."""
        params = {"before": before, "statuses": _statuses_or_all(statuses)}

        async def work(cur: Any) -> list[dict[str, Any]]:
            q = pg_queries()
            await cur.execute(q.prune_candidates, params)
            doomed = [_candidate(r) for r in await cur.fetchall()]
            await cur.execute(q.delete_runs, {"run_ids": [d["run_id"] for d in doomed]})
            await cur.execute(q.prune_pinned)
            return doomed

        return await self._writer.write(work, label="prune --before")

    async def delete_runs(self, run_ids: Iterable[str]) -> list[str]:
        """Delete finished runs by id (their records, events and logs go with them)."""
        ids = sorted(set(run_ids))

        async def work(cur: Any) -> list[str]:
            q = pg_queries()
            await cur.execute(q.delete_runs, {"run_ids": ids})
            deleted = [str(r[0]) for r in await cur.fetchall()]
            await cur.execute(q.prune_pinned)
            return deleted

        return await self._writer.write(work, label=f"deletion of {len(ids)} runs")

    async def prune(self, older_than_days: float) -> PruneResult:
        """Delete finished runs whose last activity is older than the cutoff (see ``Journal.prune``).

        PostgreSQL's autovacuum reclaims the space, so ``pages_freed`` is always 0.
        """
        cutoff = self._clock() - older_than_days * 86400.0

        async def work(cur: Any) -> tuple[int, int, int]:
            q = pg_queries()
            await cur.execute(q.prune_runs, {"cutoff": cutoff})
            runs = len(await cur.fetchall())
            await cur.execute(q.prune_pinned)
            pipelines = len(await cur.fetchall())
            await cur.execute(q.prune_fires, {"cutoff": cutoff})
            return runs, pipelines, len(await cur.fetchall())

        runs, pipelines, fires = await self._writer.write(work, label="prune")
        log.info("journal pruned", database=self._options.label, runs=runs, pipelines=pipelines, fires=fires)
        return PruneResult(runs=runs, pipelines=pipelines, fires=fires, pages_freed=0)

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, operation: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` on a reader session, retrying on a lost session until the deadline."""
        from psycopg_pool import PoolTimeout

        if self._closed:
            raise JournalError("the journal is closed", operation=operation, database=self._options.label)
        backoff = Backoff(self._options.reconnect_timeout_s)
        while True:
            conn = None
            try:
                async with self._pool.connection() as conn:
                    return await fn(conn)
            except FlowmasonError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated below
                lost = isinstance(exc, PoolTimeout) or is_connection_lost(conn, exc)
                if not lost or backoff.expired or self._closed:
                    raise translate(exc, dsn=self._options.label, operation=operation) from exc
            await backoff.wait()

    async def _fetch(self, operation: str, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        async def read(conn: Any) -> list[tuple[Any, ...]]:
            cur = conn.cursor()
            await cur.execute(sql, params)
            return list(await cur.fetchall())

        return await self._read(operation, read)

    async def _fetch_dicts(self, operation: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        async def read(conn: Any) -> list[dict[str, Any]]:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)
            return list(await cur.fetchall())

        return await self._read(operation, read)


# -- helpers -------------------------------------------------------------------------------------


async def _connect_at_start(dsn: str, label: str, timeout_s: float) -> Any:
    """The first session, waiting up to ``timeout_s`` for a server that is not accepting connections yet.

    A daemon often starts before its database (boot order, a failover in progress): it waits as it
    would for a lost session, logging why every few seconds, instead of exiting at once.
    """
    import psycopg

    backoff = Backoff(timeout_s)
    attempts, next_log = 0, 0.0
    while True:
        attempts += 1
        try:
            conn = await _connect(dsn)
        except Exception as exc:  # noqa: BLE001 - reported with the database named, password left out
            if not isinstance(exc, psycopg.OperationalError) or backoff.expired:
                raise translate(exc, dsn=label, operation="connect") from exc
            if time.monotonic() >= next_log:
                log.warning("journal waiting for the database", database=label, attempts=attempts,
                            error=str(exc).strip(), gives_up_in_s=round(backoff.deadline - time.monotonic(), 1))
                next_log = time.monotonic() + _WAIT_LOG_EVERY_S
            await backoff.wait()
            continue
        if attempts > 1:
            log.info("journal database reachable", database=label, attempts=attempts)
        return conn


async def _connect(dsn: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name=application_name(),
                                                 connect_timeout=CONNECT_TIMEOUT_S)


async def _take_owner_lock(conn: Any, label: str) -> None:
    """Take the single-owner advisory lock on ``conn``'s session, or raise naming its holder."""
    q = pg_queries()
    cur = conn.cursor()
    await cur.execute(q.try_owner_lock, {"key": OWNER_LOCK_KEY})
    row = await cur.fetchone()
    if row is not None and row[0]:
        return
    await cur.execute(q.owner_lock_holder, {"key": OWNER_LOCK_KEY})
    holder = await cur.fetchone()
    who = (f"{holder[1] or 'an unnamed session'} (backend pid {holder[0]}"
           f"{', from ' + holder[2] if holder[2] else ''}, since {holder[3]})") if holder else "another session"
    raise JournalLockedError(f"the PostgreSQL journal is owned by {who}; one flowmasond per database "
                             "unless nodes are configured", database=label,
                             holder=holder[1] if holder else None,
                             holder_backend_pid=holder[0] if holder else None)


# The run.status event of a run created running (create_run(start=True)), as set_run_status writes it.
_STARTED_EVENT = pg_dumps({"status": RunStatus.RUNNING.value, "previous": RunStatus.PENDING.value, "error": None})


async def _event(cur: Any, run_id: str, now: float, kind: EventKind, data: str | None) -> None:
    await cur.execute(pg_queries().insert_event, {"run_id": run_id, "now": now, "kind": kind.value,
                                                  "path": None, "data": data})


async def _locked_status(cur: Any, run_id: str) -> str:
    await cur.execute(pg_queries().run_status, {"run_id": run_id})
    row = await cur.fetchone()
    if row is None:
        raise RunNotFoundError(run_id=run_id)
    return str(row[0])


def _statuses_or_all(statuses: Iterable[RunStatus] | None) -> list[str] | None:
    return None if statuses is None else status_values(statuses)


def _candidate(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"run_id": row[0], "pipeline_id": row[1], "status": row[2], "created_at": row[3],
            "parent_run_id": row[4]}
