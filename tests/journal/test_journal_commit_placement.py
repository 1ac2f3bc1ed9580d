"""Where a group transaction runs: inline on the loop's thread, or on the writer thread.

Small groups on a fast disk commit inline; anything that could hold the loop (a large group, a
locked database, slow or failing storage, checkpoints) runs on the writer thread instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from journal_helpers import make_pipeline, make_result

from flowmasond.engine.interfaces import Record
from flowmasond.errors import StorageFullError
from flowmasond.journal import Journal
from flowmasond.journal.writer import (BACKGROUND_CHECKPOINT_EVERY, CHECKPOINT_EVERY, INLINE_MAX_REQUESTS,
                                       NORMAL_CHECKPOINT_EVERY)

# The writer's own checkpoint period per synchronous mode.
WRITER_PERIOD = {"FULL": CHECKPOINT_EVERY, "NORMAL": NORMAL_CHECKPOINT_EVERY}

Opener = Callable[..., Awaitable[Journal]]


def _thread_of(conn: sqlite3.Connection) -> int:
    conn.execute("SELECT 1").fetchall()
    return threading.get_ident()


async def test_a_lone_commit_runs_on_the_event_loop_thread(open_journal: Opener) -> None:
    """One durable write on a fast disk is committed inline, without a hop to another thread."""
    journal = await open_journal()
    before = journal.stats()

    ran_on = await journal.writer.write(_thread_of)

    assert ran_on == threading.get_ident()
    after = journal.stats()
    assert after.transactions - before.transactions == 1
    assert after.inline_transactions - before.inline_transactions == 1


async def test_inline_commits_can_be_turned_off(open_journal: Opener) -> None:
    """With inline_commits=False every transaction runs on the writer thread."""
    journal = await open_journal(inline_commits=False)

    ran_on = await journal.writer.write(_thread_of)

    assert ran_on != threading.get_ident()
    assert journal.stats().inline_transactions == 0


async def test_a_large_group_commits_on_the_writer_thread(open_journal: Opener) -> None:
    """A group of more than INLINE_MAX_REQUESTS requests leaves the loop free while it commits."""
    journal = await open_journal()
    before = journal.stats()

    threads = await asyncio.gather(*(journal.writer.write(_thread_of)
                                     for _ in range(INLINE_MAX_REQUESTS + 1)))

    assert set(threads) != {threading.get_ident()} and len(set(threads)) == 1
    after = journal.stats()
    assert after.transactions - before.transactions == 1
    assert after.inline_transactions == before.inline_transactions


async def test_a_locked_database_is_waited_for_off_the_loop(open_journal: Opener,
                                                           db_path: Path) -> None:
    """While another connection holds the write lock, the commit waits on the writer thread and
    the loop keeps running; the commit lands once the lock is released."""
    journal = await open_journal(busy_timeout_ms=30_000)
    await journal.create_run("r", make_pipeline(), {})
    intruder = sqlite3.connect(db_path, isolation_level=None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    try:
        intruder.execute("BEGIN IMMEDIATE")
        commit = asyncio.create_task(
            journal.run_store("r").commit([Record.of_result("a", make_result("a"))]))
        await asyncio.sleep(0.3)
        assert not commit.done() and journal.writer.committing
        assert ticks >= 10  # the loop was never held by the waiting commit
    finally:
        intruder.execute("ROLLBACK")
        intruder.close()
        ticking.cancel()
    await asyncio.wait_for(commit, timeout=30)
    assert list((await journal.load_snapshot("r")).results) == ["a"]


async def test_slow_commits_move_to_the_writer_thread(open_journal: Opener) -> None:
    """After an inline transaction that held the loop too long, the next ones run on the thread."""
    journal = await open_journal()

    def stall(conn: sqlite3.Connection) -> int:
        time.sleep(0.15)  # a transaction as slow as a stalled disk
        return threading.get_ident()

    first = await journal.writer.write(stall)
    second = await journal.writer.write(_thread_of)

    assert first == threading.get_ident()
    assert second != threading.get_ident()


async def test_a_storage_fault_moves_commits_to_the_writer_thread(open_journal: Opener) -> None:
    """A disk-full failure inline sends the following commits to the thread; they succeed once
    space is back."""
    journal = await open_journal()
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await journal.set_max_size(0)
    with pytest.raises(StorageFullError):
        await store.commit([Record.of_result("big", make_result("big", output="x" * 64_000))])
    await journal.set_max_size(None)
    inline_before = journal.stats().inline_transactions

    ran_on = await journal.writer.write(_thread_of)
    await store.commit([Record.of_result("after", make_result("after"))])

    assert ran_on != threading.get_ident()
    assert journal.stats().inline_transactions == inline_before
    assert list((await journal.load_snapshot("r")).results) == ["after"]


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_the_writer_checkpoints_the_wal_as_it_goes(open_journal: Opener, db_path: Path,
                                                         synchronous: str) -> None:
    """Every CHECKPOINT_EVERY transactions (NORMAL_CHECKPOINT_EVERY at NORMAL) the writer copies
    the WAL into the database file between groups."""
    journal = await open_journal(synchronous=synchronous)
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    size_before = db_path.stat().st_size

    for i in range(WRITER_PERIOD[synchronous] + 1):
        await store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))])

    assert journal.stats().checkpoints >= 1
    assert db_path.stat().st_size > size_before  # the pages reached the main file


async def test_checkpoints_run_beside_the_commits_between_the_writers_own(open_journal: Opener,
                                                                       db_path: Path) -> None:
    """At NORMAL, every BACKGROUND_CHECKPOINT_EVERY transactions the WAL is copied into the database
    file by a checkpoint on a connection of its own, before the writer has checkpointed."""
    journal = await open_journal(synchronous="NORMAL")
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    size_before = db_path.stat().st_size

    for i in range(BACKGROUND_CHECKPOINT_EVERY + 1):
        await store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))])
    await journal.writer.checkpoint_settled()

    stats = journal.stats()
    assert stats.background_checkpoints >= 1 and stats.checkpoints == 0
    assert db_path.stat().st_size > size_before  # the pages reached the main file


async def test_no_checkpoint_runs_beside_full_commits(open_journal: Opener) -> None:
    """At FULL the writer alone checkpoints: one beside the commits slowed their fsyncs."""
    journal = await open_journal(synchronous="FULL")
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")

    for i in range(CHECKPOINT_EVERY + 1):
        await store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))])
    await journal.writer.checkpoint_settled()

    stats = journal.stats()
    assert stats.background_checkpoints == 0 and stats.checkpoints >= 1


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_the_wal_stays_bounded_under_a_steady_stream_of_commits(open_journal: Opener,
                                                                     db_path: Path,
                                                                     synchronous: str) -> None:
    """Checkpoints let the WAL restart: after eight checkpoint periods of back-to-back commits the
    WAL file is hardly larger than after two (a checkpoint run beside the commits never finds the
    WAL fully copied, and the file grew with every commit: 4x here). Not exactly as large: a period
    of a larger B-tree splits a few more pages (measured: 1% more frames)."""
    journal = await open_journal(synchronous=synchronous)
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    wal = Path(f"{db_path}-wal")
    period = WRITER_PERIOD[synchronous]

    for i in range(2 * period + 1):
        await store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))])
    after_two = wal.stat().st_size
    for i in range(2 * period + 1, 8 * period + 1):
        await store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))])

    assert journal.stats().checkpoints >= 8
    assert wal.stat().st_size <= 1.1 * after_two


async def test_maintenance_calls_among_commits_all_succeed(open_journal: Opener) -> None:
    """Calls (pings, a checkpoint) issued among many commits share the writer connection with
    them: every call answers and every commit lands."""
    journal = await open_journal()
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")

    outcomes = await asyncio.gather(
        *(store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))]) for i in range(30)),
        *(journal.ping() for _ in range(5)), journal.checkpoint())

    assert outcomes[30:35] == [True] * 5
    assert len((await journal.load_snapshot("r")).results) == 30
