"""The journal's single writer: one connection, one task, group commit.

Every write is a *request*: a function run on the writer connection's thread inside a
transaction. The writer task takes everything queued, runs it in one ``BEGIN IMMEDIATE``
transaction (one fsync with ``synchronous=FULL``) and resolves each requester after ``COMMIT``.
Requests that arrive while a transaction is committing form the next group, so stages finishing
together share one fsync without any waiting on a timer.

Each request runs under its own SAVEPOINT: a request that fails on its own (a constraint, a run
that does not exist) is rolled back alone and its requester gets the error; a storage fault
(disk full, I/O error, busy timeout) rolls back the whole group and every requester in it gets a
``JournalError``. Either way the writer task stays alive for the next group.

Deferred requests (``write_later``: non-durable attempt starts, informational events) never start
a transaction by themselves: they ride along with the next durable group, or are flushed after
``flush_delay_s`` if nothing else commits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import aiosqlite
import structlog

from flowmasond.errors import JournalError
from flowmasond.journal.connections import in_thread, is_storage_fault, storage_error

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]

log = structlog.get_logger("flowmasond.journal")

# How long a deferred write may wait for a durable group to ride along with.
DEFAULT_FLUSH_DELAY_S = 0.05
# Crash-test failpoint: SIGKILL this process right after the N-th transaction commits, before any
# requester learns of it (the worst moment: durable on disk, unacknowledged in memory).
FAILPOINT_ENV = 'FLOWMASON_FAILPOINT_KILL_AFTER_COMMIT'


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters for benchmarks and tests."""

    transactions: int  # groups committed (one fsync each with synchronous=FULL)
    failed_transactions: int  # groups rolled back by a storage fault
    requests: int  # requests that went through a transaction, committed or not
    durable_requests: int  # of which awaited by a requester
    deferred_requests: int  # of which riding along (write_later)
    largest_group: int  # most requests committed in one transaction


@dataclass(slots=True)
class _Request:
    work: Work
    future: asyncio.Future[Any] | None  # None for a deferred request: nobody waits on it
    label: str


class _RequestFailed(Exception):
    """A request of the fast path failed on its own; the group is retried with savepoints."""


def _run_group(conn: sqlite3.Connection, group: list[_Request]) -> list[tuple[bool, Any]]:
    """Run on the writer thread: one transaction for the whole group.

    The common case (every request succeeds) runs without savepoints: four statements fewer per
    request on the hot path. If a request fails on its own, the transaction is rolled back and the
    group runs again with one savepoint per request, so only the failing request is refused.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        values = []
        for request in group:
            try:
                values.append(request.work(conn))
            except Exception as exc:
                if is_storage_fault(exc) or not conn.in_transaction:
                    raise
                raise _RequestFailed() from exc
        conn.execute("COMMIT")
        return [(True, value) for value in values]
    except _RequestFailed:
        _rollback(conn)
        return _run_group_isolated(conn, group)
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite has usually rolled back already after FULL/IOERR; a failing ROLLBACK must not hide
    # the error that caused it.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _run_group_isolated(conn: sqlite3.Connection, group: list[_Request]) -> list[tuple[bool, Any]]:
    """The slow path: one transaction, one savepoint per request."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[tuple[bool, Any]] = []
        for request in group:
            conn.execute("SAVEPOINT request")
            try:
                value = request.work(conn)
            except Exception as exc:  # noqa: BLE001 - delivered to the requester
                if is_storage_fault(exc) or not conn.in_transaction:
                    raise
                conn.execute("ROLLBACK TO request")
                conn.execute("RELEASE request")
                outcomes.append((False, exc))
                continue
            conn.execute("RELEASE request")
            outcomes.append((True, value))
        conn.execute("COMMIT")
        return outcomes
    except BaseException:
        _rollback(conn)
        raise


class JournalWriter:
    """Owns the writer connection; serialises every write through one group-committing task."""

    def __init__(self, conn: aiosqlite.Connection, *, path: Path,
                 flush_delay_s: float = DEFAULT_FLUSH_DELAY_S) -> None:
        self._conn = conn
        self._path = path
        self._flush_delay_s = flush_delay_s
        self._pending: list[_Request] = []
        self._wake = asyncio.Event()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._committing = False
        self._task: asyncio.Task[None] | None = None
        self._committed = asyncio.Event()
        self._transactions = 0
        self._failed = 0
        self._requests = 0
        self._durable = 0
        self._deferred = 0
        self._largest = 0
        self._kill_after = int(os.environ.get(FAILPOINT_ENV) or 0)

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-writer")

    @property
    def committing(self) -> bool:
        """True while a transaction is running on the writer thread."""
        return self._committing

    @property
    def pending(self) -> int:
        """Requests queued for the next transaction."""
        return len(self._pending)

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(self._transactions, self._failed, self._requests, self._durable,
                           self._deferred, self._largest)

    def commit_signal(self) -> asyncio.Event:
        """An event set by the next successful commit (take it *before* reading, then wait)."""
        return self._committed

    async def write(self, work: Callable[[sqlite3.Connection], T], *, label: str = "write") -> T:
        """Run ``work`` in the next group transaction; return its result once it is durable."""
        self._check_open(label)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(work, future, label))
        self._wake.set()
        return await future

    def write_later(self, work: Work, *, label: str = "deferred write") -> None:
        """Queue ``work`` to ride along with the next transaction, or a flush within the delay."""
        self._check_open(label)
        self._pending.append(_Request(work, None, label))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._flush_delay_s, self._flush_due)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread between transactions (pragmas, checkpoint, vacuum)."""
        return await in_thread(self._conn, fn)

    async def close(self) -> None:
        """Commit whatever is queued (deferred writes included), then stop the task."""
        if self._closing:
            if self._task is not None:
                await asyncio.shield(self._task)
            return
        self._closing = True
        self._cancel_flush()
        self._wake.set()
        if self._task is not None:
            await self._task

    def _check_open(self, label: str) -> None:
        if self._closing:
            raise JournalError("the journal is closed", operation=label, path=str(self._path))
        if self._task is not None and self._task.done():
            # Never queue behind a writer task that is gone: the requester would wait forever.
            raise JournalError("the journal writer stopped", operation=label,
                               path=str(self._path))

    def _flush_due(self) -> None:
        self._flush_handle = None
        self._wake.set()

    def _cancel_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    async def _run(self) -> None:
        try:
            while True:
                if not self._closing:
                    await self._wake.wait()
                self._wake.clear()
                if self._pending:
                    group, self._pending = self._pending, []
                    self._cancel_flush()
                    try:
                        await self._commit(group)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a writer bug must not hang every waiter
                        log.exception("journal writer error", path=str(self._path), requests=len(group))
                        for request in group:
                            self._fail(request, JournalError(f"internal journal writer error: {exc}",
                                                             operation=request.label, path=str(self._path)))
                elif self._closing:
                    return
        finally:
            # Only reached with requests left if the task itself was cancelled.
            leftover, self._pending = self._pending, []
            for request in leftover:
                self._fail(request, JournalError("the journal writer stopped",
                                                 operation=request.label, path=str(self._path)))

    async def _commit(self, group: list[_Request]) -> None:
        self._committing = True
        try:
            outcomes = await in_thread(self._conn, _run_group, group)
        except asyncio.CancelledError:
            # The writer task itself is being torn down: the group's outcome is unknown.
            for request in group:
                self._fail(request, JournalError("the journal writer stopped mid-commit",
                                                 operation=request.label, path=str(self._path)))
            raise
        except Exception as exc:  # noqa: BLE001 - every storage fault goes to the requesters
            self._count(group, committed=False)
            log.error("journal transaction rolled back", path=str(self._path),
                      requests=len(group), error=str(exc))
            for request in group:
                self._fail(request, storage_error(exc, path=self._path, operation=request.label))
            return
        finally:
            self._committing = False
        self._count(group, committed=True)
        if self._kill_after and self._transactions >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        for request, (ok, value) in zip(group, outcomes):
            if ok:
                if request.future is not None and not request.future.done():
                    request.future.set_result(value)
            else:
                error = (storage_error(value, path=self._path, operation=request.label)
                         if isinstance(value, sqlite3.Error) else value)
                self._fail(request, error)
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()

    def _count(self, group: list[_Request], *, committed: bool) -> None:
        deferred = sum(1 for r in group if r.future is None)
        self._requests += len(group)
        self._deferred += deferred
        self._durable += len(group) - deferred
        if committed:
            self._transactions += 1
            self._largest = max(self._largest, len(group))
        else:
            self._failed += 1

    def _fail(self, request: _Request, error: BaseException) -> None:
        if request.future is None:
            log.warning("deferred journal write lost", path=str(self._path),
                        operation=request.label, error=str(error))
        elif not request.future.done():
            request.future.set_exception(error)
