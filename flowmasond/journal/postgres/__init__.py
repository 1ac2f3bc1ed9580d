"""The PostgreSQL journal (``[journal] backend = "postgresql"``): the SQLite journal's surface on a server.

psycopg is imported only when a ``PgJournal`` is opened, so SQLite users never need it.
"""

from __future__ import annotations

from flowmasond.journal.postgres.fence import NoFence, RunFence
from flowmasond.journal.postgres.journal import PgJournal

__all__ = ["NoFence", "PgJournal", "RunFence"]
