"""The journal's single writer: one connection, one task, group commit.

Every write is a *request*: a function run on the writer connection inside a transaction. The
writer task takes everything queued, runs it in one ``BEGIN IMMEDIATE`` transaction (one fsync with
``synchronous=FULL``) and resolves each requester after ``COMMIT``. Requests that arrive while a
transaction is committing form the next group, so stages finishing together share one fsync
without any waiting on a timer.

Where a group runs: a small group on a fast disk commits *inline*, on the event loop's thread. A
hop to the connection's thread and back, and the two threads taking turns at the GIL, cost more
than the whole transaction apart from its fsync, and a stage whose result must be durable before
the next one starts has to wait for that hop. Whatever could block the loop goes to the connection's own
thread instead: a large group, any group while recent commits have been slow (a slow or failing
disk), a group whose ``BEGIN IMMEDIATE`` finds the database locked (the inline attempt never waits
for a lock; the threaded one waits up to the busy timeout), WAL checkpoints, and maintenance calls.

An inline group is committed by its *leader*, the first requester of the group, in its own task:
it lets the loop run once (``asyncio.sleep(0)``, so that every requester already runnable joins
the group, as they would join the writer task's), then commits the group and resolves the others.
The writer task is woken only for what must leave the loop's thread. For a chain of stages this
saves a task switch and a loop turn per stage against handing every group to the writer task
(about 15 µs of the journal's 60 µs budget on the project's machine, ``bench/bench_journal.py``).

Each request runs under its own SAVEPOINT when needed: a request that fails on its own (a
constraint, a run that does not exist) is rolled back alone and its requester gets the error; a
storage fault (disk full, I/O error, busy timeout) rolls back the whole group and every requester in
it gets a ``JournalError``. Either way the writer task stays alive for the next group.

Deferred requests (``write_later``: non-durable attempt starts, informational events) never start
a transaction by themselves: they ride along with the next durable group, or are flushed after
``flush_delay_s`` if nothing else commits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable

import structlog

from flowmasond.errors import JournalError
from flowmasond.journal.connections import (SqliteThread, is_busy, is_storage_fault,
                                            set_busy_timeout, storage_error)
from flowmasond.journal.sqlfiles import queries

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]

log = structlog.get_logger("flowmasond.journal")

# How long a deferred write may wait for a durable group to ride along with.
DEFAULT_FLUSH_DELAY_S = 0.05
# Crash-test failpoint: SIGKILL this process right after the N-th transaction commits, before any
# requester learns of it (the worst moment: durable on disk, unacknowledged in memory).
FAILPOINT_ENV = 'FLOWMASON_FAILPOINT_KILL_AFTER_COMMIT'
# A group of more requests than this commits on the writer thread: it is a busy moment, and the
# loop has other runs to serve while the transaction runs.
INLINE_MAX_REQUESTS = 64
# When inline commits get slow, commits move to the writer thread for INLINE_BACKOFF_S: the disk is
# slow or failing, and the loop must keep serving the socket and the watchdog meanwhile. "Slow" is
# a moving average above INLINE_SLOW_S (single fsyncs of 10-20 ms are normal on a busy disk and
# must not flip the mode), or one commit above INLINE_STALL_S.
INLINE_SLOW_S = 0.005
INLINE_STALL_S = 0.100
INLINE_AVERAGE_WEIGHT = 0.1  # of the newest commit in the moving average
INLINE_BACKOFF_S = 30.0
# WAL checkpoints, instead of SQLite's automatic ones inside whatever COMMIT crosses its threshold
# (which may be an inline one, on the loop). The writer runs one itself between groups every
# CHECKPOINT_EVERY transactions: only a checkpoint that finds the WAL fully copied lets the next
# transaction restart the WAL from its beginning, and one that runs while commits append never
# does, so without it the WAL would grow without bound (measured: 97 MB instead of 3.6 MB after
# 3,500 chain commits, and slower FULL commits as the file kept growing).
# At synchronous=NORMAL a checkpoint is also where the WAL reaches the disk (two fsyncs and the
# WAL's pages written back: 2-9 ms here, which the stage waiting for its commit waited for). There,
# every BACKGROUND_CHECKPOINT_EVERY transactions a passive checkpoint runs on a connection and
# thread of its own, beside the commits, and the writer's own one, which then has little left to
# copy, runs every NORMAL_CHECKPOINT_EVERY (the WAL holds at most that many transactions: about
# 8 MB for small stages). At FULL the commits have synced the WAL already and the checkpoint is
# short; running it beside the commits, or less often, made FULL chains slower (their fsyncs
# competed with the checkpoint's, and a larger WAL costs each commit more; measured in
# bench_journal's interleaved blocks: journal share 1.02x -> 1.15x with background checkpoints,
# 1.31x with both), so FULL keeps the writer's checkpoint every 128 transactions.
CHECKPOINT_EVERY = 128
BACKGROUND_CHECKPOINT_EVERY = 128
NORMAL_CHECKPOINT_EVERY = 512


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters for benchmarks and tests."""

    transactions: int  # groups committed (one fsync each with synchronous=FULL)
    failed_transactions: int  # groups rolled back by a storage fault
    requests: int  # requests that went through a transaction, committed or not
    durable_requests: int  # of which awaited by a requester
    deferred_requests: int  # of which riding along (write_later)
    largest_group: int  # most requests committed in one transaction
    inline_transactions: int  # of the committed groups, those run on the event loop's thread
    checkpoints: int  # WAL checkpoints run by the writer between groups
    background_checkpoints: int = 0  # passive checkpoints run beside the commits


@dataclass(slots=True)
class _Request:
    work: Work
    future: asyncio.Future[Any] | None  # None for a deferred request: nobody waits on it
    label: str


class _RequestFailed(Exception):
    """A request of the fast path failed on its own; the group is retried with savepoints."""


class _LockedOut(Exception):
    """The inline ``BEGIN IMMEDIATE`` found the database locked; the group goes to the thread."""


def _run_group(conn: sqlite3.Connection, group: list[_Request], *,
               begun: bool = False) -> list[tuple[bool, Any]]:
    """One transaction for the whole group (``begun``: BEGIN IMMEDIATE was already issued).

    The common case (every request succeeds) runs without savepoints: four statements fewer per
    request on the hot path. If a request fails on its own, the transaction is rolled back and the
    group runs again with one savepoint per request, so only the failing request is refused.
    """
    if not begun:
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


def _run_group_inline(conn: sqlite3.Connection, group: list[_Request]) -> list[tuple[bool, Any]]:
    """``_run_group`` on the loop's thread; raises ``_LockedOut`` instead of waiting for a lock.

    The connection's busy timeout is 0 between threaded operations, so BEGIN IMMEDIATE returns
    SQLITE_BUSY at once when another connection holds the write lock.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise _LockedOut() from exc
        raise
    return _run_group(conn, group, begun=True)


def _with_busy_timeout(conn: sqlite3.Connection, busy_timeout_ms: int,
                       fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(conn, *args)`` on the writer thread, waiting up to the busy timeout for locks."""
    set_busy_timeout(conn, busy_timeout_ms)
    try:
        return fn(conn, *args)
    finally:
        set_busy_timeout(conn, 0)


def _checkpoint_passive(conn: sqlite3.Connection) -> None:
    conn.execute(queries().checkpoint_passive).fetchall()


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


@dataclass(slots=True)
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


class JournalWriter:
    """Owns the writer connection; serialises every write through one group-committing task."""

    def __init__(self, conn: SqliteThread, *, path: Path,
                 flush_delay_s: float = DEFAULT_FLUSH_DELAY_S, busy_timeout_ms: int = 5000,
                 inline_commits: bool = True, background_checkpoints: bool = False) -> None:
        self._conn = conn
        self._path = path
        self._flush_delay_s = flush_delay_s
        self._busy_timeout_ms = busy_timeout_ms
        self._inline_commits = inline_commits
        self._threaded_until = 0.0  # monotonic time until which inline commits are off
        self._inline_average_s = 0.0  # moving average of inline commit durations
        self._pending: list[_Request] = []
        self._calls: deque[_Call] = deque()
        self._wake = asyncio.Event()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._committing = False
        # True while the connection is in use on its thread (a threaded group, a call, a
        # checkpoint): a leader must not commit inline then (one thread at a time).
        self._busy = False
        self._leading = False  # a leader is letting the loop run once before it commits
        self._task: asyncio.Task[None] | None = None
        # Created when someone asks for it (a follower): most commits have nobody to wake.
        self._committed: asyncio.Event | None = None
        self._transactions = 0
        self._inline = 0
        self._failed = 0
        self._requests = 0
        self._durable = 0
        self._deferred = 0
        self._largest = 0
        self._checkpoints = 0
        self._since_checkpoint = 0  # transactions since the last checkpoint between groups
        self._background_checkpoints = 0
        self._since_background = 0  # transactions since the last checkpoint of either kind
        self._checkpointer: SqliteThread | None = None
        # background_checkpoints: for synchronous=NORMAL (see BACKGROUND_CHECKPOINT_EVERY).
        self._background_checkpoints_on = background_checkpoints
        self._checkpoint_every = NORMAL_CHECKPOINT_EVERY if background_checkpoints else CHECKPOINT_EVERY
        self._background: asyncio.Task[None] | None = None
        self._kill_after = int(os.environ.get(FAILPOINT_ENV) or 0)
        # Called with (seconds, requests) after each committed group: the daemon's metrics.
        self.commit_observer: Callable[[float, int], None] | None = None

    async def start(self) -> None:
        """Start the writer task (the connection must be configured and migrated)."""
        # Between threaded operations the connection does not wait for locks: an inline BEGIN
        # must fail at once rather than block the loop. SQLite's own checkpoints are replaced by
        # the writer's, on the thread (CHECKPOINT_EVERY).
        await self._conn.run(_configure_for_writer, self._inline_commits, self._busy_timeout_ms)
        if self._background_checkpoints_on:
            self._checkpointer = await SqliteThread.open(self._path, name="journal-checkpointer")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-writer")

    @property
    def committing(self) -> bool:
        """True while a transaction is running (observable while it runs on the writer thread)."""
        return self._committing

    @property
    def pending(self) -> int:
        """Requests queued for the next transaction."""
        return len(self._pending)

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(self._transactions, self._failed, self._requests, self._durable,
                           self._deferred, self._largest, self._inline, self._checkpoints,
                           self._background_checkpoints)

    def commit_signal(self) -> asyncio.Event:
        """An event set by the next successful commit (take it *before* reading, then wait)."""
        if self._committed is None:
            self._committed = asyncio.Event()
        return self._committed

    async def write(self, work: Callable[[sqlite3.Connection], T], *, label: str = "write") -> T:
        """Run ``work`` in the next group transaction; return its result once it is durable."""
        self._check_open(label)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(work, future, label))
        if self._leading:
            return await future  # the group's leader commits it
        if self._busy or not self._inline_commits or self._calls or self._task is None:
            self._wake.set()
            return await future
        self._leading = True
        try:
            await asyncio.sleep(0)  # every requester already runnable joins the group
        except asyncio.CancelledError:
            self._leading = False
            self._wake.set()  # the group is the writer task's now
            raise
        self._leading = False
        if not future.done():
            self._lead()
        return await future

    def _lead(self) -> None:
        """Commit the pending group inline if it may run on the loop, else hand it to the task."""
        group = self._pending
        if (self._busy or self._calls or self._committing or not self._inline_allowed(group)
                or self._since_checkpoint >= self._checkpoint_every  # the task checkpoints first
                or self._task is None or self._task.done()):
            self._wake.set()
            return
        self._pending = []
        try:
            if not self._commit_inline(group):
                self._pending[:0] = group  # locked out: the task waits for the lock on its thread
                self._wake.set()
                return
        except Exception as exc:  # noqa: BLE001 - a writer bug must not hang every waiter
            self._internal_error(group, exc)
        if self._checkpoint_due() or self._pending:
            self._wake.set()

    def write_later(self, work: Work, *, label: str = "deferred write") -> None:
        """Queue ``work`` to ride along with the next transaction, or a flush within the delay."""
        self._check_open(label)
        self._pending.append(_Request(work, None, label))
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._flush_delay_s, self._flush_due)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread between transactions (pragmas, checkpoint, vacuum).

        It waits up to the busy timeout for locks. While the writer task runs, the call is queued
        to it, so the connection is never used by the loop and the thread at once.
        """
        if self._task is None or self._task.done():
            return await self._conn.run(_with_busy_timeout, self._busy_timeout_ms, fn)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.append(_Call(fn, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Commit whatever is queued (deferred writes included), then stop the task."""
        if self._closing:
            if self._task is not None:
                await asyncio.shield(self._task)
            return
        self._closing = True
        self._cancel_flush()
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            await self.checkpoint_settled()
            if self._checkpointer is not None:
                await self._checkpointer.close()

    async def checkpoint_settled(self) -> None:
        """Wait until no checkpoint runs beside the commits (deterministic tests, close)."""
        if self._background is not None:
            await asyncio.gather(self._background, return_exceptions=True)

    def _check_open(self, label: str) -> None:
        if self._closing:
            raise JournalError("the journal is closed", operation=label, path=str(self._path))
        if self._task is not None and self._task.done():
            # Never queue behind a writer task that is gone: the requester would wait forever.
            raise JournalError("the journal writer stopped", operation=label,
                               path=str(self._path))

    def _flush_due(self) -> None:
        # The timer is not cancelled when a group takes the deferred writes along (arming and
        # cancelling one per stage cost more than the rest of a deferred write): armed by the
        # first deferred write after the last firing, it fires within the delay of every deferred
        # write queued since, and wakes the writer only if some are still waiting.
        self._flush_handle = None
        if self._pending:
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
                while self._calls:
                    await self._run_call(self._calls.popleft())
                await self._checkpoint_if_due()  # due after a leader's commit: before the next group
                if self._pending:
                    group, self._pending = self._pending, []
                    try:
                        await self._commit(group)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a writer bug must not hang every waiter
                        self._internal_error(group, exc)
                await self._checkpoint_if_due()
                if self._closing and not self._calls and not self._pending:
                    return
        finally:
            # Only reached with requests left if the task itself was cancelled.
            leftover, self._pending = self._pending, []
            for request in leftover:
                self._fail(request, JournalError("the journal writer stopped",
                                                 operation=request.label, path=str(self._path)))
            while self._calls:
                call = self._calls.popleft()
                if not call.future.done():
                    call.future.set_exception(JournalError(
                        "the journal writer stopped", operation="call", path=str(self._path)))

    def _internal_error(self, group: list[_Request], exc: Exception) -> None:
        log.exception("journal writer error", path=str(self._path), requests=len(group))
        for request in group:
            self._fail(request, JournalError(f"internal journal writer error: {exc}",
                                             operation=request.label, path=str(self._path)))

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on the writer thread, waiting up to the busy timeout for locks."""
        self._busy = True
        try:
            return await self._conn.run(_with_busy_timeout, self._busy_timeout_ms, fn, *args)
        finally:
            self._busy = False

    async def _run_call(self, call: _Call) -> None:
        try:
            value = await self._on_thread(call.fn)
        except asyncio.CancelledError:
            if not call.future.done():
                call.future.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            if not call.future.done():
                call.future.set_exception(exc)
            return
        if not call.future.done():
            call.future.set_result(value)

    def _checkpoint_due(self) -> bool:
        return (self._since_checkpoint >= self._checkpoint_every
                or (self._checkpointer is not None and self._background is None
                    and self._since_background >= BACKGROUND_CHECKPOINT_EVERY))

    async def _checkpoint_if_due(self) -> None:
        if self._closing:
            return  # close() checkpoints the whole WAL itself
        if self._since_checkpoint >= self._checkpoint_every:
            await self.checkpoint_settled()  # one checkpoint at a time
            await self._checkpoint()
        elif (self._checkpointer is not None and self._background is None
              and self._since_background >= BACKGROUND_CHECKPOINT_EVERY):
            self._since_background = 0
            self._background = asyncio.get_running_loop().create_task(
                self._checkpoint_beside(), name="journal-checkpoint")

    async def _checkpoint(self) -> None:
        """A checkpoint between groups: with nothing appended meanwhile, the WAL can restart."""
        self._since_checkpoint = self._since_background = 0
        try:
            await self._on_thread(_checkpoint_passive)
        except sqlite3.Error as exc:
            # Not fatal: the WAL keeps growing until a later checkpoint succeeds.
            log.warning("journal checkpoint failed", path=str(self._path), error=str(exc))
            return
        self._checkpoints += 1

    async def _checkpoint_beside(self) -> None:
        """A passive checkpoint on the checkpointer's connection while commits go on."""
        assert self._checkpointer is not None
        try:
            await self._checkpointer.run(_checkpoint_passive)
        except sqlite3.Error as exc:
            log.warning("journal checkpoint failed", path=str(self._path), error=str(exc))
        else:
            self._background_checkpoints += 1
        finally:
            self._background = None
            self._wake.set()  # a checkpoint between groups may have waited for this one

    def _inline_allowed(self, group: list[_Request]) -> bool:
        return (self._inline_commits and len(group) <= INLINE_MAX_REQUESTS
                and time.monotonic() >= self._threaded_until)

    def _note_inline_duration(self, elapsed: float) -> None:
        average = self._inline_average_s
        average += INLINE_AVERAGE_WEIGHT * (elapsed - average)
        self._inline_average_s = average
        if elapsed > INLINE_STALL_S or average > INLINE_SLOW_S:
            self._move_off_loop(reason="slow commits", commit_ms=round(elapsed * 1000, 1),
                                average_ms=round(average * 1000, 1))

    def _move_off_loop(self, **context: Any) -> None:
        self._threaded_until = time.monotonic() + INLINE_BACKOFF_S
        self._inline_average_s = 0.0
        if self._inline_commits:
            log.info("journal commits move to the writer thread for a while", path=str(self._path),
                     backoff_s=INLINE_BACKOFF_S, **context)

    def _commit_inline(self, group: list[_Request]) -> bool:
        """Commit ``group`` on the loop's thread; False (nothing done) if the database is locked."""
        began = time.perf_counter()
        self._committing = True
        try:
            outcomes = _run_group_inline(self._conn.connection, group)
        except _LockedOut:
            return False  # another connection holds the write lock: wait for it on the thread
        except Exception as exc:  # noqa: BLE001 - every storage fault goes to the requesters
            self._rolled_back(group, exc)
            return True
        finally:
            self._committing = False
        self._note_inline_duration(time.perf_counter() - began)
        self._resolve(group, outcomes, began=began, inline=True)
        return True

    async def _commit(self, group: list[_Request]) -> None:
        """The writer task's commit: inline when allowed, else (or when locked out) on the thread."""
        if self._inline_allowed(group) and self._commit_inline(group):
            return
        began = time.perf_counter()
        self._committing = True
        try:
            outcomes = await self._on_thread(_run_group, group)
        except asyncio.CancelledError:
            # The writer task itself is being torn down: the group's outcome is unknown.
            for request in group:
                self._fail(request, JournalError("the journal writer stopped mid-commit",
                                                 operation=request.label, path=str(self._path)))
            raise
        except Exception as exc:  # noqa: BLE001 - every storage fault goes to the requesters
            self._rolled_back(group, exc)
            return
        finally:
            self._committing = False
        self._resolve(group, outcomes, began=began, inline=False)

    def _rolled_back(self, group: list[_Request], exc: Exception) -> None:
        self._count(group, committed=False, inline=False)
        # A failing disk must not block the loop on the next attempts either.
        self._move_off_loop(reason="storage fault", error=str(exc))
        log.error("journal transaction rolled back", path=str(self._path),
                  requests=len(group), error=str(exc))
        for request in group:
            self._fail(request, storage_error(exc, path=self._path, operation=request.label))

    def _resolve(self, group: list[_Request], outcomes: list[tuple[bool, Any]], *,
                 began: float, inline: bool) -> None:
        """After COMMIT: count, observe, then tell each requester its outcome."""
        self._count(group, committed=True, inline=inline)
        if self.commit_observer is not None:
            try:
                self.commit_observer(time.perf_counter() - began, len(group))
            except Exception:  # noqa: BLE001 - observing a commit must never fail it
                log.exception("journal commit observer failed")
        if self._kill_after and self._transactions >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        for request, (ok, value) in zip(group, outcomes, strict=False):
            future = request.future
            if ok:
                if future is not None and not future.done():
                    future.set_result(value)
            else:
                error = (storage_error(value, path=self._path, operation=request.label)
                         if isinstance(value, sqlite3.Error) else value)
                self._fail(request, error)
        committed, self._committed = self._committed, None
        if committed is not None:
            committed.set()

    def _count(self, group: list[_Request], *, committed: bool, inline: bool) -> None:
        deferred = 0
        for request in group:
            if request.future is None:
                deferred += 1
        self._requests += len(group)
        self._deferred += deferred
        self._durable += len(group) - deferred
        if committed:
            self._transactions += 1
            self._since_checkpoint += 1
            self._since_background += 1
            self._inline += inline
            self._largest = max(self._largest, len(group))
        else:
            self._failed += 1

    def _fail(self, request: _Request, error: BaseException) -> None:
        if request.future is None:
            log.warning("deferred journal write lost", path=str(self._path),
                        operation=request.label, error=str(error))
        elif not request.future.done():
            request.future.set_exception(error)


def _configure_for_writer(conn: sqlite3.Connection, inline_commits: bool,
                          busy_timeout_ms: int) -> None:
    conn.execute(queries().auto_checkpoint_off).fetchall()
    set_busy_timeout(conn, 0 if inline_commits else busy_timeout_ms)
