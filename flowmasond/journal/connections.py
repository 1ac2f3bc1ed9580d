"""SQLite connections of the journal: settings, running work on a connection's thread, errors.

Each aiosqlite connection owns one thread. A transaction is shipped to that thread as a single
function so that it costs one hop between the event loop and the thread, however many statements
it holds (aiosqlite's per-statement calls would cost one hop each).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
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


async def connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection in autocommit mode: the journal issues BEGIN/COMMIT itself."""
    # check_same_thread=False: the writer commits small groups on the loop's thread and the rest
    # on aiosqlite's thread, never both at once (flowmasond.journal.writer).
    return await aiosqlite.connect(path, isolation_level=None, check_same_thread=False,
                                   cached_statements=STATEMENT_CACHE_SIZE)


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


def configure_reader(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Settings of a reader connection: rows by column name, and it can never write."""
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only = ON")


async def in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` on the connection's own thread and return its result.

    Uses aiosqlite's ``_execute``, the primitive every public aiosqlite method is built on; it is
    the only way to run several statements in one hop.
    """
    def call() -> T:
        return fn(conn._conn, *args)  # noqa: SLF001 - see docstring

    return await conn._execute(call)  # noqa: SLF001


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
