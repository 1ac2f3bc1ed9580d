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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules with ``ALSO_ON_POSTGRESQL = True`` run their ``journal`` tests on PgJournal too
    (except the tests named in their ``SQLITE_ONLY``)."""
    if "journal" not in metafunc.fixturenames:
        return
    params = ["inline", "threaded"]
    if (getattr(metafunc.module, "ALSO_ON_POSTGRESQL", False)
            and metafunc.function.__name__ not in getattr(metafunc.module, "SQLITE_ONLY", ())):
        params.append("postgresql")
    metafunc.parametrize("journal", params, indirect=True)


@pytest.fixture
async def journal(db_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Journal]:
    """A journal whose small groups commit on the loop's thread, or one that always uses the
    writer thread: every behaviour must hold either way (and on PostgreSQL, where asked)."""
    if request.param == "postgresql":
        from flowmasond.journal.postgres import PgJournal

        server = request.getfixturevalue("pg_server")
        database = server.shared_database()
        schema = server.create_schema(database)  # a schema per test: far cheaper than a database
        pg = await PgJournal.open(server.dsn(database, schema=schema))
        try:
            yield pg  # type: ignore[misc]
        finally:
            await pg.close()
            server.drop_schema(database, schema)
        return
    j = await Journal.open(db_path, inline_commits=request.param == "inline")
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
