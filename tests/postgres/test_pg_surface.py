"""PgJournal offers the SQLite Journal's public surface, so the daemon's parts use either unchanged."""

from __future__ import annotations

import inspect

import pytest

from flowmasond.journal import Journal
from flowmasond.journal.postgres import PgJournal

# Meaningful for a SQLite file only: WAL checkpoints, a page cap, PRAGMA integrity_check, the path.
SQLITE_ONLY = {"checkpoint", "set_max_size", "integrity_check", "path"}
PUBLIC = sorted(name for name in vars(Journal) if not name.startswith("_") and name not in SQLITE_ONLY
                and name != "open")


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_journal_member_exists_on_pgjournal_with_the_same_parameters(name: str) -> None:
    """Same name, same kind (method, coroutine, property), same parameter names, kinds and defaults."""
    sqlite_member, pg_member = inspect.getattr_static(Journal, name), inspect.getattr_static(PgJournal, name, None)
    assert pg_member is not None, f"PgJournal has no {name}"
    assert type(pg_member) is type(sqlite_member)
    if callable(sqlite_member):
        assert inspect.iscoroutinefunction(pg_member) == inspect.iscoroutinefunction(sqlite_member)
        assert inspect.isasyncgenfunction(pg_member) == inspect.isasyncgenfunction(sqlite_member)
        ours = [(p.name, p.kind, p.default) for p in inspect.signature(pg_member).parameters.values()]
        theirs = [(p.name, p.kind, p.default) for p in inspect.signature(sqlite_member).parameters.values()]
        assert ours == theirs
