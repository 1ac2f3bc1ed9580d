"""``decode_snapshot`` does not depend on the order SQLite returns the snapshot's rows in."""

from __future__ import annotations

import json

import pytest
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


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(value=_JSON, before=st.sampled_from(["", " ", "\n"]), after=st.sampled_from(["", " ", "\t\n"]))
def test_an_output_decodes_to_what_json_loads_gives(value: object, before: str, after: str) -> None:
    """A stored output, compact or not, surrounded by whitespace or not, decodes as json.loads
    decodes it (the decoder calls json's scanner directly: the oracle is json.loads)."""
    text = before + json.dumps(value, separators=(",", ":") if not before else None) + after
    [result] = decode_snapshot([_run_row({}), _output_row(text)]).results.values()  # type: ignore[union-attr]
    assert result.output == json.loads(text)


@settings(max_examples=60, deadline=None)
@given(value=_JSON, garbage=st.sampled_from(["x", "}", ",1", " 2", "]"]))
def test_an_output_with_trailing_data_is_refused_as_json_loads_refuses_it(value: object, garbage: str) -> None:
    """A stored output followed by anything but whitespace is a JSON error, as with json.loads."""
    text = json.dumps(value) + garbage
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        decode_snapshot([_run_row({}), _output_row(text)])


def _output_row(text: str) -> tuple:
    return ("result", 1, "a", None, "a", "echo", "success", text, None, None, None, 1.0, 1, 0.0, 1.0, 0, None, None)
