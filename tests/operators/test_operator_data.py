"""Data operators: json_transform, filter, variable_set, schema_validate."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest
from pydantic import ValidationError

from flowmasond.components.operators.data import lookup_path
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

RunOperator = Callable[..., Awaitable[Any]]

DATA = {"items": [{"name": "a", "tags": ["x"]}, {"name": "b"}], "meta": {"count": 2, "odd key": 1}}
ITEMS = [
    {"id": 1, "price": 5, "name": "apple", "tags": ["red", "fruit"]},
    {"id": 2, "price": 12.5, "name": "banana", "tags": []},
    {"id": 3, "price": None, "name": "cherry"},
    {"id": 4, "name": "date", "active": True},
]


def ids(out: Any) -> list[int]:
    return [item["id"] for item in out.items]


def test_lookup_path_walks_keys_and_indices() -> None:
    """Dotted paths follow object keys and list indices, negative from the end."""
    assert lookup_path(DATA, "items.0.name") == "a"
    assert lookup_path(DATA, "items.-1.name") == "b"
    assert lookup_path(DATA, "") is DATA


def test_lookup_path_names_the_missing_segment() -> None:
    """A missing key, an index out of range and a scalar step each say where they failed."""
    with pytest.raises(LookupError, match="no key 'nope' at 'items.0'"):
        lookup_path(DATA, "items.0.nope")
    with pytest.raises(LookupError, match="index 5 out of range at 'items'"):
        lookup_path(DATA, "items.5")
    with pytest.raises(LookupError, match="cannot take 'x' of string at 'items.0.name'"):
        lookup_path(DATA, "items.0.name.x")


async def test_json_transform_maps_paths_to_keys(run_operator: RunOperator) -> None:
    """Each mapping key receives the value at its path."""
    out = await run_operator("json_transform", {"data": DATA, "mapping": {
        "first": "items.0.name", "tag": "items.0.tags.0", "count": "meta.count", "all": "items"}})
    assert out.result == {"first": "a", "tag": "x", "count": 2, "all": DATA["items"]}


async def test_json_transform_missing_path_is_a_validation_error(run_operator: RunOperator) -> None:
    """A missing path fails with VALIDATION naming the key and the path."""
    with pytest.raises(ComponentError) as info:
        await run_operator("json_transform", {"data": DATA, "mapping": {"n": "items.1.tags.0"}})
    assert info.value.error_type is ErrorType.VALIDATION
    assert info.value.context["key"] == "n"
    assert "items.1.tags.0" in info.value.message


async def test_json_transform_non_strict_uses_the_default(run_operator: RunOperator) -> None:
    """strict=false puts default where a path is missing."""
    out = await run_operator("json_transform", {"data": DATA, "mapping": {"n": "nope", "c": "meta.count"},
                                                "strict": False, "default": "?"})
    assert out.result == {"n": "?", "c": 2}


@pytest.mark.parametrize(("config", "expected"), [
    ({"field": "price", "op": "gt", "value": 5}, [2]),
    ({"field": "price", "op": "ge", "value": 5}, [1, 2]),
    ({"field": "price", "op": "lt", "value": 12.5}, [1]),
    ({"field": "price", "op": "le", "value": 12.5}, [1, 2]),
    ({"field": "name", "op": "eq", "value": "cherry"}, [3]),
    ({"field": "name", "op": "ne", "value": "cherry"}, [1, 2, 4]),
    ({"field": "price", "op": "eq", "value": None}, [3, 4]),
    ({"field": "id", "op": "in", "value": [2, 4]}, [2, 4]),
    ({"field": "name", "op": "in", "value": "cherry pie"}, [3]),
    ({"field": "tags", "op": "contains", "value": "fruit"}, [1]),
    ({"field": "name", "op": "contains", "value": "an"}, [2]),
    ({"field": "price", "op": "exists"}, [1, 2, 3]),
    ({"field": "price", "op": "truthy"}, [1, 2]),
    ({"field": "active", "op": "truthy"}, [4]),
    ({"field": "name", "op": "gt", "value": "b"}, [2, 3, 4]),
])
async def test_filter_ops(run_operator: RunOperator, config: dict[str, Any], expected: list[int]) -> None:
    """Each op keeps exactly the items it matches; a missing or null field matches no ordering."""
    out = await run_operator("filter", {"items": ITEMS, **config})
    assert ids(out) == expected
    assert out.count == len(expected)


async def test_filter_without_field_tests_the_items_themselves(run_operator: RunOperator) -> None:
    """With no field the op applies to each item."""
    out = await run_operator("filter", {"items": [0, 1, 2, 3], "op": "gt", "value": 1})
    assert out.items == [2, 3]


async def test_filter_eq_does_not_confuse_true_with_one(run_operator: RunOperator) -> None:
    """Equality is JSON equality: true is not 1."""
    out = await run_operator("filter", {"items": [1, True, 1.0], "op": "eq", "value": 1})
    assert out.items == [1, 1.0]


async def test_filter_dict_contains_tests_keys(run_operator: RunOperator) -> None:
    """contains on an object field tests its keys."""
    out = await run_operator("filter", {"items": [{"m": {"a": 1}}, {"m": {"b": 1}}], "field": "m",
                                        "op": "contains", "value": "a"})
    assert out.items == [{"m": {"a": 1}}]


async def test_filter_ordering_across_types_is_a_validation_error(run_operator: RunOperator) -> None:
    """Ordering a string against a number fails with VALIDATION naming the item."""
    with pytest.raises(ComponentError) as info:
        await run_operator("filter", {"items": [{"p": 1}, {"p": "2"}], "field": "p", "op": "gt", "value": 0})
    assert info.value.error_type is ErrorType.VALIDATION
    assert "items[1].p: cannot compare string with integer" in info.value.message


@pytest.mark.parametrize("config", [
    {"op": "gt"},
    {"op": "in", "value": 3},
    {"op": "matches", "value": "x"},
])
def test_filter_rejects_values_that_do_not_fit_the_op(registry, config: dict[str, Any]) -> None:
    """An ordering without a value, 'in' without a list, or an unknown op fail Input validation."""
    with pytest.raises(ValidationError):
        registry.meta("filter").input_model.model_validate({"items": [], **config})


async def test_variable_set_returns_its_variables(run_operator: RunOperator) -> None:
    """variable_set outputs its (already resolved) variables unchanged."""
    out = await run_operator("variable_set", {"variables": {"x": 1, "y": {"z": [True]}}})
    assert out.variables == {"x": 1, "y": {"z": [True]}}


async def test_schema_validate_valid_data(run_operator: RunOperator) -> None:
    """Matching data yields valid=true and no errors."""
    out = await run_operator("schema_validate", {"data": {"a": 1}, "schema": {"required": ["a"]}})
    assert (out.valid, out.errors) == (True, [])


async def test_schema_validate_raises_listing_every_error(run_operator: RunOperator) -> None:
    """By default invalid data fails with VALIDATION listing every error."""
    with pytest.raises(ComponentError) as info:
        await run_operator("schema_validate", {"data": {"b": "x"}, "schema": {
            "required": ["a"], "properties": {"b": {"type": "integer"}}}})
    assert info.value.error_type is ErrorType.VALIDATION
    assert info.value.context["errors"] == ["$: 'a' is a required property", "$.b: 'x' is not of type 'integer'"]
    assert "'a' is a required property" in info.value.message and "$.b: 'x' is not of type" in info.value.message


async def test_schema_validate_can_report_instead_of_raising(run_operator: RunOperator) -> None:
    """raise_on_invalid=false returns valid=false with the errors."""
    out = await run_operator("schema_validate", {"data": "x", "schema": {"type": "integer"},
                                                 "raise_on_invalid": False})
    assert (out.valid, out.errors) == (False, ["$: 'x' is not of type 'integer'"])


async def test_schema_validate_bad_schema_is_a_configuration_error(run_operator: RunOperator) -> None:
    """A malformed schema is the stage's configuration problem, not the data's."""
    with pytest.raises(ComponentError) as info:
        await run_operator("schema_validate", {"data": 1, "schema": {"type": "int"}})
    assert info.value.error_type is ErrorType.CONFIGURATION
    assert "invalid schema: schema.type: 'int' is not valid" in info.value.message


async def test_schema_validate_takes_flowmasons_json_schema_name(run_operator: RunOperator) -> None:
    """FlowMason's config name json_schema works like schema."""
    out = await run_operator("schema_validate", {"data": "abc", "json_schema": {"pattern": "^[a-z]+$"}})
    assert (out.valid, out.errors) == (True, [])


async def test_schema_validate_rejects_both_schema_names(run_operator: RunOperator) -> None:
    """Giving json_schema and schema together is a configuration error, not a silent choice."""
    with pytest.raises(Exception, match="json_schema or schema, not both"):
        await run_operator("schema_validate", {"data": 1, "json_schema": {}, "schema": {}})
