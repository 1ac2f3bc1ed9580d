"""``Journal``: the daemon's durable record of runs, on one SQLite file.

Writes go through the single group-committing ``JournalWriter``; queries use a separate reader
connection (aiosqlite, one statement per read), which WAL lets read committed data while the
writer is busy. The on-disk contract
(tables, columns, record and event kinds) is ``state/README.md``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any
from collections.abc import AsyncIterator, Callable, Iterable

import aiosqlite
import structlog

from flowmasond.engine.interfaces import RunSnapshot, RunStatus, UsageMetrics
from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import FlowmasonError, JournalError, RunConflictError, RunNotFoundError
from flowmasond.journal.connections import (SqliteThread, check_sqlite_version,
                                            check_synchronous, configure_writer,
                                            create_private_file, open_reader, storage_error)
from flowmasond.journal.event_ids import install_event_ids
from flowmasond.journal.events import EventKind
from flowmasond.journal.params import conflict_error, list_params, pin_params, status_values
from flowmasond.journal.migrations import load_migrations, migrate, refuse_if_too_new
from flowmasond.journal.owner import OwnerLock
from flowmasond.journal.records import decode_snapshot
from flowmasond.journal.rows import EventRow, LogRow, PruneResult, RunRow, dumps, dumps_or_none
from flowmasond.engine.interfaces import Record
from flowmasond.journal.run_store import JournalRunStore, insert_records, raise_missing_run
from flowmasond.journal.sqlfiles import queries
from flowmasond.journal.writer import DEFAULT_FLUSH_DELAY_S, JournalWriter, WriterStats

log = structlog.get_logger("flowmasond.journal")

DEFAULT_BUSY_TIMEOUT_MS = 5000
# SQLite clamps max_page_count to its compile-time maximum; this asks for "no limit".
_NO_PAGE_LIMIT = 4294967294
_EVENTS_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """What the journal remembers of one schedule (``Journal.schedule_records``)."""

    paused: bool
    first_seen_at: float | None  # when the daemon first loaded it (None: before journal version 3)
    last_fire_time: float | None
    last_run_id: str | None  # None: the latest fire was skipped by the overlap policy
    last_recorded_at: float | None
    last_run_status: RunStatus | None  # None: no run, or the run is not (or no longer) in the journal


class Journal:
    """The SQLite journal: runs, their pinned definitions, records, attempts and events.

    Implements ``flowmasond.engine.interfaces.RunLedger``.
    """

    def __init__(self, *, path: Path, writer_conn: SqliteThread,
                 reader_conn: aiosqlite.Connection, writer: JournalWriter,
                 clock: Callable[[], float], owner: OwnerLock) -> None:
        self._path = path
        self._owner = owner
        self._writer_conn = writer_conn
        self._reader_conn = reader_conn
        self._writer = writer
        self._clock = clock
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "FULL",
                   busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
                   flush_delay_s: float = DEFAULT_FLUSH_DELAY_S,
                   max_size_bytes: int | None = None,
                   clock: Callable[[], float] = time.time,
                   inline_commits: bool = True) -> Journal:
        """Open (creating or migrating) the journal at ``path``.

        ``synchronous``: FULL (default) makes every commit wait for fsync; NORMAL survives process
        crashes but may lose the last commits on power loss. ``clock`` lets tests drive time.
        ``inline_commits=False`` runs every transaction on the writer thread (see the writer).
        Raises ``SchemaTooNewError`` for a journal written by a newer flowmasond (left untouched),
        ``JournalLockedError`` when another process has it open (one owner per journal).
        """
        path = Path(path)
        mode = check_synchronous(synchronous)
        check_sqlite_version()
        migrations = load_migrations()
        owner = OwnerLock.acquire(path)
        try:
            return await cls._open_owned(path, owner, mode, migrations, busy_timeout_ms=busy_timeout_ms,
                                         flush_delay_s=flush_delay_s, max_size_bytes=max_size_bytes,
                                         clock=clock, inline_commits=inline_commits)
        except BaseException:
            owner.release()
            raise

    @classmethod
    async def _open_owned(cls, path: Path, owner: OwnerLock, mode: str, migrations: Any, *,
                          busy_timeout_ms: int, flush_delay_s: float, max_size_bytes: int | None,
                          clock: Callable[[], float], inline_commits: bool) -> Journal:
        refuse_if_too_new(path, migrations)
        create_private_file(path)
        writer_conn = await SqliteThread.open(path, name="journal-writer")
        reader_conn: aiosqlite.Connection | None = None
        try:
            await writer_conn.run(configure_writer, mode, busy_timeout_ms)
            applied = await writer_conn.run(partial(migrate, migrations=migrations,
                                                    path=str(path), now=clock()))
            await writer_conn.run(install_event_ids)
            if max_size_bytes is not None:
                await writer_conn.run(_set_page_limit, max_size_bytes)
            reader_conn = await open_reader(path, busy_timeout_ms)
            if applied:
                log.info("journal migrated", path=str(path), applied=applied)
            writer = JournalWriter(writer_conn, path=path, flush_delay_s=flush_delay_s, busy_timeout_ms=busy_timeout_ms,
                                   inline_commits=inline_commits, background_checkpoints=mode == "NORMAL")
            await writer.start()
        except BaseException as exc:
            if reader_conn is not None:
                await reader_conn.close()
            await writer_conn.close()
            if isinstance(exc, sqlite3.Error):
                raise storage_error(exc, path=path, operation="open") from exc
            raise
        return cls(path=path, writer_conn=writer_conn, reader_conn=reader_conn, writer=writer,
                   clock=clock, owner=owner)

    async def close(self) -> None:
        """Commit queued writes, checkpoint the WAL into the database file, close connections."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.close()
            try:
                await self._writer.call(_checkpoint)
            except sqlite3.Error as exc:
                # Not fatal: the WAL is replayed by the next open.
                log.warning("journal checkpoint on close failed", path=str(self._path),
                            error=str(exc))
        finally:
            self._writer.commit_signal().set()  # wakes followers so they see the close
            try:
                await self._reader_conn.close()
                await self._writer_conn.close()
            finally:
                self._owner.release()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def writer(self) -> JournalWriter:
        """The writer (its ``stats()`` count transactions and requests)."""
        return self._writer

    def stats(self) -> WriterStats:
        """Writer counters: transactions committed, requests, largest group."""
        return self._writer.stats()

    # -- pipelines and runs ----------------------------------------------------------------------

    async def pin_pipeline(self, pipeline: PipelineConfig) -> str:
        """Store ``pipeline``'s canonical JSON once; returns its content hash."""
        pin = pin_params(pipeline, self._clock())
        await self._writer.write(partial(_pin, pin=pin), label=f"pin of {pipeline.id}")
        return str(pin["hash"])

    async def create_run(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any], *,
                         status: RunStatus = RunStatus.PENDING,
                         parent_run_id: str | None = None, parent_path: str | None = None,
                         schedule_id: str | None = None,
                         fire_time: float | None = None,
                         forked_from: str | None = None, from_stage: str | None = None,
                         breakpoints: Iterable[str] = (),
                         seed: list[Record] | None = None, start: bool = False) -> RunRow:
        """Record a new run pinned to ``pipeline`` (pinning it if needed).

        A rerun names its source (``forked_from``, ``from_stage``) and ``seed``: the source's
        records it reuses, committed in the same transaction as the run itself. ``start``: the run
        is created ``pending`` and marked ``running`` in the same transaction (the same row and
        events as ``set_run_status(RUNNING, expected=[PENDING])`` right after, for one commit).
        """
        if start and status is not RunStatus.PENDING:
            raise ValueError("start=True creates a pending run and marks it running")
        now = self._clock()
        pin = pin_params(pipeline, now)
        try:
            inputs_json = dumps(inputs)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"run inputs are not JSON-serialisable: {exc}",
                               run_id=run_id) from exc
        stored = RunStatus.RUNNING if start else status
        params = {"run_id": run_id, "pipeline_id": pipeline.id, "pipeline_hash": pin["hash"],
                  "inputs": inputs_json, "status": stored.value, "now": now,
                  "started_at": now if start else None,
                  "parent_run_id": parent_run_id, "parent_path": parent_path,
                  "schedule_id": schedule_id, "fire_time": fire_time,
                  "forked_from": forked_from, "from_stage": from_stage,
                  "breakpoints": dumps(sorted(set(breakpoints)))}
        event = {"pipeline_id": pipeline.id, "pipeline_hash": pin["hash"], "status": status.value,
                 "parent_run_id": parent_run_id, "parent_path": parent_path,
                 "schedule_id": schedule_id, "fire_time": fire_time}
        forked = None
        if forked_from is not None:
            forked = dumps({"forked_from": forked_from, "from_stage": from_stage,
                            "reused": sorted({r.path for r in seed or []})})
        started = _STARTED_EVENT if start else None
        await self._writer.write(partial(_create_run, pin=pin, params=params, event=dumps(event),
                                         seed=seed or [], forked=forked, started=started),
                                 label=f"creation of run {run_id}")
        return RunRow(run_id=run_id, pipeline_id=pipeline.id, pipeline_hash=str(pin["hash"]),
                      inputs=json.loads(inputs_json), status=stored, created_at=now,
                      started_at=params["started_at"],
                      parent_run_id=parent_run_id, parent_path=parent_path,
                      schedule_id=schedule_id, fire_time=fire_time,
                      usage=UsageMetrics(), forked_from=forked_from, from_stage=from_stage,
                      breakpoints=tuple(sorted(set(breakpoints))))

    async def set_run_status(self, run_id: str, status: RunStatus, *,
                             expected: Iterable[RunStatus], output: Any = None,
                             error: FlowmasonError | dict[str, Any] | None = None) -> RunStatus:
        """Move a run to ``status`` if it is in one of ``expected``; returns the status it left.

        A conditional update in SQL: of two racing changes exactly one applies, the other raises
        ``RunConflictError`` naming the run's current status (``RunNotFoundError`` for no run).
        ``output`` and ``error`` replace the stored ones (None clears). ``started_at`` is set the
        first time a run is running; ``finished_at`` is set when the status is a finished one and
        cleared otherwise (a resumed run is not finished).
        """
        error_dict = error.to_dict() if isinstance(error, FlowmasonError) else error
        try:
            output_json = dumps_or_none(output)
            error_json = dumps_or_none(error_dict)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"run output is not JSON-serialisable: {exc}",
                               run_id=run_id) from exc
        params = {"run_id": run_id, "status": status.value, "output": output_json,
                  "error": error_json, "finished": status.finished, "now": self._clock(),
                  "expected": _statuses_json(expected)}
        return await self._writer.write(partial(_set_status, params=params, error=error_dict),
                                        label=f"status {status.value} of run {run_id}")

    async def record_resume(self, run_id: str, *, expected: Iterable[RunStatus],
                            pipeline: PipelineConfig | None = None, start: bool = False) -> int:
        """Claim ``run_id`` for a resume: back to ``pending`` if it is in one of ``expected``.

        Counts the resume and returns the run's new ``resumed_count``; with ``pipeline``, re-pins
        the run to that definition (the explicit, opt-in way to resume against a changed one). Of
        two racing claims exactly one succeeds; the other raises ``RunConflictError``. ``start``:
        the run is also marked ``running`` in the same transaction (the same row and events as
        ``set_run_status(RUNNING, expected=[PENDING])`` right after, for one commit).
        """
        now = self._clock()
        pin = pin_params(pipeline, now) if pipeline is not None else None
        return await self._writer.write(partial(_record_resume, run_id=run_id, pin=pin, now=now,
                                                expected=_statuses_json(expected), start=start),
                                        label=f"resume of run {run_id}")

    async def increment_recovery_attempts(self, run_id: str) -> int:
        """Count one more crash recovery of ``run_id``; returns the new count."""
        return await self._writer.write(
            partial(_increment_recovery, run_id=run_id, now=self._clock()),
            label=f"recovery of run {run_id}")

    async def emit(self, run_id: str, kind: str, *, path: str | None = None,
                   data: dict[str, Any] | None = None, durable: bool = False) -> None:
        """Append an event; by default it rides along with the next commit."""
        try:
            data_json = dumps_or_none(data)
        except (TypeError, ValueError) as exc:
            raise JournalError(f"event data is not JSON-serialisable: {exc}", run_id=run_id,
                               kind=kind) from exc
        params = {"run_id": run_id, "now": self._clock(), "kind": kind, "path": path,
                  "data": data_json}
        work = partial(_insert_event, params=params)
        if durable:
            await self._writer.write(work, label=f"event {kind} of run {run_id}")
        else:
            self._writer.write_later(work, label=f"event {kind} of run {run_id}")

    def run_store(self, run_id: str) -> JournalRunStore:
        """The engine's ``RunStore`` for ``run_id``."""
        return JournalRunStore(self._writer, run_id, self._clock)

    # -- queries (reader connection) -------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRow:
        """The run ``run_id``; raises ``RunNotFoundError``."""
        rows = await self._read("get_run", queries().get_run, {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id=run_id)
        return RunRow.from_row(rows[0])

    async def run_status(self, run_id: str) -> RunStatus:
        """The status of ``run_id``; raises ``RunNotFoundError``."""
        rows = await self._read("run_status", queries().run_status, {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id=run_id)
        return RunStatus(rows[0][0])

    async def list_runs(self, *, status: RunStatus | Iterable[RunStatus] | None = None,
                        pipeline_id: str | None = None, limit: int = 100,
                        offset: int = 0, since: float | None = None, until: float | None = None,
                        schedule_id: str | None = None, parent_run_id: str | None = None,
                        cursor: tuple[float, str] | None = None) -> list[RunRow]:
        """Runs newest first, filtered (every None matches all); ``cursor``: after that run."""
        params = _list_params(status, pipeline_id, since, until, schedule_id, parent_run_id)
        params.update({"limit": limit, "offset": offset,
                       "cursor_at": cursor[0] if cursor else None, "cursor_id": cursor[1] if cursor else None})
        rows = await self._read("list_runs", queries().list_runs, params)
        return [RunRow.from_row(row) for row in rows]

    async def count_runs(self, *, status: RunStatus | Iterable[RunStatus] | None = None,
                         pipeline_id: str | None = None, since: float | None = None,
                         until: float | None = None, schedule_id: str | None = None,
                         parent_run_id: str | None = None) -> int:
        """How many runs ``list_runs`` would list with these filters (without paging)."""
        params = _list_params(status, pipeline_id, since, until, schedule_id, parent_run_id)
        rows = await self._read("count_runs", queries().count_runs, params)
        return int(rows[0][0])

    async def child_runs(self, run_id: str) -> list[RunRow]:
        """Runs started by ``run_id`` (subpipelines), oldest first."""
        rows = await self._read("child_runs", queries().child_runs, {"run_id": run_id})
        return [RunRow.from_row(row) for row in rows]

    async def load_snapshot(self, run_id: str) -> RunSnapshot:
        """Everything committed for ``run_id``: latest result and decision per path, attempts."""
        # One statement, so records, attempts and the run's existence come from one committed state.
        rows = await self._read("load_snapshot", queries().snapshot, (run_id,), tuples=True)
        snapshot = decode_snapshot(rows)
        if snapshot is None:
            raise RunNotFoundError(run_id=run_id)
        return snapshot

    async def pinned_definition(self, run_id: str) -> PipelineConfig:
        """The exact pipeline definition ``run_id`` is pinned to."""
        rows = await self._read("pinned_definition", queries().run_definition,
                                {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id=run_id)
        return PipelineConfig.model_validate_json(rows[0][0])

    async def pinned_pipeline(self, pipeline_hash: str) -> PipelineConfig | None:
        """The pinned definition with ``pipeline_hash``, if the journal holds it."""
        rows = await self._read("pinned_pipeline", queries().pinned_definition,
                                {"hash": pipeline_hash})
        return PipelineConfig.model_validate_json(rows[0][0]) if rows else None

    async def events(self, run_id: str | None = None, *, after_id: int = 0,
                     limit: int = _EVENTS_PAGE, settled: bool = True) -> list[EventRow]:
        """Events after the event ``after_id``, oldest first (of one run, or of all).

        ``settled`` matters to the PostgreSQL journal only (one writer here commits in id order).
        """
        q = queries()
        if run_id is None:
            rows = await self._read("events", q.events_after,
                                    {"after_id": after_id, "limit": limit})
        else:
            rows = await self._read("events", q.run_events_after,
                                    {"run_id": run_id, "after_id": after_id, "limit": limit})
        return [EventRow.from_row(row) for row in rows]

    async def follow(self, run_id: str | None = None, *,
                     after_id: int = 0) -> AsyncIterator[EventRow]:
        """Yield events after ``after_id`` as they are committed, until the journal closes."""
        cursor = after_id
        while not self._closed:
            # Taken before reading: a commit landing during the read still wakes us.
            signal = self._writer.commit_signal()
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
                await signal.wait()

    async def count_runs_by_status(self) -> dict[str, int]:
        """How many runs the journal holds in each status."""
        rows = await self._read("count_runs_by_status", queries().count_runs_by_status, {})
        return {row["status"]: int(row["n"]) for row in rows}

    async def active_runs_of_schedule(self, pipeline_id: str, schedule_id: str) -> list[tuple[str, RunStatus]]:
        """The schedule's pending, running and paused runs, oldest first (its overlap policy counts them)."""
        rows = await self._read("active_runs_of_schedule", queries().active_runs_of_schedule,
                                {"pipeline_id": pipeline_id, "schedule_id": schedule_id})
        return [(row["run_id"], RunStatus(row["status"])) for row in rows]

    async def ping(self) -> bool:
        """True when both connections answer (the watchdog's health check)."""
        await self._read("ping", queries().ping, {})
        await self._writer.call(partial(_fetch, sql=queries().ping, params={}))
        return True

    async def last_event_id(self) -> int:
        """The id of the newest event (0 when there is none); a follower's starting point."""
        rows = await self._read("last_event_id", queries().last_event_id, {})
        return int(rows[0][0])

    async def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: ``["ok"]`` for a sound file."""
        rows = await self._read("integrity_check", queries().integrity_check, {})
        return [str(row[0]) for row in rows]

    # -- scheduler state -------------------------------------------------------------------------

    async def record_fire(self, pipeline_id: str, schedule_id: str, fire_time: float, *,
                          run_id: str | None = None) -> bool:
        """Record one fire of a schedule; False if that fire was already recorded."""
        params = {"pipeline_id": pipeline_id, "schedule_id": schedule_id, "fire_time": fire_time,
                  "run_id": run_id, "now": self._clock()}
        return await self._writer.write(partial(_record_fire, params=params),
                                        label=f"fire of {pipeline_id}/{schedule_id}")

    async def last_fire_time(self, pipeline_id: str, schedule_id: str) -> float | None:
        """The latest recorded fire time of a schedule."""
        rows = await self._read("last_fire_time", queries().last_fire_time,
                                {"pipeline_id": pipeline_id, "schedule_id": schedule_id})
        return rows[0][0]

    async def set_schedule_paused(self, pipeline_id: str, schedule_id: str, paused: bool) -> None:
        """Persist a schedule's pause state."""
        params = {"pipeline_id": pipeline_id, "schedule_id": schedule_id, "paused": int(paused),
                  "now": self._clock()}
        await self._writer.write(partial(_execute, sql=queries().set_schedule_paused,
                                         params=params),
                                 label=f"pause state of {pipeline_id}/{schedule_id}")

    async def paused_schedules(self) -> set[tuple[str, str]]:
        """``(pipeline_id, schedule_id)`` of every paused schedule."""
        rows = await self._read("paused_schedules", queries().paused_schedules, {})
        return {(row[0], row[1]) for row in rows}

    async def mark_schedules_seen(self, keys: Iterable[tuple[str, str]]) -> None:
        """Note ``(pipeline_id, schedule_id)`` schedules as loaded (the first time is kept)."""
        params = [{"pipeline_id": pid, "schedule_id": sid, "now": self._clock()} for pid, sid in keys]
        if params:
            await self._writer.write(partial(_execute_many, sql=queries().mark_schedule_seen,
                                             params=params),
                                     label=f"{len(params)} schedules seen")

    async def schedule_records(self, keys: Iterable[tuple[str, str]]
                               ) -> dict[tuple[str, str], ScheduleRecord]:
        """Each schedule's persisted state and latest fire, read in one pass."""
        pairs = sorted(set(keys))
        if not pairs:
            return {}
        rows = await self._read("schedule_records", queries().schedule_records,
                                {"keys": dumps(pairs)})
        return {(row[0], row[1]): ScheduleRecord(
                    paused=bool(row[2]), first_seen_at=row[3], last_fire_time=row[4],
                    last_run_id=row[5], last_recorded_at=row[6],
                    last_run_status=RunStatus(row[7]) if row[7] else None)
                for row in rows}

    async def run_statuses(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        """The status of each run in ``run_ids`` that the journal holds."""
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        rows = await self._read("run_statuses", queries().run_statuses,
                                {"run_ids": dumps(ids)})
        return {row[0]: RunStatus(row[1]) for row in rows}

    # -- operating: breakpoints, logs, delete --------------------------------------------------

    async def set_paused(self, run_id: str, paused_at: dict[str, Any] | None) -> bool:
        """Mark a running run ``paused`` with the stages waiting (None: back to ``running``).

        Conditional: False when the run was in neither state (cancelled meanwhile, for example).
        """
        params = {"run_id": run_id, "paused_at": dumps_or_none(paused_at), "now": self._clock()}
        return await self._writer.write(partial(_set_paused, params=params),
                                        label=f"pause state of run {run_id}")

    async def set_breakpoints(self, run_id: str, breakpoints: Iterable[str], stepping: bool) -> None:
        """Replace a run's breakpoints and stepping flag (journaled with an event)."""
        points = sorted(set(breakpoints))
        params = {"run_id": run_id, "breakpoints": dumps(points), "stepping": int(stepping),
                  "now": self._clock(), "data": dumps({"breakpoints": points, "stepping": stepping})}
        await self._writer.write(partial(_set_breakpoints, params=params),
                                 label=f"breakpoints of run {run_id}")

    async def append_logs(self, chunks: list[dict[str, Any]]) -> None:
        """Store stage log chunks (``run_id``, ``path``, ``stream``, ``ts``, ``text`` each)."""
        if chunks:
            await self._writer.write(partial(_insert_logs, chunks=chunks),
                                     label=f"{len(chunks)} stage log chunks")

    async def logs(self, run_id: str, *, path: str | None = None, after_id: int = 0,
                   limit: int = _EVENTS_PAGE) -> list[LogRow]:
        """Log chunks of ``run_id`` (of one stage path and what is nested under it) after ``after_id``."""
        rows = await self._read("logs", queries().run_logs_after,
                                {"run_id": run_id, "path": path, "after_id": after_id, "limit": limit})
        return [LogRow.from_row(row) for row in rows]

    async def log_stages(self, run_id: str) -> list[dict[str, Any]]:
        """Stage paths that have logs, with chunk and character counts."""
        rows = await self._read("log_stages", queries().run_log_stages, {"run_id": run_id})
        return [{"path": r["path"], "chunks": int(r["chunks"]), "chars": int(r["chars"])} for r in rows]

    async def prune_candidates(self, before: float, statuses: Iterable[RunStatus] | None = None
                               ) -> list[dict[str, Any]]:
        """The runs ``prune_before`` would delete (the dry run), oldest first."""
        rows = await self._read("prune_candidates", queries().prune_candidates,
                                {"before": before, "statuses": _statuses_or_all(statuses)})
        return [_candidate(row) for row in rows]

    async def prune_before(self, before: float, statuses: Iterable[RunStatus] | None = None
                           ) -> list[dict[str, Any]]:
        """Delete finished runs created before ``before`` (and their finished children); returns them.

        The candidates are listed and deleted in one write transaction, by the dry run's query.
        """
        deleted = await self._writer.write(partial(_prune_before, before=before,
                                                   statuses=_statuses_or_all(statuses)),
                                           label="prune --before")
        try:
            await self._writer.call(_reclaim)
        except sqlite3.Error as exc:
            raise storage_error(exc, path=self._path, operation="reclaim space") from exc
        return deleted

    async def delete_runs(self, run_ids: Iterable[str]) -> list[str]:
        """Delete finished runs by id (their records, events and logs go with them)."""
        ids = sorted(set(run_ids))
        return await self._writer.write(partial(_delete_runs, run_ids=dumps(ids)),
                                        label=f"deletion of {len(ids)} runs")

    # -- upkeep ----------------------------------------------------------------------------------

    async def prune(self, older_than_days: float) -> PruneResult:
        """Delete finished runs whose last activity is older than the cutoff, then reclaim space.

        A run's subpipeline children go with it; definitions no run is pinned to any more and
        schedule fires older than the cutoff (except each schedule's latest) go too. Freed pages
        are returned to the file system with ``PRAGMA incremental_vacuum``.
        """
        cutoff = self._clock() - older_than_days * 86400.0
        runs, pipelines, fires = await self._writer.write(partial(_prune, cutoff=cutoff),
                                                          label="prune")
        try:
            pages = await self._writer.call(_reclaim)
        except sqlite3.Error as exc:
            raise storage_error(exc, path=self._path, operation="reclaim space") from exc
        log.info("journal pruned", path=str(self._path), runs=runs, pipelines=pipelines,
                 fires=fires, pages_freed=pages)
        return PruneResult(runs=runs, pipelines=pipelines, fires=fires, pages_freed=pages)

    async def set_max_size(self, max_bytes: int | None) -> None:
        """Cap the database size (``PRAGMA max_page_count``); None lifts the cap.

        Past the cap, commits fail with ``StorageFullError`` exactly as on a full disk.
        """
        await self._writer.call(partial(_set_page_limit, max_bytes=max_bytes))

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it."""
        try:
            await self._writer.call(_checkpoint)
        except sqlite3.Error as exc:
            raise storage_error(exc, path=self._path, operation="checkpoint") from exc

    async def _read(self, operation: str, sql: str, params: dict[str, Any] | tuple[Any, ...], *,
                    tuples: bool = False) -> list[Any]:
        """One statement on the reader connection (one read transaction of its own).

        Rows are ``sqlite3.Row`` (by column name), or plain tuples with ``tuples``: a cursor of
        its own then costs three hops more, which a snapshot of thousands of records repays
        (unpacking a Row costs several times a tuple's).
        """
        if self._closed:
            raise JournalError("the journal is closed", operation=operation, path=str(self._path))
        try:
            if not tuples:
                return list(await self._reader_conn.execute_fetchall(sql, params))
            async with self._reader_conn.cursor() as cursor:
                cursor.row_factory = None
                await cursor.execute(sql, params)
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise storage_error(exc, path=self._path, operation=operation) from exc


# -- work functions: run on the writer connection -------------------------------------------


def _fetch(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
    return conn.execute(sql, params).fetchall()


def _execute(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> None:
    conn.execute(sql, params)


def _insert_event(conn: sqlite3.Connection, params: dict[str, Any]) -> None:
    try:
        conn.execute(queries().insert_event, params)
    except sqlite3.IntegrityError as exc:
        raise_missing_run(exc, str(params["run_id"]))
        raise


def _pin(conn: sqlite3.Connection, pin: dict[str, Any]) -> None:
    conn.execute(queries().pin_pipeline, pin)


def _create_run(conn: sqlite3.Connection, pin: dict[str, Any], params: dict[str, Any],
                event: str, seed: list[Record], forked: str | None, started: str | None = None) -> None:
    q = queries()
    conn.execute(q.pin_pipeline, pin)
    try:
        conn.execute(q.insert_run, params)
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise JournalError("a run with this id already exists",
                               run_id=params["run_id"]) from exc
        raise
    conn.execute(q.insert_event, {"run_id": params["run_id"], "now": params["now"],
                                  "kind": EventKind.RUN_CREATED.value, "path": None,
                                  "data": event})
    if forked is not None:
        conn.execute(q.insert_event, {"run_id": params["run_id"], "now": params["now"],
                                      "kind": EventKind.RUN_FORKED.value, "path": None,
                                      "data": forked})
    if seed:
        insert_records(conn, str(params["run_id"]), seed, float(params["now"]))
    # Last, where set_run_status right after the creation would have put it.
    if started is not None:
        conn.execute(q.insert_event, {"run_id": params["run_id"], "now": params["now"],
                                      "kind": EventKind.RUN_STATUS.value, "path": None,
                                      "data": started})


# The run.status event of a run created running (create_run(start=True)): what set_run_status
# writes when it moves a pending run to running.
_STARTED_EVENT = dumps({"status": RunStatus.RUNNING.value, "previous": RunStatus.PENDING.value, "error": None})


def _statuses_json(statuses: Iterable[RunStatus]) -> str:
    return dumps(status_values(statuses))


_PENDING_JSON = _statuses_json([RunStatus.PENDING])


def _conflict(conn: sqlite3.Connection, run_id: str, wanted: str, expected: str) -> RunConflictError:
    """The error for a conditional update that matched no row (or RunNotFoundError)."""
    row = conn.execute(queries().run_status, {"run_id": run_id}).fetchone()
    if row is None:
        raise RunNotFoundError(run_id=run_id)
    return conflict_error(run_id, row[0], wanted, json.loads(expected))


def _set_status(conn: sqlite3.Connection, params: dict[str, Any],
                error: dict[str, Any] | None) -> RunStatus:
    q = queries()
    # The writer runs each request in one transaction (BEGIN IMMEDIATE), so the status read here
    # is the one the conditional UPDATE below replaces.
    row = conn.execute(q.run_status, {"run_id": params["run_id"]}).fetchone()
    if row is None:
        raise RunNotFoundError(run_id=params["run_id"])
    if conn.execute(q.update_run_status, params).fetchone() is None:
        raise _conflict(conn, params["run_id"], params["status"], params["expected"])
    data = {"status": params["status"], "previous": row[0], "error": error}
    _status_event(conn, params["run_id"], params["now"], data)
    return RunStatus(row[0])


def _status_event(conn: sqlite3.Connection, run_id: str, now: float, data: dict[str, Any]) -> None:
    conn.execute(queries().insert_event, {"run_id": run_id, "now": now,
                                          "kind": EventKind.RUN_STATUS.value, "path": None,
                                          "data": dumps(data)})


def _record_resume(conn: sqlite3.Connection, run_id: str, pin: dict[str, Any] | None,
                   now: float, expected: str, start: bool = False) -> int:
    q = queries()
    row = conn.execute(q.run_status, {"run_id": run_id}).fetchone()
    if row is None:
        raise RunNotFoundError(run_id=run_id)
    if pin is not None:
        conn.execute(q.pin_pipeline, pin)
    claimed = conn.execute(q.record_resume, {"run_id": run_id, "expected": expected,
                                             "pipeline_hash": pin["hash"] if pin else None}
                           ).fetchone()
    if claimed is None:
        raise _conflict(conn, run_id, RunStatus.PENDING.value, expected)
    count = claimed[0]
    _status_event(conn, run_id, now, {"status": RunStatus.PENDING.value, "previous": row[0],
                                      "error": None})
    data = {"resumed_count": count, "pipeline_hash": pin["hash"] if pin else row[1],
            "previous_hash": row[1]}
    conn.execute(q.insert_event, {"run_id": run_id, "now": now,
                                  "kind": EventKind.RUN_RESUMED.value, "path": None,
                                  "data": dumps(data)})
    if start:
        _set_status(conn, {"run_id": run_id, "status": RunStatus.RUNNING.value, "output": None, "error": None,
                           "finished": False, "now": now, "expected": _PENDING_JSON}, None)
    return int(count)


def _increment_recovery(conn: sqlite3.Connection, run_id: str, now: float) -> int:
    q = queries()
    rows = conn.execute(q.increment_recovery_attempts, {"run_id": run_id}).fetchall()
    if not rows:
        raise RunNotFoundError(run_id=run_id)
    count = int(rows[0][0])
    conn.execute(q.insert_event, {"run_id": run_id, "now": now,
                                  "kind": EventKind.RUN_RECOVERY.value, "path": None,
                                  "data": dumps({"recovery_attempts": count})})
    return count


def _list_params(status: RunStatus | Iterable[RunStatus] | None, pipeline_id: str | None,
                 since: float | None, until: float | None, schedule_id: str | None,
                 parent_run_id: str | None) -> dict[str, Any]:
    params = list_params(status, pipeline_id, since, until, schedule_id, parent_run_id)
    if params["statuses"] is not None:
        params["statuses"] = dumps(params["statuses"])  # for json_each
    return params


def _statuses_or_all(statuses: Iterable[RunStatus] | None) -> str | None:
    return None if statuses is None else _statuses_json(statuses)


def _set_paused(conn: sqlite3.Connection, params: dict[str, Any]) -> bool:
    q = queries()
    paused = params["paused_at"] is not None
    rows = conn.execute(q.set_paused if paused else q.set_unpaused, params).fetchall()
    if not rows:
        return False
    if paused:
        conn.execute(q.insert_event, {"run_id": params["run_id"], "now": params["now"],
                                      "kind": EventKind.RUN_PAUSED.value, "path": None,
                                      "data": dumps({"paused_at": json.loads(params["paused_at"])})})
    conn.execute(q.insert_event, {"run_id": params["run_id"], "now": params["now"],
                                  "kind": EventKind.RUN_STATUS.value, "path": None,
                                  "data": dumps({"status": "paused" if paused else "running",
                                                 "previous": "running" if paused else "paused",
                                                 "error": None})})
    return True


def _set_breakpoints(conn: sqlite3.Connection, params: dict[str, Any]) -> None:
    q = queries()
    if not conn.execute(q.set_breakpoints, params).fetchall():
        raise RunNotFoundError(run_id=params["run_id"])
    conn.execute(q.insert_event, {"run_id": params["run_id"], "now": params["now"],
                                  "kind": EventKind.RUN_BREAKPOINTS.value, "path": None,
                                  "data": params["data"]})


def _insert_logs(conn: sqlite3.Connection, chunks: list[dict[str, Any]]) -> None:
    for chunk in chunks:
        try:
            conn.execute(queries().insert_log, chunk)
        except sqlite3.IntegrityError:
            # The run was deleted while its stage was still printing: nothing to keep it for.
            continue


def _candidate(row: sqlite3.Row) -> dict[str, Any]:
    # By position: the writer's connection returns plain tuples, the reader's sqlite3.Row.
    return {"run_id": row[0], "pipeline_id": row[1], "status": row[2], "created_at": row[3],
            "parent_run_id": row[4]}


def _prune_candidates(conn: sqlite3.Connection, before: float, statuses: str | None) -> list[dict[str, Any]]:
    rows = conn.execute(queries().prune_candidates, {"before": before, "statuses": statuses}).fetchall()
    return [_candidate(r) for r in rows]


def _prune_before(conn: sqlite3.Connection, before: float, statuses: str | None) -> list[dict[str, Any]]:
    q = queries()
    doomed = _prune_candidates(conn, before, statuses)
    conn.execute(q.delete_runs, {"run_ids": dumps([d["run_id"] for d in doomed])}).fetchall()
    conn.execute(q.prune_pinned)
    return doomed


def _delete_runs(conn: sqlite3.Connection, run_ids: str) -> list[str]:
    q = queries()
    deleted = [r[0] for r in conn.execute(q.delete_runs, {"run_ids": run_ids}).fetchall()]
    conn.execute(q.prune_pinned)
    return deleted


def _record_fire(conn: sqlite3.Connection, params: dict[str, Any]) -> bool:
    return conn.execute(queries().record_fire, params).rowcount == 1


def _execute_many(conn: sqlite3.Connection, sql: str, params: list[dict[str, Any]]) -> None:
    conn.executemany(sql, params)


def _prune(conn: sqlite3.Connection, cutoff: float) -> tuple[int, int, int]:
    q = queries()
    runs = len(conn.execute(q.prune_runs, {"cutoff": cutoff}).fetchall())
    pipelines = conn.execute(q.prune_pinned).rowcount
    fires = conn.execute(q.prune_fires, {"cutoff": cutoff}).rowcount
    return runs, pipelines, fires


def _reclaim(conn: sqlite3.Connection) -> int:
    q = queries()
    before = conn.execute(q.page_count).fetchone()[0]
    # executescript steps the pragma to completion (execute() would free a single page); it runs
    # between group transactions, so there is no open transaction for it to commit.
    conn.executescript(q.reclaim_space)
    after = conn.execute(q.page_count).fetchone()[0]
    return int(before - after)


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute(queries().checkpoint_truncate).fetchall()


def _set_page_limit(conn: sqlite3.Connection, max_bytes: int | None) -> None:
    page_size = conn.execute(queries().page_size).fetchone()[0]
    pages = _NO_PAGE_LIMIT if max_bytes is None else max(1, int(max_bytes) // int(page_size))
    # PRAGMA takes no bound parameters; the value is an int computed here.
    conn.execute(f"PRAGMA max_page_count = {pages}").fetchall()
