"""The single writer: group commit, durable and riding-along writes, per-request failures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

import pytest
from journal_helpers import make_pipeline, make_result

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import Record
from flowmasond.errors import JournalError, RunNotFoundError
from flowmasond.journal import Journal

Opener = Callable[..., Awaitable[Journal]]


async def test_concurrent_commits_share_transactions(journal: Journal) -> None:
    """20 commits from 20 tasks at once take far fewer than 20 transactions, and all land."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    before = journal.stats()

    await asyncio.gather(*(store.commit([Record.of_result(f"s{i}", make_result(f"s{i}"))])
                           for i in range(20)))

    after = journal.stats()
    assert after.requests - before.requests == 20
    assert after.transactions - before.transactions < 20
    assert sorted((await journal.load_snapshot("r")).results) == sorted(f"s{i}" for i in range(20))


async def test_commits_arriving_during_a_commit_form_the_next_group(open_journal: Opener) -> None:
    """Requests queued while a transaction commits are committed together in the next one."""
    # Only a transaction on the writer thread lets the loop queue requests while it commits.
    journal = await open_journal(inline_commits=False)
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    first = asyncio.create_task(store.commit([Record.of_result("first", make_result("first"))]))
    while not journal.writer.committing:
        await asyncio.sleep(0)
    before = journal.stats()
    waiting = [asyncio.create_task(store.commit([Record.of_result(f"w{i}", make_result())]))
               for i in range(5)]
    await asyncio.gather(first, *waiting)

    after = journal.stats()
    assert after.transactions - before.transactions == 2  # the running one, then one for all 5
    assert after.largest_group >= 5


async def test_non_durable_start_waits_for_the_next_commit(journal: Journal) -> None:
    """mark_started(durable=False) starts no transaction; it commits with the next record."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    before = journal.stats()

    await store.mark_started("a", 1, durable=False)
    assert journal.writer.pending == 1
    assert journal.stats().transactions == before.transactions

    await store.commit([Record.of_result("b", make_result("b"))])
    after = journal.stats()
    assert after.transactions - before.transactions == 1
    assert after.deferred_requests - before.deferred_requests == 1
    assert (await journal.load_snapshot("r")).attempts == {"a": 1}


async def test_non_durable_start_is_flushed_when_nothing_else_commits(journal: Journal) -> None:
    """A lone riding-along write is committed after the flush delay without any durable write."""
    await journal.create_run("r", make_pipeline(), {})
    signal = journal.writer.commit_signal()

    await journal.run_store("r").mark_started("a", 1, durable=False)
    await asyncio.wait_for(signal.wait(), timeout=5)

    assert (await journal.load_snapshot("r")).attempts == {"a": 1}


async def test_durable_start_is_committed_when_it_returns(journal: Journal) -> None:
    """mark_started(durable=True) returns only after its own transaction committed."""
    await journal.create_run("r", make_pipeline(), {})
    before = journal.stats()

    await journal.run_store("r").mark_started("unsafe", 1, durable=True)

    assert journal.stats().transactions - before.transactions == 1
    assert journal.writer.pending == 0
    assert (await journal.load_snapshot("r")).attempts == {"unsafe": 1}


async def test_a_failing_request_fails_alone_in_its_group(journal: Journal) -> None:
    """A commit for an unknown run raises RunNotFoundError; the commit sharing its group lands."""
    await journal.create_run("r", make_pipeline(), {})
    before = journal.stats()

    bad, good = await asyncio.gather(
        journal.run_store("ghost").commit([Record.of_result("a", make_result("a"))]),
        journal.run_store("r").commit([Record.of_result("a", make_result("a"))]),
        return_exceptions=True)

    assert isinstance(bad, RunNotFoundError) and bad.context == {"run_id": "ghost"}
    assert good is None
    assert journal.stats().transactions - before.transactions == 1
    assert list((await journal.load_snapshot("r")).results) == ["a"]


async def test_unserialisable_output_fails_only_its_caller(journal: Journal) -> None:
    """A result whose output is not JSON raises JournalError naming the path; nothing is written."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")

    with pytest.raises(JournalError) as caught:
        await store.commit([Record.of_result("ok", make_result("ok")),
                            Record.of_result("bad", make_result("bad", output={1, 2}))])

    assert caught.value.context["path"] == "bad"
    assert (await journal.load_snapshot("r")).results == {}
    await store.commit([Record.of_result("ok", make_result("ok"))])


async def test_events_are_written_with_the_records(journal: Journal) -> None:
    """Attempt starts, results and decisions each add their event, in commit order."""
    await journal.create_run("r", make_pipeline(), {})
    store = journal.run_store("r")
    await store.mark_started("a", 1, durable=False)
    await store.mark_started("b", 2, durable=False)
    await store.commit([Record.of_result("a", make_result("a")),
                        Record.of_state("cond", ControlFlowState.branch_taken("conditional", branch=True, selected=[], skipped=[]))])

    events = [(e.kind, e.path) for e in await journal.events("r")]

    assert events == [("run.created", None), ("stage.started", "a"), ("stage.retry", "b"),
                      ("stage.completed", "a"), ("stage.decision", "cond")]
    completed = (await journal.events("r"))[3]
    assert completed.data is not None and completed.data["status"] == "success"
    assert "output" not in completed.data


async def test_close_commits_riding_along_writes(db_path: Path) -> None:
    """Closing the journal commits deferred writes instead of dropping them."""
    journal = await Journal.open(db_path, flush_delay_s=60)
    await journal.create_run("r", make_pipeline(), {})
    await journal.run_store("r").mark_started("a", 1, durable=False)
    await journal.close()

    reopened = await Journal.open(db_path)
    try:
        assert (await reopened.load_snapshot("r")).attempts == {"a": 1}
    finally:
        await reopened.close()


async def test_writes_after_close_are_refused(db_path: Path) -> None:
    """A closed journal raises JournalError instead of accepting a write it cannot commit."""
    journal = await Journal.open(db_path)
    await journal.create_run("r", make_pipeline(), {})
    await journal.close()

    with pytest.raises(JournalError):
        await journal.run_store("r").commit([Record.of_result("a", make_result("a"))])
    with pytest.raises(JournalError):
        await journal.get_run("r")


async def test_close_truncates_the_wal(db_path: Path) -> None:
    """After close the WAL has been checkpointed into the database file."""
    journal = await Journal.open(db_path)
    await journal.create_run("r", make_pipeline(), {})
    await journal.close()

    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
