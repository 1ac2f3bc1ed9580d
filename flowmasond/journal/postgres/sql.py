"""The PostgreSQL journal's SQL: ``state/postgresql/queries/*.sql`` and ``state/postgresql/migrations``.

Same layout as the SQLite journal's (``-- name:`` blocks, ``NNNN_name.sql`` migrations), shipped in
``flowmasond.state``. Migrations apply in one transaction under a transaction-level advisory lock,
so several daemons starting on one database migrate it once; a database migrated by a newer
flowmasond is refused before anything is written to it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cache
from importlib.abc import Traversable
from typing import Any

from flowmasond.errors import JournalError, SchemaTooNewError
from flowmasond.journal.sqlfiles import Queries, parse_query_blocks, state_dir

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Advisory lock keys (64-bit, in the database's own key space): arbitrary, fixed, documented.
MIGRATION_LOCK_KEY = 0x666C6F776D6E01  # "flowmn" 01
OWNER_LOCK_KEY = 0x666C6F02  # "flo" 02: with hashtext(current_schema()), one lock per journal schema


def pg_dir() -> Traversable:
    """``state/postgresql`` (shipped as ``flowmasond.state``'s ``postgresql`` folder)."""
    return state_dir() / "postgresql"


@cache
def pg_queries() -> Queries:
    """Every named query of ``state/postgresql/queries/*.sql`` (names unique across files)."""
    statements: dict[str, str] = {}
    for entry in sorted((pg_dir() / "queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse_query_blocks(entry.read_text(encoding="utf-8"), source=entry.name).items():
            if name in statements:
                raise JournalError("query block name is used twice", file=entry.name, query=name)
            statements[name] = sql
    return Queries(statements)


@dataclass(frozen=True, slots=True)
class PgMigration:
    """One numbered schema change, applied as one multi-statement script."""

    version: int
    name: str
    sql: str


@cache
def pg_migrations() -> tuple[PgMigration, ...]:
    """Every packaged PostgreSQL migration, ordered; versions run 1, 2, 3... without gaps."""
    found = []
    for entry in (pg_dir() / "migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(PgMigration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise JournalError("PostgreSQL migrations must be numbered 1, 2, 3... without gaps",
                               migration=f"{migration.version:04d}_{migration.name}")
    return tuple(found)


async def migrate(conn: Any, *, now: float | None = None) -> list[str]:
    """Apply every pending migration in one transaction on ``conn`` (autocommit); returns their names.

    Raises ``SchemaTooNewError`` when the database holds a version this code does not know.
    """
    q = pg_queries()
    migrations = pg_migrations()
    now = time.time() if now is None else now
    async with conn.transaction():
        cur = conn.cursor()
        await cur.execute(q.migration_lock, {"key": MIGRATION_LOCK_KEY})
        await cur.execute(q.migrations_table_exists)
        row = await cur.fetchone()
        applied: set[int] = set()
        if row is not None and row[0]:
            await cur.execute(q.applied_migrations)
            applied = {int(r[0]) for r in await cur.fetchall()}
        newest = max(applied, default=0)
        if newest > len(migrations):
            raise SchemaTooNewError("the PostgreSQL journal was migrated by a newer flowmasond; "
                                    "it is left untouched", schema_version=newest,
                                    supported_version=len(migrations))
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            # No parameters: psycopg sends the file as one simple query, statements in order.
            await cur.execute(migration.sql.encode())
            await cur.execute(q.record_migration, {"version": migration.version, "name": migration.name,
                                                   "now": now})
            done.append(f"{migration.version:04d}_{migration.name}")
    return done
