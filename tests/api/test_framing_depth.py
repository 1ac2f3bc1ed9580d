"""The request depth limit: refused exactly when the request nests deeper than MAX_JSON_DEPTH."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmason_client.protocol import MAX_JSON_DEPTH, ErrorCode
from flowmasond.api.framing import RpcError, parse_request

# Strings full of brackets: they count towards the line's brackets without nesting anything.
texts = st.text(alphabet="[]{}ab\"\\", max_size=12)
leaves = st.none() | st.booleans() | st.integers() | texts
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(texts, inner, max_size=3), max_leaves=12)


def _depth(value: Any) -> int:
    """The oracle: nesting depth by plain recursion."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _wrapped(levels: int, inner: Any) -> Any:
    for level in range(levels):
        inner = [inner] if level % 2 else {"k": inner}
    return inner


@settings(max_examples=300, deadline=None)
@given(levels=st.integers(MAX_JSON_DEPTH - 6, MAX_JSON_DEPTH) | st.integers(0, MAX_JSON_DEPTH + 5),
       inner=values, padding=st.just(0) | st.integers(0, 80))
def test_a_request_is_refused_for_depth_exactly_when_it_nests_deeper_than_the_limit(
        levels: int, inner: Any, padding: int) -> None:
    """Brackets inside strings never count; real nesting beyond MAX_JSON_DEPTH always does."""
    message = {"jsonrpc": "2.0", "id": 1, "method": "echo",
               "params": {"value": _wrapped(levels, inner), "pad": "[{" * padding}}
    line = json.dumps(message).encode()
    if _depth(message) > MAX_JSON_DEPTH:
        with pytest.raises(RpcError) as caught:
            parse_request(line)
        assert caught.value.code == ErrorCode.INVALID_REQUEST and "nested too deeply" in caught.value.message
    else:
        assert parse_request(line).method == "echo"
