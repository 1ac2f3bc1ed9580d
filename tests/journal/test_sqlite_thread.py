"""``SqliteThread``: the writer's connection runs its work on one thread of its own, and the journal
uses no private aiosqlite API."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

import flowmasond.journal
from flowmasond.journal.connections import SqliteThread


def _thread_and_value(conn: sqlite3.Connection, value: int) -> tuple[int, int]:
    return threading.get_ident(), conn.execute("SELECT ?", (value,)).fetchone()[0]


async def test_work_runs_in_call_order_on_one_thread_that_is_not_the_loops(tmp_path: Path) -> None:
    """Every call runs on the same dedicated thread, never the event loop's, in call order."""
    db = await SqliteThread.open(tmp_path / "t.sqlite3", name="test-thread")
    order: list[int] = []

    def note(conn: sqlite3.Connection, value: int) -> tuple[int, int]:
        order.append(value)
        return _thread_and_value(conn, value)

    try:
        results = await asyncio.gather(*(db.run(note, i) for i in range(20)))
    finally:
        await db.close()
    assert [value for _, value in results] == list(range(20))
    assert order == list(range(20))
    threads = {ident for ident, _ in results}
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


def _insert_then_count(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("BEGIN IMMEDIATE")
    for i in range(n):
        conn.execute("INSERT INTO t (v) VALUES (?)", (i,))
    conn.execute("COMMIT")
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_a_multi_statement_function_commits_for_another_connection(tmp_path: Path) -> None:
    """A transaction shipped as one function commits to the file another connection reads."""
    path = tmp_path / "t.sqlite3"
    db = await SqliteThread.open(path, name="test-thread")
    try:
        await db.run(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
        assert await db.run(_insert_then_count, 50) == 50
    finally:
        await db.close()
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT count(*), sum(v) FROM t").fetchone() == (50, sum(range(50)))
    finally:
        other.close()


async def test_errors_reach_the_caller_and_the_thread_stays_usable(tmp_path: Path) -> None:
    """A failing statement raises in the awaiting task; the next call still works."""
    db = await SqliteThread.open(tmp_path / "t.sqlite3", name="test-thread")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.run(lambda conn: conn.execute("SELECT * FROM missing"))
        assert (await db.run(_thread_and_value, 7))[1] == 7
    finally:
        await db.close()


async def test_a_cancelled_caller_does_not_stop_the_thread(tmp_path: Path) -> None:
    """Cancelling a caller while its work runs leaves the thread serving the next call."""
    db = await SqliteThread.open(tmp_path / "t.sqlite3", name="test-thread")
    started, release = threading.Event(), threading.Event()

    def blocking(conn: sqlite3.Connection) -> int:
        started.set()
        release.wait(10)
        return 1

    try:
        task = asyncio.ensure_future(db.run(blocking))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert (await db.run(_thread_and_value, 3))[1] == 3
    finally:
        release.set()
        await db.close()


async def test_a_closed_connection_refuses_work(tmp_path: Path) -> None:
    """After close, run raises instead of queueing work that would never run."""
    db = await SqliteThread.open(tmp_path / "t.sqlite3", name="test-thread")
    await db.close()
    await db.close()  # idempotent
    with pytest.raises(sqlite3.ProgrammingError):
        await db.run(_thread_and_value, 1)
    with pytest.raises(sqlite3.ProgrammingError):
        db.connection  # noqa: B018 - the property is what is tested


def _private_attributes(source: str) -> list[str]:
    """``x._name`` attribute reads in ``source`` whose object is not ``self`` or ``cls``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(node.attr)
    return found


def test_the_journal_reaches_into_no_private_attribute_of_other_objects() -> None:
    """No module of the journal reads another object's private attribute (aiosqlite's ``_conn`` or
    ``_execute`` were such; a minor aiosqlite release could break them)."""
    package = Path(flowmasond.journal.__file__).parent
    offenders = {path.name: attrs for path in sorted(package.glob("*.py"))
                 if (attrs := _private_attributes(path.read_text(encoding="utf-8")))}
    assert offenders == {}
