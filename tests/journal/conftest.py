"""Fixtures for the journal tests: real SQLite files under tmp_path, closed after each test."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
from journal_helpers import FakeClock

from flowmasond.journal import Journal


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[True, False], ids=["inline", "threaded"])
async def journal(db_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Journal]:
    """A journal whose small groups commit on the loop's thread, or one that always uses the
    writer thread: every behaviour must hold either way."""
    j = await Journal.open(db_path, inline_commits=request.param)
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture
async def open_journal(db_path: Path) -> AsyncIterator[Callable[..., Awaitable[Journal]]]:
    """Opens journals with custom settings; every one is closed at teardown."""
    opened: list[Journal] = []

    async def opener(path: Path = db_path, **kwargs: object) -> Journal:
        j = await Journal.open(path, **kwargs)  # type: ignore[arg-type]
        opened.append(j)
        return j

    try:
        yield opener
    finally:
        for j in opened:
            await j.close()
