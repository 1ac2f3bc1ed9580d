"""Storage faults: disk full, I/O errors and lock timeouts never corrupt or lose committed data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sqlite3
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import pytest
from journal_helpers import integrity, make_pipeline, make_result

from flowmasond.engine.interfaces import Record
from flowmasond.errors import JournalError, StorageFullError
from flowmasond.journal import Journal

Opener = Callable[..., Awaitable[Journal]]
BIG = "x" * 64_000  # larger than any free space left in the file: forces new pages


def _counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        records = conn.execute("SELECT count(*) FROM run_records").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM run_events").fetchone()[0]
        return records, events
    finally:
        conn.close()


async def _fill_to_the_limit(journal: Journal) -> None:
    """Cap the file at its current size (SQLite raises the cap to the page count if lower)."""
    await journal.set_max_size(0)


async def test_disk_full_fails_the_commit_and_keeps_earlier_ones(journal: Journal) -> None:
    """SQLITE_FULL raises StorageFullError; the file is sound and earlier commits are intact."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await store.commit([Record.of_result("early", make_result("early"))])
    before = _counts(journal.path)
    await _fill_to_the_limit(journal)

    with pytest.raises(StorageFullError) as caught:
        await store.commit([Record.of_result("big", make_result("big", output=BIG))])

    assert caught.value.code == "storage_full"
    assert caught.value.context["path"] == str(journal.path)
    assert _counts(journal.path) == before  # neither the record nor its event
    assert integrity(journal.path) == "ok"
    assert list((await journal.load_snapshot("r")).results) == ["early"]


async def test_commits_succeed_again_once_space_is_back(journal: Journal) -> None:
    """After a disk-full failure the writer keeps serving; lifting the cap lets commits land."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await _fill_to_the_limit(journal)
    with pytest.raises(StorageFullError):
        await store.commit([Record.of_result("big", make_result("big", output=BIG))])

    await journal.set_max_size(None)
    await store.commit([Record.of_result("big", make_result("big", output=BIG))])

    assert (await journal.load_snapshot("r")).results["big"].output == BIG
    assert integrity(journal.path) == "ok"


async def test_every_waiting_committer_gets_the_storage_error(journal: Journal) -> None:
    """All commits queued while the disk is full fail with StorageFullError; none hangs."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await _fill_to_the_limit(journal)

    outcomes = await asyncio.wait_for(asyncio.gather(
        *(store.commit([Record.of_result(f"s{i}", make_result(output=BIG))]) for i in range(5)),
        return_exceptions=True), timeout=30)

    assert all(isinstance(o, StorageFullError) for o in outcomes)
    assert journal.stats().failed_transactions >= 1


async def test_run_creation_when_full_leaves_nothing_behind(journal: Journal) -> None:
    """Run creation fails as a whole when full: no run row, no pin, no event is left behind."""
    await journal.create_run("r", make_pipeline(), {})
    before = _counts(journal.path)
    await _fill_to_the_limit(journal)
    other = make_pipeline("other", stages=40)

    with pytest.raises(StorageFullError):
        await journal.create_run("big", other, {"blob": BIG})

    await journal.set_max_size(None)
    assert [r.run_id for r in await journal.list_runs()] == ["r"]
    assert await journal.pinned_pipeline(other.content_hash()) is None
    assert _counts(journal.path) == before


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Make writes past ``limit`` bytes fail with EFBIG (a real I/O error from the kernel)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


async def test_io_error_during_commit_is_a_journal_error(db_path: Path) -> None:
    """A write failing in the kernel raises JournalError; later commits land and nothing is lost."""
    journal = await Journal.open(db_path)
    try:
        await journal.create_run("r", make_pipeline(), {})
        store = journal.run_store("r")
        await store.commit([Record.of_result("early", make_result("early"))])
        wal = db_path.with_name(db_path.name + "-wal")

        with _file_size_limit(os.path.getsize(wal)):
            with pytest.raises(JournalError) as caught:
                await store.commit([Record.of_result("big", make_result("big", output=BIG))])

        assert not isinstance(caught.value, StorageFullError)
        assert "IOERR" in str(caught.value.context.get("sqlite_error"))
        await store.commit([Record.of_result("after", make_result("after"))])
    finally:
        await journal.close()

    assert integrity(db_path) == "ok"
    reopened = await Journal.open(db_path)
    try:
        assert sorted((await reopened.load_snapshot("r")).results) == ["after", "early"]
    finally:
        await reopened.close()


async def test_lock_held_past_busy_timeout_fails_then_recovers(open_journal: Opener,
                                                               db_path: Path) -> None:
    """A write lock held elsewhere past busy_timeout fails the commit; the writer survives."""
    journal = await open_journal(busy_timeout_ms=50)
    await journal.create_run("r", make_pipeline(), {})
    intruder = sqlite3.connect(db_path, isolation_level=None)
    try:
        intruder.execute("BEGIN IMMEDIATE")
        with pytest.raises(JournalError) as caught:
            await journal.run_store("r").commit([Record.of_result("a", make_result("a"))])
        intruder.execute("ROLLBACK")
    finally:
        intruder.close()

    assert "BUSY" in str(caught.value.context.get("sqlite_error"))
    await journal.run_store("r").commit([Record.of_result("a", make_result("a"))])
    assert list((await journal.load_snapshot("r")).results) == ["a"]


async def test_reader_sees_committed_data_while_the_writer_is_busy(open_journal: Opener,
                                                                   db_path: Path) -> None:
    """Queries answer from committed state while a commit is blocked waiting for the write lock."""
    journal = await open_journal(busy_timeout_ms=30_000)
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await store.commit([Record.of_result("a", make_result("a"))])
    intruder = sqlite3.connect(db_path, isolation_level=None)
    try:
        intruder.execute("BEGIN IMMEDIATE")
        blocked = asyncio.create_task(store.commit([Record.of_result("b", make_result("b"))]))
        while not journal.writer.committing:
            await asyncio.sleep(0.001)

        snapshot = await journal.load_snapshot("r")
        run = await journal.get_run("r")

        assert not blocked.done()
        assert list(snapshot.results) == ["a"] and run.run_id == "r"
    finally:
        intruder.execute("ROLLBACK")
        intruder.close()
    await asyncio.wait_for(blocked, timeout=30)
    assert sorted((await journal.load_snapshot("r")).results) == ["a", "b"]
