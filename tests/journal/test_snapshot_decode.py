"""``decode_snapshot`` does not depend on the order SQLite returns the snapshot's rows in."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from flowmasond.journal.records import decode_snapshot

_NULLS = (None,) * 14


def _result_row(seq: int, path: str, output: int) -> tuple:
    """A 'result' row of the snapshot query, in its column order."""
    return ("result", seq, path, None, path, "echo", "success", json.dumps(output), None, None,
            None, 1.0, 1, 0.0, 1.0, 0, None, None)


def _run_row(attempts: dict[str, int]) -> tuple:
    return ("run", 0, None, json.dumps(attempts), *_NULLS)


@settings(max_examples=60, deadline=None)
@given(paths=st.lists(st.sampled_from("abcd"), min_size=0, max_size=12), data=st.data())
def test_any_row_order_gives_the_snapshot_of_seq_order(paths: list[str], data: st.DataObject) -> None:
    """Shuffled rows (the run's row anywhere, records out of seq order) decode to what the rows
    in seq order give: for each path, the output of its highest seq."""
    records = [_result_row(seq, path, seq) for seq, path in enumerate(paths, start=1)]
    attempts = {path: 1 for path in paths}
    rows = data.draw(st.permutations([_run_row(attempts), *records]))

    snapshot = decode_snapshot(rows)

    assert snapshot is not None
    latest = {path: seq for seq, path in enumerate(paths, start=1)}  # later seqs overwrite
    assert {path: result.output for path, result in snapshot.results.items()} == latest
    assert snapshot.attempts == attempts


def test_rows_without_the_runs_row_mean_no_such_run() -> None:
    """No 'run' row: the run does not exist (its records cannot either)."""
    assert decode_snapshot([]) is None
