"""Expressions inside {{ }}: FlowMason's documented forms evaluate, in a sandbox that refuses escapes."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowmasond.engine.expressions import MAX_RANGE, ExpressionError, compile_expression, evaluate
from flowmasond.engine.templates import TemplateScope, resolve
from flowmasond.errors import TemplateError


def scope(**input: Any) -> TemplateScope:
    return TemplateScope(input=input, upstream={"fetch": {"rows": [{"n": 1}, {"n": 2}], "items": ["a", "b"]}},
                         env={"HOME": "/home/x"}, context={"run_id": "r-1", "item": {"name": "it"}})


def test_list_index_in_brackets_reads_the_item():
    """`a.b[1]` is FlowMason's spelling of `a.b.1`."""
    assert resolve("{{upstream.fetch.rows[1].n}}", scope()) == 2


def test_len_of_a_list_keeps_its_native_type():
    """A value that is exactly one expression keeps the type of its result."""
    assert resolve("{{len(upstream.fetch.rows)}}", scope()) == 2


def test_or_falls_back_when_the_key_is_missing():
    """`a or b` gives b when a is missing (a missing key is undefined, which is false)."""
    assert resolve("{{input.name or 'anon'}}", scope()) == "anon"
    assert resolve("{{input.name or 'anon'}}", scope(name="Ada")) == "Ada"


def test_conditional_expression_picks_a_branch():
    """`x if c else y` evaluates like Python's."""
    assert resolve("{{'big' if input.n > 2 else 'small'}}", scope(n=3)) == "big"
    assert resolve("{{'big' if input.n > 2 else 'small'}}", scope(n=1)) == "small"


def test_now_is_an_aware_iso_timestamp():
    """`now()` is the current UTC time in ISO 8601."""
    stamp = datetime.datetime.fromisoformat(resolve("{{now()}}", scope()))
    assert stamp.tzinfo is not None
    assert abs(stamp.timestamp() - time.time()) < 60


def test_mixed_text_renders_expression_values_as_text():
    """In mixed text an expression's value is rendered like any template value."""
    assert resolve("rows: {{len(upstream.fetch.rows)}}, first {{upstream.fetch.rows[0]}}", scope()) == \
        'rows: 2, first {"n":1}'


def test_mapping_keys_win_over_dict_methods():
    """`{{upstream.fetch.items}}` is the key "items", not the dict method of that name."""
    assert resolve("{{upstream.fetch.items if true else none}}", scope()) == ["a", "b"]


def test_a_missing_value_is_an_error_naming_the_template():
    """An expression that evaluates to nothing fails with the template in the message."""
    with pytest.raises(TemplateError) as caught:
        resolve({"x": "{{input.nope.deeper if true else 1}}"}, scope(), stage="s")
    assert "{{input.nope.deeper if true else 1}}" in str(caught.value)
    assert caught.value.context["field"] == "x"


@pytest.mark.parametrize("source", [
    "''.__class__",
    "''.__class__.__mro__[1].__subclasses__()",
    "input.__class__.__init__.__globals__",
    "upstream.fetch.rows.__len__()",
    "now.__globals__",
    "lipsum.__globals__",
    "cycler.__init__.__globals__.os",
    "input.pop('x')",
    "input.setdefault('x', 1)",
    "upstream.fetch.rows.append(3)",
    "upstream.fetch.rows.pop()",
    "input | attr('__class__')",
    "'%s'.format.__globals__",
])
def test_hostile_expressions_are_refused(source: str):
    """Attribute access to internals and mutating methods never succeed."""
    with pytest.raises(TemplateError):
        resolve("{{" + source + "}}", scope())


def test_format_strings_cannot_reach_internals():
    """str.format goes through the sandbox's formatter: `{0.__class__}` yields nothing, never the class."""
    assert evaluate("'{0.__class__}'.format(x)", {"x": {}}) == ""


@pytest.mark.parametrize("source", [
    f"range({MAX_RANGE + 1})",
    "range(10 ** 9) | list",
    "'x' * 10 ** 8",
    "[0] * 10 ** 8",
    "10 ** 100000",
    "(2 ** 1000) ** 1000",
])
def test_expressions_that_would_exhaust_memory_or_cpu_are_refused(source: str):
    """Huge ranges, repetitions and powers are refused before they are computed."""
    started = time.monotonic()
    with pytest.raises(ExpressionError):
        evaluate(source, {})
    assert time.monotonic() - started < 1.0


def test_eval_and_import_are_not_names():
    """Python's builtins are not visible: eval, __import__ and open are undefined."""
    for source in ("eval('1')", "__import__('os')", "open('/etc/passwd')"):
        with pytest.raises(ExpressionError):
            evaluate(source, {})


def test_expression_syntax_errors_are_reported_at_compile_time():
    """A malformed expression fails to compile with a readable message."""
    with pytest.raises(ExpressionError, match="invalid expression"):
        compile_expression("a if")


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=5))


@given(a=JSON_SCALARS, b=JSON_SCALARS)
def test_or_agrees_with_python(a: Any, b: Any):
    """`a or b` over JSON scalars gives what Python's `or` gives."""
    assert resolve("{{input.a or input.b}}", scope(a=a, b=b)) == (a or b)


@given(xs=st.lists(st.integers(-100, 100), min_size=1, max_size=8), data=st.data())
def test_bracket_and_dotted_indexes_agree(xs: list[int], data: st.DataObject):
    """`xs[i]` and `xs.i` read the same item, for negative indexes too."""
    i = data.draw(st.integers(-len(xs), len(xs) - 1))
    assert resolve(f"{{{{input.xs[{i}]}}}}", scope(xs=xs)) == resolve(f"{{{{input.xs.{i}}}}}", scope(xs=xs)) == xs[i]


def test_hyphenated_stage_ids_read_as_stages_not_subtractions():
    """`upstream.parse-alert.severity` inside an expression reads stage `parse-alert`."""
    scope_ = TemplateScope(input={}, upstream={"parse-alert": {"severity": "critical"}}, env={}, context={})
    assert resolve("{{'major' if upstream.parse-alert.severity == 'critical' else 'minor'}}", scope_) == "major"


def test_comprehensions_are_not_expressions():
    """Python comprehensions are not part of the expression language: refused at compile time."""
    with pytest.raises(ExpressionError, match="invalid expression"):
        compile_expression("[r for r in data if r.ok]")
