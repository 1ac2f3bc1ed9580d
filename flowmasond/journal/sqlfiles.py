"""Access to the SQL in the top-level ``state/`` (shipped as ``flowmasond.state``): migrations and named query blocks.

Python holds no SQL: queries live in ``state/queries/*.sql`` as blocks introduced by a
``-- name: <query_name>`` line (procrastinate style), migrations in ``state/migrations/NNNN_*.sql``.
"""

from __future__ import annotations

import re
import sqlite3
from functools import cache
from importlib import resources
from importlib.abc import Traversable

from flowmasond.errors import JournalError

_NAME_LINE = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def state_dir() -> Traversable:
    """The SQL directory: the top-level ``state/``, shipped as package ``flowmasond.state``."""
    return resources.files("flowmasond.state")


class Queries:
    """Named SQL statements; ``QUERIES.insert_run`` is the text of the block named ``insert_run``."""

    def __init__(self, statements: dict[str, str]) -> None:
        self._statements = statements

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no query block named {name!r} in state/queries/*.sql") from None

    def names(self) -> list[str]:
        return sorted(self._statements)


def parse_query_blocks(text: str, *, source: str) -> dict[str, str]:
    """Split one ``.sql`` file into ``{name: statement}``; each block must hold one statement."""
    parts = _NAME_LINE.split(text)
    blocks: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = body.strip()
        if not statement or not sqlite3.complete_statement(statement):
            raise JournalError("query block is not one complete SQL statement",
                               file=source, query=name)
        if name in blocks:
            raise JournalError("query block name is used twice", file=source, query=name)
        blocks[name] = statement
    return blocks


@cache
def queries() -> Queries:
    """Every named query of ``state/queries/*.sql`` (names are unique across files)."""
    statements: dict[str, str] = {}
    folder = state_dir() / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse_query_blocks(entry.read_text(encoding="utf-8"),
                                            source=entry.name).items():
            if name in statements:
                raise JournalError("query block name is used twice", file=entry.name, query=name)
            statements[name] = sql
    return Queries(statements)
