"""The schema migrations runner: ordered ``state/migrations/NNNN_name.sql`` files.

The schema version is ``PRAGMA user_version`` (it lives in the database header and changes in the
same transaction as the tables); ``schema_migrations`` keeps a human-readable history. All pending
migrations apply in one ``BEGIN IMMEDIATE`` transaction, so a crash mid-upgrade leaves the old
schema. A database newer than this code is refused before anything is written to it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from collections.abc import Sequence

from flowmasond.errors import JournalError, SchemaTooNewError
from flowmasond.journal.sqlfiles import queries, state_dir

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_USER_VERSION_OFFSET = 60  # big-endian int32 in the 100-byte database header
# A migration file containing this line runs with foreign keys off (a table rebuild; see migrate()).
_FK_OFF = re.compile(r"^-- pragma: foreign_keys=off\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change."""

    version: int
    name: str
    sql: str

    @property
    def needs_foreign_keys_off(self) -> bool:
        """A table rebuild (new CHECK constraint) must not cascade: the file says ``pragma: foreign_keys=off``."""
        return _FK_OFF.search(self.sql) is not None

    def statements(self) -> list[str]:
        """The file's statements in order (``executescript`` would commit, so we split)."""
        out: list[str] = []
        buffer = ""
        for line in self.sql.splitlines(keepends=True):
            buffer += line
            if sqlite3.complete_statement(buffer):
                out.append(buffer.strip())
                buffer = ""
        rest = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
        if rest:
            raise JournalError("migration ends with an incomplete statement",
                               migration=f"{self.version:04d}_{self.name}")
        return out


@cache
def load_migrations() -> tuple[Migration, ...]:
    """Every packaged migration, ordered; versions must run 1, 2, 3... without gaps."""
    found: list[Migration] = []
    for entry in (state_dir() / "migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise JournalError("migrations must be numbered 0001, 0002, ... without gaps",
                               migration=f"{migration.version:04d}_{migration.name}")
    return tuple(found)


def header_schema_version(path: Path) -> int | None:
    """``user_version`` read from the file header without opening it with SQLite.

    None when there is no SQLite database at ``path`` yet. Reading the raw header cannot create
    a ``-wal``/``-shm`` file or checkpoint anything, so a refused database stays byte-for-byte.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return None
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return None
    return int.from_bytes(header[_USER_VERSION_OFFSET:_USER_VERSION_OFFSET + 4], "big", signed=True)


def refuse_if_too_new(path: Path, migrations: Sequence[Migration]) -> None:
    """Raise ``SchemaTooNewError`` if the file at ``path`` was written by a newer schema."""
    version = header_schema_version(path)
    supported = migrations[-1].version if migrations else 0
    if version is not None and version > supported:
        raise SchemaTooNewError(path=str(path), schema_version=version, supported=supported)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *, path: str = "",
            now: float | None = None) -> list[int]:
    """Apply every pending migration in one transaction; returns the versions applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``). The version is checked again
    inside the write transaction: a WAL not yet checkpointed may hold a newer header.
    """
    q = queries()
    supported = migrations[-1].version if migrations else 0
    applied_at = time.time() if now is None else now
    # PRAGMA foreign_keys is a no-op inside a transaction, so it is decided before BEGIN; the
    # state-dir lock means nobody migrates between this read and the transaction.
    before = int(conn.execute(q.schema_version).fetchone()[0])
    keys_off = any(m.needs_foreign_keys_off for m in migrations if m.version > before)
    keys_were_on = bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])
    if keys_off:
        conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = int(conn.execute(q.schema_version).fetchone()[0])
        if current > supported:
            raise SchemaTooNewError(path=path, schema_version=current, supported=supported)
        pending = [m for m in migrations if m.version > current]
        for migration in pending:
            for statement in migration.statements():
                conn.execute(statement)
            conn.execute(q.record_migration, {"version": migration.version,
                                              "name": migration.name, "now": applied_at})
        if keys_off:
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise JournalError("a migration left rows whose foreign keys point nowhere",
                                   path=path, rows=len(broken))
        if pending:
            # PRAGMA takes no bound parameters; the value is an int we produced.
            conn.execute(f"PRAGMA user_version = {int(pending[-1].version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        if keys_off and keys_were_on:
            conn.execute("PRAGMA foreign_keys = ON")
    return [m.version for m in pending]


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database."""
    return int(conn.execute(queries().schema_version).fetchone()[0])
