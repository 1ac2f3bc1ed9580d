"""``next_event_id()``: the one sequence of event ids, a SQL function of the writer connection.

Since journal version 7 (migration 0007) a stage's events are its ``run_records`` and
``run_attempts`` rows, and the daemon's own events are ``run_event_log`` rows; all three take
their id from this sequence, so that a follower's cursor orders them all. The sequence lives in
the writer, the journal's only writer (one owner per file): ids grow in commit order because
transactions run one after another on that connection. It starts above every id ever handed out
(``event_id_high_water``: the three tables and the high-water mark that deleting runs leaves in
``sqlite_sequence``). An id taken by a statement that is rolled back, or by an attempt start that
was already recorded, is never used: ids may have gaps, never repeats.
"""

from __future__ import annotations

import sqlite3
from itertools import count

from flowmasond.journal.sqlfiles import queries

FUNCTION_NAME = "next_event_id"


def install_event_ids(conn: sqlite3.Connection) -> int:
    """Register ``next_event_id()`` on ``conn`` (after migrating); returns the first id it hands out."""
    start = int(conn.execute(queries().event_id_high_water).fetchone()[0]) + 1
    # itertools.count's __next__ is a C call: the cheapest per-row cost a Python function can
    # have inside an INSERT (a few hundred ns).
    conn.create_function(FUNCTION_NAME, 0, count(start).__next__)
    return start
