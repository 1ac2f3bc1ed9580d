"""Resolving templates against a stage's scope: native types, rendering, paths and error messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from flowmasond.engine import templates
from flowmasond.engine.templates import TemplateScope, resolve
from flowmasond.errors import TemplateError


def scope(**overrides: Any) -> TemplateScope:
    values: dict[str, Any] = {
        "input": {"user": {"id": 7, "email": "a@b.c"}, "xs": [10, 20, 30], "name": "Zoë"},
        "upstream": {"fetch": {"rows": [{"n": 1}, {"n": 2}, {"n": 3}], "count": 3}, "maybe": None},
        "env": {"API_HOST": "api.local"},
        "context": {"run_id": "r-1", "stage_id": "s", "row": {"name": "x"}, "i": 4},
    }
    values.update(overrides)
    return TemplateScope(**values)


def error_of(value: Any, **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        resolve(value, scope(), **kwargs)
    return caught.value


def test_string_without_template_is_returned_unchanged():
    """A plain string comes back as the very same object."""
    text = "no templates {here} }}"
    assert resolve(text, scope()) is text


def test_non_string_scalars_are_returned_unchanged():
    """Numbers, booleans and None pass through."""
    assert [resolve(v, scope()) for v in (1, 2.5, True, None)] == [1, 2.5, True, None]


@pytest.mark.parametrize(("template", "expected"), [
    ("{{input.user}}", {"id": 7, "email": "a@b.c"}),
    ("{{input.xs}}", [10, 20, 30]),
    ("{{input.user.id}}", 7),
    ("{{upstream.maybe}}", None),
    ("{{context.i}}", 4),
])
def test_single_template_keeps_native_type(template, expected):
    """A string that is exactly one template becomes the referenced value itself."""
    assert resolve(template, scope()) == expected


def test_whitespace_inside_braces_is_allowed():
    """{{ input.user.id }} is the same as {{input.user.id}}."""
    assert resolve("{{  input.user.id }}", scope()) == 7


def test_mixed_text_renders_strings_as_is():
    """Strings are inserted without quotes; non-ASCII stays readable."""
    assert resolve("hi {{input.name}} at {{env.API_HOST}}", scope()) == "hi Zoë at api.local"


def test_mixed_text_renders_other_values_as_compact_json():
    """Dicts, lists, numbers, booleans and None render as compact JSON in text."""
    s = scope(context={"flag": True, "none": None})
    rendered = resolve("{{input.user}}|{{input.xs}}|{{input.user.id}}|{{context.flag}}|{{context.none}}", s)
    assert rendered == '{"id":7,"email":"a@b.c"}|[10,20,30]|7|true|null'


def test_list_indexing_by_position_and_from_the_end():
    """`xs.0` indexes a list; `xs.-1` counts from the end."""
    assert resolve(["{{input.xs.0}}", "{{input.xs.-1}}", "{{upstream.fetch.rows.1.n}}"], scope()) == [10, 30, 2]


def test_nested_config_is_resolved_and_keys_kept():
    """Dicts and lists are walked to any depth; keys are never templated."""
    config = {"headers": {"X-User": "{{input.user.id}}"}, "parts": [["{{input.xs.1}}"], {"{{k}}": 1}]}
    assert resolve(config, scope()) == {"headers": {"X-User": 7}, "parts": [[20], {"{{k}}": 1}]}


def test_resolved_containers_are_copies():
    """Mutating the resolved config leaves the pipeline's config untouched."""
    config = {"a": [1, 2], "b": {"c": 3}}
    result = resolve(config, scope())
    result["a"].append(9)
    result["b"]["c"] = 0
    assert config == {"a": [1, 2], "b": {"c": 3}}


def test_upstream_and_seed_forms_read_the_same_output():
    """{{fetch.output.count}} is {{upstream.fetch.count}}; {{fetch.output}} is the whole output."""
    s = scope()
    assert resolve("{{fetch.output.count}}", s) == resolve("{{upstream.fetch.count}}", s) == 3
    assert resolve("{{fetch.output}}", s) == s.upstream["fetch"]


def test_env_variable():
    """{{env.VAR}} reads the scope's environment."""
    assert resolve("https://{{env.API_HOST}}/x", scope()) == "https://api.local/x"


def test_missing_env_variable_names_it():
    """An unset variable is an error naming the variable."""
    assert "environment variable 'NOPE' is not set" in error_of("{{env.NOPE}}").message


def test_context_values_and_custom_loop_variables():
    """{{context.<key>}} reads run ids and loop variables under any configured name."""
    assert resolve("{{context.run_id}}/{{context.row.name}}/{{context.i}}", scope()) == "r-1/x/4"


def test_missing_key_names_segment_and_available_keys():
    """A missing dict key is named along with the keys that do exist."""
    error = error_of("{{input.user.mail}}")
    assert error.message == "{{input.user.mail}}: key 'mail' not found in input.user (keys: id, email)"


def test_index_out_of_range_names_index_and_length():
    """An index past the end says how many items the list has."""
    error = error_of("{{upstream.fetch.rows.5}}")
    assert error.message == "{{upstream.fetch.rows.5}}: index 5 out of range (list has 3 items)"


def test_non_integer_segment_on_a_list():
    """A name used on a list says it is not an index."""
    assert "'first' is not a list index" in error_of("{{input.xs.first}}").message


def test_reading_into_a_scalar():
    """A path continuing past a scalar says what the scalar is."""
    assert "input.user.id is a number, so 'x' cannot be read" in error_of("{{input.user.id.x}}").message


def test_field_of_a_skipped_stage_says_it_has_no_output():
    """Reading a field of a stage that was skipped explains why there is nothing."""
    message = error_of("{{upstream.maybe.rows}}").message
    assert "stage 'maybe' has no output (it was skipped" in message


def test_stage_that_has_not_run():
    """A stage absent from upstream is an error naming the stage."""
    assert "no output from stage 'later'" in error_of("{{later.output.x}}").message


def test_unknown_root_fails_at_resolve_time():
    """{{foo.bar}} cannot be resolved."""
    assert "unknown root 'foo'" in error_of("x {{foo.bar}}").message


def test_error_context_names_stage_and_config_field():
    """The stage passed in and the dotted config location are in the error's context."""
    error = error_of({"headers": {"Auth": ["ok", "{{env.TOKEN}}"]}}, stage="call")
    assert error.context == {"stage": "call", "field": "headers.Auth.1"}
    assert error.to_dict()["code"] == "template_error"


def test_pydantic_model_outputs_can_be_traversed_and_rendered():
    """Outputs that are pydantic models are read by field and rendered as JSON in text."""

    class Out(BaseModel):
        rows: list[int]

    s = scope(upstream={"fetch": Out(rows=[4, 5])})
    assert resolve("{{upstream.fetch.rows.1}}", s) == 5
    assert resolve("got {{upstream.fetch}}", s) == 'got {"rows":[4,5]}'


def test_each_distinct_template_is_parsed_once():
    """Resolving the same template string again reuses its compiled form."""
    text = "cached {{input.user.id}} probe-7f3a"
    resolve(text, scope())
    misses = templates._compile.cache_info().misses
    for _ in range(3):
        resolve({"a": text, "b": [text]}, scope())
    assert templates._compile.cache_info().misses == misses
