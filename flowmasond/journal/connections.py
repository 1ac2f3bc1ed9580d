"""SQLite connections of the journal: settings, the writer's thread, the reader, errors.

The reader is an aiosqlite connection used through aiosqlite's public API: every read is one
statement (``execute_fetchall``: one hop to aiosqlite's thread and back).

The writer is a plain ``sqlite3.Connection`` with a thread of its own (``SqliteThread``), because
it needs two things aiosqlite's public API does not offer: a whole group transaction shipped to
the thread as one function (one hop however many statements it holds; aiosqlite costs one hop per
statement), and the connection itself, to commit small groups inline on the loop's thread (no hop
at all). Measured on the project's 2-core machine (``bench/bench_hops.py``), one INSERT + COMMIT
at ``synchronous=NORMAL`` costs about 18-50 µs inline against about 130-350 µs as aiosqlite's
three public calls (BEGIN, INSERT, COMMIT), 7x more, while the journal's whole per-stage budget
is 60 µs. Reaching into aiosqlite's private ``_execute``/``_conn`` instead, as the journal once
did, could break with any minor release.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from functools import partial
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Literal, TypeVar
from collections.abc import Callable

import aiosqlite

from flowmasond.errors import ConfigurationError, JournalError, StorageFullError

T = TypeVar("T")

Synchronous = Literal["FULL", "NORMAL"]
SYNCHRONOUS_MODES: tuple[str, ...] = ("FULL", "NORMAL")

# After a checkpoint SQLite keeps the WAL file at its largest size unless told otherwise; a burst
# of activity would otherwise leave tens of MB behind for good.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# Enough for every named query, so statements are compiled once per connection.
STATEMENT_CACHE_SIZE = 256

# SQLite primary result codes.
_SQLITE_BUSY = 5
_SQLITE_FULL = 13


# RETURNING (3.35) and the built-in JSON functions (3.38) are used by the queries.
MIN_SQLITE_VERSION = (3, 38, 0)


def check_sqlite_version() -> None:
    """Refuse to run on a SQLite library older than the queries need."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise JournalError("the SQLite library is too old for the journal",
                           sqlite_version=sqlite3.sqlite_version,
                           required=".".join(map(str, MIN_SQLITE_VERSION)))


def check_synchronous(value: str) -> Synchronous:
    """Validate a ``synchronous`` setting (FULL waits for fsync on every commit; NORMAL does not)."""
    mode = value.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ConfigurationError("journal synchronous must be FULL or NORMAL",
                                 field="synchronous", value=value)
    return mode  # type: ignore[return-value]


def create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives -wal/-shm the same mode).

    The journal holds pipeline inputs and outputs, which may be secrets.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SqliteThread:
    """A plain ``sqlite3.Connection`` with one thread of its own; ``run`` ships work there.

    Calls run one at a time, in the order they were made. ``connection`` is the connection
    itself, for an owner that runs work on the loop's thread between calls (never during one).
    """

    def __init__(self, name: str) -> None:
        self._queue: SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, path: Path, *, name: str) -> SqliteThread:
        """Connect to ``path`` in autocommit mode (the journal issues BEGIN/COMMIT itself)."""
        self = cls(name)
        # check_same_thread=False: the writer commits small groups on the loop's thread and the
        # rest on this thread, never both at once (flowmasond.journal.writer).
        connect = partial(sqlite3.connect, path, isolation_level=None, check_same_thread=False,
                          cached_statements=STATEMENT_CACHE_SIZE)
        try:
            self._conn = await self._submit(connect)
        except BaseException:
            self._stop()
            raise
        return self

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection itself (for work on the loop's thread while no call is running)."""
        if self._conn is None or self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the connection's thread and return its result."""
        return await self._submit(partial(fn, self.connection, *args))

    async def close(self) -> None:
        """Close the connection on its thread, then let the thread end (idempotent)."""
        if self._closed:
            return
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await self._submit(conn.close)
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._queue.put(None)

    async def _submit(self, call: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((call, future))
        return await future

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            call, future = item
            loop = future.get_loop()
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting task
                _deliver(loop, future.set_exception, future, exc)
            else:
                _deliver(loop, future.set_result, future, result)


def _deliver(loop: asyncio.AbstractEventLoop, setter: Callable[[Any], None],
             future: asyncio.Future[Any], value: Any) -> None:
    def settle() -> None:
        if not future.done():  # the caller may have been cancelled meanwhile
            setter(value)
    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


async def open_reader(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
    """The reader: an aiosqlite connection with rows by column name that can never write."""
    conn = await aiosqlite.connect(path, isolation_level=None,
                                   cached_statements=STATEMENT_CACHE_SIZE)
    try:
        conn.row_factory = sqlite3.Row
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute_fetchall("PRAGMA query_only = ON")
    except BaseException:
        await conn.close()
        raise
    return conn


def configure_writer(conn: sqlite3.Connection, synchronous: Synchronous,
                     busy_timeout_ms: int) -> None:
    """Settings of the one writer connection (runs on its thread)."""
    # auto_vacuum only takes effect on a file with no tables yet, i.e. when the journal is new;
    # INCREMENTAL lets prune() hand freed pages back to the file system.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise JournalError("could not switch the journal to WAL mode", journal_mode=mode)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")


def set_busy_timeout(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """How long statements on ``conn`` wait for another connection's lock (0: not at all)."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_BUSY


def is_storage_fault(exc: BaseException) -> bool:
    """True for SQLite errors that concern the whole transaction (full, I/O, busy, corrupt...).

    Constraint and programming errors concern one request only.
    """
    return isinstance(exc, sqlite3.Error) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError,
              sqlite3.DataError))


def storage_error(exc: BaseException, *, path: Path | str, operation: str) -> JournalError:
    """Translate a SQLite error into the daemon's hierarchy, naming the file and the operation."""
    if isinstance(exc, JournalError):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None)
    error: JournalError
    if code is not None and code & 0xFF == _SQLITE_FULL:
        error = StorageFullError(path=str(path), operation=operation, sqlite_error=name)
    else:
        error = JournalError(f"journal {operation} failed: {exc}", path=str(path),
                             sqlite_error=name)
    error.__cause__ = exc
    return error
