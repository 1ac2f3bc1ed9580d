"""Why the journal's writer is not an aiosqlite connection: one transaction, four ways.

``python bench/bench_hops.py`` (``--quick``: fewer transactions). Each way commits the same
transaction (BEGIN IMMEDIATE, one small INSERT, COMMIT) on a WAL file at ``synchronous=NORMAL``
(so that the disk does not hide the difference), ``--count`` times in a row, in rounds that
alternate the ways; the median of the rounds' µs per transaction is printed:

- inline: the plain ``sqlite3`` connection on the event loop's thread (the writer's small groups);
- SqliteThread: the whole transaction shipped as one function to the connection's own thread
  (the writer's large groups and slow-disk mode);
- aiosqlite, public API: ``execute`` three times (one hop each), what aiosqlite's public API
  offers for a transaction;
- aiosqlite in one hop: the same function through aiosqlite's *private* ``_execute``/``_conn``,
  what the journal used to do (printed for comparison only).
Exits 0: benchmarks report.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

import aiosqlite  # noqa: E402

from flowmasond.journal.connections import SqliteThread  # noqa: E402

_SETUP = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL",
          "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data TEXT)")


def _transaction(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (data) VALUES ('x')")
    conn.execute("COMMIT")


async def main_async(count: int, rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="fm-bench-hops-") as tmp:
        directory = Path(tmp)
        inline = sqlite3.connect(directory / "inline.db", isolation_level=None)
        thread = await SqliteThread.open(directory / "thread.db", name="bench-thread")
        public = await aiosqlite.connect(directory / "public.db", isolation_level=None)
        private = await aiosqlite.connect(directory / "private.db", isolation_level=None)
        try:
            for statement in _SETUP:
                inline.execute(statement)
                await thread.run(lambda conn, s=statement: conn.execute(s))
                await public.execute(statement)
                await private.execute(statement)

            async def way_inline() -> None:
                _transaction(inline)

            async def way_thread() -> None:
                await thread.run(_transaction)

            async def way_public() -> None:
                await public.execute("BEGIN IMMEDIATE")
                await public.execute("INSERT INTO t (data) VALUES ('x')")
                await public.execute("COMMIT")

            async def way_private() -> None:
                await private._execute(_transaction, private._conn)  # noqa: SLF001 - the old way, for comparison

            ways: dict[str, Any] = {"inline (loop thread)": way_inline,
                                    "SqliteThread, one hop": way_thread,
                                    "aiosqlite public API, 3 hops": way_public,
                                    "aiosqlite private _execute, one hop": way_private}
            figures: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(rounds):
                for name, way in ways.items():
                    t0 = time.perf_counter()
                    for _ in range(count):
                        await way()
                    figures[name].append((time.perf_counter() - t0) / count * 1e6)
        finally:
            inline.close()
            await thread.close()
            await public.close()
            await private.close()
    print(f"one INSERT + COMMIT at synchronous=NORMAL, {count} in a row, median of {rounds} rounds:")
    for name, samples in figures.items():
        print(f"  {name:36s} {statistics.median(samples):7.1f} µs/transaction "
              f"(min {min(samples):.1f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    count, rounds = (50, 1) if args.quick else (2000, 5)
    return asyncio.run(main_async(count, rounds))


if __name__ == "__main__":
    sys.exit(main())
