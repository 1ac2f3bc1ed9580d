"""Loading a snapshot pauses the cyclic garbage collector only while it decodes, never for good."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from flowmasond.engine.checkpoint import Record
from flowmasond.journal import Journal
from journal_helpers import make_pipeline, make_result


@pytest.fixture
def collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


async def _journal_with_results(journal: Journal, count: int) -> list[Record]:
    await journal.create_run("r1", make_pipeline(stages=2), {})
    records = [Record.of_result(f"s{i}", make_result(f"s{i}")) for i in range(count)]
    await journal.run_store("r1").commit(records)
    return records


async def test_collector_is_enabled_again_after_a_snapshot(journal: Journal,
                                                           collector_restored: None) -> None:
    """With the collector on, it is on again once the snapshot is loaded, and the snapshot is whole."""
    gc.enable()
    records = await _journal_with_results(journal, 300)
    snapshot = await journal.load_snapshot("r1")
    assert gc.isenabled()
    assert snapshot.results == {r.path: r.result for r in records}


async def test_a_disabled_collector_stays_disabled(journal: Journal,
                                                   collector_restored: None) -> None:
    """A process that turned the collector off does not find it turned back on by a snapshot."""
    await _journal_with_results(journal, 10)
    gc.disable()
    await journal.load_snapshot("r1")
    assert not gc.isenabled()


async def test_collector_is_enabled_again_when_decoding_fails(journal: Journal,
                                                              collector_restored: None) -> None:
    """A row that cannot be decoded raises, and the collector is still switched back on."""
    gc.enable()
    await _journal_with_results(journal, 3)
    await journal.writer.call(lambda conn: conn.execute(
        "UPDATE run_records SET output = 'not json' WHERE path = 's1'"))
    with pytest.raises(ValueError):
        await journal.load_snapshot("r1")
    assert gc.isenabled()
