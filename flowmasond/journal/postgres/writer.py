"""The PostgreSQL journal's writer: one session, one task, group commit, reconnection.

As in the SQLite journal (flowmasond.journal.writer), every write is a *request*, an async
function run on the writer's cursor inside a transaction; the task takes everything queued, runs
it in one transaction (one WAL flush) and resolves each requester after ``COMMIT``. Requests
arriving meanwhile form the next group. A request failing on its own (a conflict, a missing run, a
fence refusal) rolls the group back and the group runs again with one SAVEPOINT per request, so
only that request is refused. Deferred requests (``write_later``) ride along with the next group
or are flushed after ``flush_delay_s``.

Reconnection. The writer's session may drop (the server restarted, the network cut). Then:
- the lost transaction had not sent ``COMMIT``: PostgreSQL rolls it back, so the group runs again
  on a new session;
- it had sent ``COMMIT`` and the answer was lost: the outcome is unknown, so the writer asks the
  server with ``pg_xact_status`` of the transaction id it took at ``BEGIN``. ``committed``: the
  requesters get the values computed in that transaction, nothing is written again; ``aborted``
  (or unknown to the server): the group runs again. No record is duplicated or lost either way.
New sessions are tried with a backoff (50 ms doubling to 2 s) for up to ``reconnect_timeout_s``;
after that the group's requesters get a ``JournalError`` and the next group starts over. Every new
session runs ``on_connect`` first (the single-owner lock), so nothing is written without it.

Transient conflicts. With several nodes on one database (lease fences reading ``run_leases`` ``FOR
SHARE``, takeovers updating it, stage-task claims) the writer's transaction may be chosen as a
deadlock victim (SQLSTATE 40P01) or fail to serialize (40001). PostgreSQL has then rolled back its
work (the statement, or the whole transaction at COMMIT), so the writer rolls the transaction back
and runs the whole group again, as after a lost session (requests are functions of their
parameters, rerun only on a transaction that left nothing behind), up to ``TRANSIENT_RETRIES``
times with a short jittered backoff; the last try refuses the conflicting request alone, like any
other failing request. Only these two SQLSTATEs are retried: a ``FencedError`` (or any other error
of the daemon's own) never is.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable

import structlog

from flowmasond.errors import FlowmasonError, JournalError, JournalLockedError
from flowmasond.journal.postgres.sql import pg_queries
from flowmasond.journal.writer import DEFAULT_FLUSH_DELAY_S, FAILPOINT_ENV, WriterStats

T = TypeVar("T")
Work = Callable[[Any], Awaitable[Any]]  # receives a psycopg AsyncCursor

log = structlog.get_logger("flowmasond.journal")

DEFAULT_RECONNECT_TIMEOUT_S = 60.0
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
TRANSIENT_RETRIES = 5
TRANSIENT_FIRST_S = 0.01
TRANSIENT_MAX_S = 0.2


def is_connection_lost(conn: Any, exc: BaseException) -> bool:
    """True when ``exc`` means the session is gone (as opposed to one statement failing)."""
    import psycopg
    from psycopg import errors

    if isinstance(exc, (errors.AdminShutdown, errors.CrashShutdown, errors.CannotConnectNow,
                        errors.IdleSessionTimeout)):
        return True
    return isinstance(exc, psycopg.OperationalError) and (conn is None or conn.closed or conn.broken)


def is_transient(exc: BaseException) -> bool:
    """True for a driver error PostgreSQL asks to retry: a serialization failure or a deadlock victim.

    Errors of the daemon's own (``FencedError`` first of all) are never transient, whatever caused them.
    """
    import psycopg

    return isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) in TRANSIENT_SQLSTATES


def translate(exc: BaseException, *, dsn: str, operation: str) -> FlowmasonError:
    """A driver error as the daemon's ``JournalError`` naming the database and the operation."""
    if isinstance(exc, FlowmasonError):
        return exc
    error = JournalError(f"journal {operation} failed: {exc}", database=dsn,
                         sqlstate=getattr(exc, "sqlstate", None))
    error.__cause__ = exc
    return error


class Backoff:
    """Delays between reconnection attempts, until a deadline."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self._delay = BACKOFF_FIRST_S

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    async def wait(self) -> None:
        await asyncio.sleep(min(self._delay, max(0.0, self.deadline - time.monotonic())))
        self._delay = min(self._delay * 2, BACKOFF_MAX_S)


@dataclass(slots=True)
class _Request:
    work: Work
    future: asyncio.Future[Any] | None  # None for a deferred request
    label: str


@dataclass(slots=True)
class _Call:
    fn: Work
    future: asyncio.Future[Any]


class _Lost(Exception):
    """The session dropped; ``xid`` is set when COMMIT had been sent (outcome unknown)."""

    def __init__(self, xid: str | None = None, outcomes: list[tuple[bool, Any]] | None = None) -> None:
        super().__init__("connection lost")
        self.xid = xid
        self.outcomes = outcomes or []


class _Transient(Exception):
    """The group's transaction lost a conflict (``cause``: 40001 or 40P01) and was rolled back."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PgWriter:
    """Owns the writer session; serialises every write through one group-committing task."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], *, dsn: str,
                 flush_delay_s: float = DEFAULT_FLUSH_DELAY_S,
                 reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S) -> None:
        self._connect = connect  # opens a session and runs the on-connect steps (owner lock)
        self._dsn = dsn
        self._conn: Any = None
        self._flush_delay_s = flush_delay_s
        self._reconnect_timeout_s = reconnect_timeout_s
        self._pending: list[_Request] = []
        self._calls: deque[_Call] = deque()
        self._wake = asyncio.Event()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._committed = asyncio.Event()
        self._transactions = 0
        self._failed = 0
        self._requests = 0
        self._durable = 0
        self._deferred = 0
        self._largest = 0
        self.reconnects = 0
        self.reconnecting = False  # True while the session is lost and being retried
        self.unknown_outcomes = 0  # COMMITs whose answer was lost (resolved with pg_xact_status)
        self.transient_retries = 0  # groups run again after a deadlock or a serialization failure
        self._kill_after = int(os.environ.get(FAILPOINT_ENV) or 0)
        self.commit_observer: Callable[[float, int], None] | None = None

    async def start(self, conn: Any) -> None:
        """Start the task on ``conn`` (already connected, owner lock taken)."""
        self._conn = conn
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-journal-writer")

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def alive(self) -> bool:
        """The writer task runs (it may be waiting for the database)."""
        return self._task is not None and not self._task.done()

    def stats(self) -> WriterStats:
        """The SQLite writer's counters (no inline/threaded split, no WAL checkpoints here)."""
        return WriterStats(self._transactions, self._failed, self._requests, self._durable,
                           self._deferred, self._largest, 0, 0)

    def commit_signal(self) -> asyncio.Event:
        """An event set by the next successful commit (take it *before* reading, then wait)."""
        return self._committed

    async def write(self, work: Callable[[Any], Awaitable[T]], *, label: str = "write") -> T:
        """Run ``work(cursor)`` in the next group transaction; return its result once committed."""
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
            self._flush_handle = asyncio.get_running_loop().call_later(self._flush_delay_s, self._flush_due)

    async def call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(cursor)`` on the writer's session between transactions (autocommit)."""
        self._check_open("call")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.append(_Call(fn, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Commit whatever is queued, stop the task, close the session."""
        if not self._closing:
            self._closing = True
            self._cancel_flush()
            self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead session is not an error
                log.debug("journal writer session close failed", error=str(exc))

    def _check_open(self, label: str) -> None:
        if self._closing:
            raise JournalError("the journal is closed", operation=label, database=self._dsn)
        if self._task is not None and self._task.done():
            raise JournalError("the journal writer stopped", operation=label, database=self._dsn)

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
                while self._calls:
                    await self._run_call(self._calls.popleft())
                if self._pending:
                    group, self._pending = self._pending, []
                    self._cancel_flush()
                    try:
                        await self._commit(group)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a writer bug must not hang every waiter
                        log.exception("journal writer error", database=self._dsn, requests=len(group))
                        for request in group:
                            self._fail(request, JournalError(f"internal journal writer error: {exc}",
                                                             operation=request.label, database=self._dsn))
                elif self._closing and not self._calls:
                    return
        finally:
            leftover, self._pending = self._pending, []
            for request in leftover:
                self._fail(request, JournalError("the journal writer stopped", operation=request.label,
                                                 database=self._dsn))
            while self._calls:
                call = self._calls.popleft()
                if not call.future.done():
                    call.future.set_exception(JournalError("the journal writer stopped", operation="call",
                                                           database=self._dsn))
            self._committed.set()  # followers see the close

    # -- sessions ----------------------------------------------------------------------------

    async def _session(self, backoff: Backoff) -> Any:
        """The live session, reconnecting (with the owner lock) until ``backoff`` expires."""
        while self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                old, self._conn = self._conn, None
                try:
                    await old.close()
                except Exception:  # noqa: BLE001, S110 - the old session is gone either way
                    pass
            self.reconnecting = True
            try:
                self._conn = await self._connect()
                self.reconnects += 1
                self.reconnecting = False
                log.info("journal reconnected", database=self._dsn, reconnects=self.reconnects)
            except JournalLockedError:
                # Our own lost session may still hold the owner lock until the server notices it is
                # gone; anyone else holding it past the deadline is reported.
                if backoff.expired:
                    raise
                await backoff.wait()
            except FlowmasonError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                if backoff.expired:
                    raise translate(exc, dsn=self._dsn, operation="reconnect") from exc
                log.warning("journal unreachable, retrying", database=self._dsn, error=str(exc))
                await backoff.wait()
        return self._conn

    async def _run_call(self, call: _Call) -> None:
        backoff = Backoff(self._reconnect_timeout_s)
        while True:
            try:
                conn = await self._session(backoff)
                value = await call.fn(conn.cursor())
            except asyncio.CancelledError:
                if not call.future.done():
                    call.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                if is_connection_lost(self._conn, exc) and not backoff.expired:
                    await backoff.wait()
                    continue
                if not call.future.done():
                    call.future.set_exception(translate(exc, dsn=self._dsn, operation="call"))
                return
            if not call.future.done():
                call.future.set_result(value)
            return

    # -- transactions ------------------------------------------------------------------------

    async def _commit(self, group: list[_Request]) -> None:
        began = time.perf_counter()
        backoff = Backoff(self._reconnect_timeout_s)
        conflicts = 0
        while True:
            try:
                conn = await self._session(backoff)
                outcomes = await self._run_group(conn, group, retry_transient=conflicts < TRANSIENT_RETRIES)
                break
            except _Transient as transient:
                conflicts += 1
                self.transient_retries += 1
                log.warning("journal transaction conflicted, running it again", database=self._dsn,
                            requests=len(group), sqlstate=getattr(transient.cause, "sqlstate", None),
                            retry=conflicts)
                # Jittered, so that two writers that just deadlocked do not meet again in step.
                delay = min(TRANSIENT_FIRST_S * 2 ** (conflicts - 1), TRANSIENT_MAX_S)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - not cryptographic
            except _Lost as lost:
                if lost.xid is not None:
                    self.unknown_outcomes += 1
                    try:
                        status = await self._outcome(lost.xid, backoff)
                    except Exception as exc:  # noqa: BLE001 - the database stayed away past the deadline
                        self._give_up(group, JournalError(
                            "the outcome of a commit is unknown: the PostgreSQL journal stayed unreachable",
                            database=self._dsn, error=str(exc)))
                        return
                    log.warning("journal commit outcome was unknown", database=self._dsn,
                                requests=len(group), outcome=status)
                    if status == "committed":
                        outcomes = lost.outcomes
                        break
                if backoff.expired:
                    self._give_up(group, JournalError("the PostgreSQL journal is unreachable",
                                                      database=self._dsn))
                    return
                await backoff.wait()
            except asyncio.CancelledError:
                for request in group:
                    self._fail(request, JournalError("the journal writer stopped mid-commit",
                                                     operation=request.label, database=self._dsn))
                raise
            except Exception as exc:  # noqa: BLE001 - every storage fault goes to the requesters
                self._give_up(group, exc)
                return
        self._count(group, committed=True)
        if self.commit_observer is not None:
            try:
                self.commit_observer(time.perf_counter() - began, len(group))
            except Exception:  # noqa: BLE001 - observing a commit must never fail it
                log.exception("journal commit observer failed")
        if self._kill_after and self._transactions >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        for request, (ok, value) in zip(group, outcomes, strict=False):
            if ok:
                if request.future is not None and not request.future.done():
                    request.future.set_result(value)
            else:
                self._fail(request, translate(value, dsn=self._dsn, operation=request.label))
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()

    def _give_up(self, group: list[_Request], exc: BaseException) -> None:
        self._count(group, committed=False)
        log.error("journal transaction rolled back", database=self._dsn, requests=len(group), error=str(exc))
        for request in group:
            self._fail(request, translate(exc, dsn=self._dsn, operation=request.label))

    async def _outcome(self, xid: str, backoff: Backoff) -> str:
        """The fate of transaction ``xid`` after its COMMIT's answer was lost."""
        q = pg_queries()
        while True:
            try:
                conn = await self._session(backoff)
                cur = conn.cursor()
                await cur.execute(q.transaction_status, {"xid": xid})
                row = await cur.fetchone()
                status = row[0] if row is not None else None
                if status != "in progress":
                    # None: older than the server keeps status for; it cannot have committed
                    # unnoticed by a session that just asked, so it is treated as aborted.
                    return str(status or "aborted")
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                if not is_connection_lost(self._conn, exc) or backoff.expired:
                    raise translate(exc, dsn=self._dsn, operation="commit outcome") from exc
            await backoff.wait()

    async def _begin(self, cur: Any) -> str:
        await cur.execute("BEGIN")
        await cur.execute(pg_queries().current_xact_id)
        row = await cur.fetchone()
        return str(row[0])

    async def _finish(self, conn: Any, cur: Any, xid: str, outcomes: list[tuple[bool, Any]],
                      retry_transient: bool) -> None:
        try:
            await cur.execute("COMMIT")
        except Exception as exc:
            if is_connection_lost(conn, exc):
                raise _Lost(xid, outcomes) from exc
            if retry_transient and is_transient(exc):
                raise _Transient(exc) from exc  # a failed COMMIT has rolled everything back
            raise

    async def _rollback(self, conn: Any, cur: Any) -> None:
        if conn.closed or conn.broken:
            return
        try:
            await cur.execute("ROLLBACK")
        except Exception as exc:  # noqa: BLE001 - a failing ROLLBACK must not hide the cause
            log.debug("journal rollback failed", error=str(exc))

    async def _run_group(self, conn: Any, group: list[_Request], *,
                         retry_transient: bool) -> list[tuple[bool, Any]]:
        """The fast path: the whole group in pipeline mode, so statements that need no answer
        (BEGIN, the transaction id, the record inserts) travel together; COMMIT waits for the rest.

        A failure (which, pipelined, may surface at a later statement than its cause) rolls back and
        sends the group down the slow path, which finds the failing request; a transient conflict
        (with ``retry_transient``) raises ``_Transient`` so that the whole group runs again.
        """
        cur = conn.cursor()
        xid_cur = conn.cursor()
        try:
            async with conn.pipeline():
                await cur.execute("BEGIN")
                await xid_cur.execute(pg_queries().current_xact_id)
                values = [await request.work(cur) for request in group]
                row = await xid_cur.fetchone()
        except Exception as exc:
            if is_connection_lost(conn, exc):
                raise _Lost() from exc
            await self._rollback(conn, cur)
            if retry_transient and is_transient(exc):
                raise _Transient(exc) from exc
            return await self._run_isolated(conn, group, retry_transient=retry_transient)
        except BaseException as exc:
            if not is_connection_lost(conn, exc):
                await self._rollback(conn, cur)
            raise
        outcomes = [(True, value) for value in values]
        await self._finish(conn, cur, str(row[0]), outcomes, retry_transient)
        return outcomes

    async def _run_isolated(self, conn: Any, group: list[_Request], *,
                            retry_transient: bool) -> list[tuple[bool, Any]]:
        """The slow path: one transaction, one savepoint per request.

        A request losing a transient conflict (with ``retry_transient``) rolls the whole transaction
        back and raises ``_Transient``: its other requests' locks may be what it conflicted on.
        """
        cur = conn.cursor()
        try:
            xid = await self._begin(cur)
            outcomes: list[tuple[bool, Any]] = []
            for request in group:
                await cur.execute("SAVEPOINT request")
                try:
                    value = await request.work(cur)
                except Exception as exc:  # noqa: BLE001 - delivered to the requester
                    if is_connection_lost(conn, exc):
                        raise _Lost() from exc
                    if retry_transient and is_transient(exc):
                        raise _Transient(exc) from exc
                    await cur.execute("ROLLBACK TO SAVEPOINT request")
                    await cur.execute("RELEASE SAVEPOINT request")
                    outcomes.append((False, exc))
                    continue
                await cur.execute("RELEASE SAVEPOINT request")
                outcomes.append((True, value))
        except _Lost:
            raise
        except BaseException as exc:
            if is_connection_lost(conn, exc):
                raise _Lost() from exc
            await self._rollback(conn, cur)
            raise
        await self._finish(conn, cur, xid, outcomes, retry_transient)
        return outcomes

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
            log.warning("deferred journal write lost", database=self._dsn, operation=request.label,
                        error=str(error))
        elif not request.future.done():
            request.future.set_exception(error)
