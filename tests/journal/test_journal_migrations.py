"""Schema migrations: fresh journals, upgrades from version 1, refusal of newer schemas."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from journal_helpers import file_digest, make_pipeline

from flowmasond.engine.interfaces import ComponentResult, RunStatus
from flowmasond.errors import JournalError, SchemaTooNewError
from flowmasond.journal import Journal
from flowmasond.journal.event_ids import install_event_ids
from flowmasond.journal.migrations import Migration, load_migrations, migrate
from flowmasond.journal.sqlfiles import queries, state_dir


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


def _create_v1(path: Path) -> None:
    """A journal as the first release wrote it: migration 0001 only, holding one run."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        migrate(conn, load_migrations()[:1])
        pipeline = make_pipeline("old")
        conn.execute("INSERT INTO pipelines_pinned VALUES (?, ?, ?, 1.0)",
                     (pipeline.content_hash(), pipeline.id, pipeline.canonical_json()))
        conn.execute("INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, "
                     "created_at) VALUES ('r-old', 'old', ?, '{}', 'succeeded', 1.0)",
                     (pipeline.content_hash(),))
    finally:
        conn.close()


def test_migrations_are_numbered_without_gaps() -> None:
    """The packaged migrations run 1, 2, ... and every file splits into complete statements."""
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len(migrations) >= 2
    for migration in migrations:
        assert migration.statements()


async def test_fresh_journal_is_at_the_latest_version(db_path: Path) -> None:
    """Opening a new file applies every migration, in WAL mode with incremental auto-vacuum."""
    journal = await Journal.open(db_path)
    await journal.close()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == load_migrations()[-1].version
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        history = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [tuple(r) for r in history] == [(m.version, m.name) for m in load_migrations()]
    finally:
        conn.close()
    assert db_path.stat().st_mode & 0o077 == 0


async def test_version_1_journal_opens_and_migrates(db_path: Path) -> None:
    """A journal created at schema version 1 is upgraded and its runs stay readable."""
    _create_v1(db_path)
    assert "schedule_fires" not in _tables(db_path)
    journal = await Journal.open(db_path)
    try:
        run = await journal.get_run("r-old")
        assert run.status is RunStatus.SUCCEEDED
        assert (await journal.pinned_definition("r-old")).id == "old"
        assert await journal.record_fire("old", "nightly", 60.0) is True
        assert await journal.last_fire_time("old", "nightly") == 60.0
    finally:
        await journal.close()
    assert "schedule_fires" in _tables(db_path)


async def test_newer_schema_is_refused_and_left_untouched(db_path: Path) -> None:
    """A journal whose schema is newer than the code raises SchemaTooNewError; its bytes are unchanged."""
    journal = await Journal.open(db_path)
    await journal.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = file_digest(db_path)
    siblings = sorted(p.name for p in db_path.parent.iterdir())

    with pytest.raises(SchemaTooNewError) as caught:
        await Journal.open(db_path)

    assert caught.value.context["schema_version"] == 999
    assert file_digest(db_path) == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == siblings


def test_failing_migration_leaves_the_previous_schema(db_path: Path) -> None:
    """All pending migrations apply in one transaction: a failure in the second undoes the first."""
    broken = Migration(2, "broken", "CREATE TABLE fine (x);\nTHIS IS NOT SQL;\n")
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, [load_migrations()[0], broken])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert not conn.in_transaction
    finally:
        conn.close()
    assert _tables(db_path) == set()


async def test_non_database_file_is_a_journal_error(db_path: Path) -> None:
    """A file that is not SQLite is reported as a JournalError naming it, not a crash."""
    db_path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError) as caught:
        await Journal.open(db_path)
    assert caught.value.context["path"] == str(db_path)


def test_every_query_block_compiles(tmp_path: Path) -> None:
    """Each named query prepares against the latest schema (no typo waits for production)."""
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    try:
        migrate(conn, load_migrations())
        install_event_ids(conn)  # next_event_id(), which the writer's inserts call
        for name in queries().names():
            sql = getattr(queries(), name)
            if sql.lstrip().upper().startswith("PRAGMA"):
                continue
            numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
            params: Any = ((None,) * max(numbered) if numbered
                           else {p: None for p in re.findall(r":(\w+)", sql)})
            conn.execute(f"EXPLAIN {sql}", params)
    finally:
        conn.close()


def test_readme_documents_every_table_and_column(tmp_path: Path) -> None:
    """state/README.md (the on-disk contract) names every table and every column of the schema."""
    readme = (state_dir() / "README.md").read_text(encoding="utf-8")
    conn = sqlite3.connect(tmp_path / "doc.db", isolation_level=None)
    try:
        migrate(conn, load_migrations())
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        missing = [f"table {t}" for t in tables if f"### `{t}`" not in readme]
        for table in tables:
            section = readme.split(f"### `{table}`", 1)[-1].split("\n### ", 1)[0]
            for column in (r[1] for r in conn.execute(f"PRAGMA table_info({table})")):
                if f"`{column}`" not in section:
                    missing.append(f"{table}.{column}")
    finally:
        conn.close()
    assert missing == []


def test_result_columns_cover_every_field() -> None:
    """Every ComponentResult field has a run_records column: a new field needs a migration."""
    columns = set(re.findall(r"^\s+(\w+)\s+(?:TEXT|INTEGER|REAL)", load_migrations()[0].sql,
                             re.MULTILINE))
    columns |= {c for m in load_migrations()[1:]
                for c in re.findall(r"ALTER TABLE run_records ADD COLUMN (\w+)", m.sql)}
    fields = {f.name for f in dataclasses.fields(ComponentResult)} - {"usage"}
    usage_fields = {"input_tokens", "output_tokens", "cost_usd", "duration_ms", "provider",
                    "model"}
    assert fields | usage_fields <= columns
