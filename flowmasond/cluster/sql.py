"""The cluster's named queries: ``state/postgresql/queries/cluster.sql`` (Python holds no SQL)."""

from __future__ import annotations

from functools import cache
from typing import Any

from flowmasond.journal.sqlfiles import Queries, parse_query_blocks, state_dir

QUERY_FILE = "cluster.sql"


@cache
def cluster_queries() -> Queries:
    """The blocks of ``state/postgresql/queries/cluster.sql``."""
    entry = state_dir() / "postgresql" / "queries" / QUERY_FILE
    return Queries(parse_query_blocks(entry.read_text(encoding="utf-8"), source=QUERY_FILE))


def column(row: Any, index: int, name: str) -> Any:
    """A column of ``row`` whichever row factory made it (tuple rows or dict rows)."""
    return row[name] if isinstance(row, dict) else row[index]
