"""A failure inside the writer itself never leaves a requester waiting forever."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from flowmasond.errors import JournalError
from flowmasond.journal import Journal


async def test_an_unexpected_writer_error_fails_the_group_and_the_writer_keeps_going(tmp_path: Path) -> None:
    """A bug while resolving a group becomes a JournalError for its requesters; the next write works."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        writer = journal.writer
        original = writer._count

        def broken(group: list, **flags: bool) -> None:  # type: ignore[type-arg]
            writer._count = original  # break exactly one group
            raise RuntimeError("simulated writer bug")

        writer._count = broken  # type: ignore[method-assign]

        def work(conn: sqlite3.Connection) -> int:
            return 1

        with pytest.raises(JournalError, match="simulated writer bug"):
            await asyncio.wait_for(writer.write(work), timeout=5)
        assert await asyncio.wait_for(writer.write(work), timeout=5) == 1
    finally:
        await journal.close()
