"""The JSON-Schema subset checker shared by ``schema_validate`` and pipeline schemas."""

from __future__ import annotations

from flowmasond.components.operators.schema import check_schema, json_equal, validate_json_schema

ITEMS_SCHEMA = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
    },
}


def test_valid_data_has_no_errors() -> None:
    """Data matching every keyword yields an empty list."""
    data = {"items": [{"name": "a"}, {"name": "b", "extra": 1}]}
    assert validate_json_schema(data, ITEMS_SCHEMA) == []


def test_type_error_names_the_json_path() -> None:
    """A wrong type is reported at its JSON path with expected and actual type."""
    data = {"items": [{"name": "a"}, {"name": "b"}, {"name": 3}]}
    assert validate_json_schema(data, ITEMS_SCHEMA) == ["$.items[2].name: expected string, got integer"]


def test_missing_required_property_is_reported_at_its_path() -> None:
    """A missing required property is reported as the path it should be at."""
    assert validate_json_schema({"items": [{}]}, ITEMS_SCHEMA) == ["$.items[0].name: is required"]


def test_every_error_is_reported() -> None:
    """Independent problems are all listed, not just the first."""
    schema = {"type": "object", "required": ["a", "b"], "properties": {"c": {"type": "integer"}}}
    assert validate_json_schema({"c": "x"}, schema) == [
        "$.a: is required", "$.b: is required", "$.c: expected integer, got string"]


def test_type_list_accepts_any_listed_type() -> None:
    """type may be a list, e.g. a nullable string."""
    schema = {"type": ["string", "null"]}
    assert validate_json_schema(None, schema) == []
    assert validate_json_schema(1, schema) == ["$: expected string or null, got integer"]


def test_integer_number_and_boolean_are_distinct() -> None:
    """Booleans are not numbers, 2.0 is an integer, 2.5 is not."""
    assert validate_json_schema(True, {"type": "integer"}) == ["$: expected integer, got boolean"]
    assert validate_json_schema(True, {"type": "number"}) == ["$: expected number, got boolean"]
    assert validate_json_schema(2.0, {"type": "integer"}) == []
    assert validate_json_schema(2.5, {"type": "integer"}) == ["$: expected integer, got number"]


def test_enum_uses_json_equality() -> None:
    """enum matches by JSON equality, so true does not match 1."""
    assert validate_json_schema("b", {"enum": ["a", "b"]}) == []
    assert validate_json_schema(True, {"enum": [1, 2]}) == ['$: must be one of [1, 2]']


def test_minimum_and_maximum() -> None:
    """Numbers outside [minimum, maximum] are reported; bounds are inclusive."""
    schema = {"minimum": 1, "maximum": 3}
    assert validate_json_schema(1, schema) == validate_json_schema(3, schema) == []
    assert validate_json_schema(0, schema) == ["$: must be >= 1, got 0"]
    assert validate_json_schema(3.5, schema) == ["$: must be <= 3, got 3.5"]


def test_string_length_bounds() -> None:
    """minLength and maxLength count characters."""
    schema = {"minLength": 2, "maxLength": 3}
    assert validate_json_schema("héé", schema) == []
    assert validate_json_schema("a", schema) == ["$: must have at least 2 characters, got 1"]
    assert validate_json_schema("abcd", schema) == ["$: must have at most 3 characters, got 4"]


def test_array_size_bounds() -> None:
    """minItems and maxItems bound array lengths."""
    assert validate_json_schema([], {"minItems": 1}) == ["$: must have at least 1 items, got 0"]
    assert validate_json_schema([1, 2], {"maxItems": 1}) == ["$: must have at most 1 items, got 2"]


def test_additional_properties_false_rejects_unknown_keys() -> None:
    """additionalProperties false reports each undeclared key, quoting odd key names."""
    schema = {"properties": {"a": {}}, "additionalProperties": False}
    assert validate_json_schema({"a": 1, "b c": 2}, schema) == ['$["b c"]: is not allowed']


def test_additional_properties_schema_applies_to_unknown_keys() -> None:
    """additionalProperties as a schema validates every undeclared key."""
    schema = {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}}
    assert validate_json_schema({"a": "x", "b": "y"}, schema) == ["$.b: expected integer, got string"]


def test_keywords_of_other_types_do_not_apply() -> None:
    """Without a type, keywords for other kinds of value are ignored (JSON Schema semantics)."""
    assert validate_json_schema("abc", {"minimum": 10, "required": ["x"], "minItems": 5}) == []


def test_check_schema_accepts_a_valid_schema() -> None:
    """A well-formed schema has no problems."""
    assert check_schema(ITEMS_SCHEMA) == []


def test_check_schema_reports_unknown_types_and_bad_keywords_with_location() -> None:
    """Unknown type names and malformed keywords are reported where they are."""
    schema = {"type": "object", "required": "a",
              "properties": {"a": {"type": "strnig"}, "b": {"minLength": -1}}, "items": 3}
    assert check_schema(schema) == [
        "schema.properties.a.type: unknown type 'strnig' (expected one of string, number, integer, "
        "boolean, object, array, null)",
        "schema.properties.b.minLength: must be a non-negative integer",
        "schema.required: must be a list of property names",
        "schema.items: a schema must be an object, got integer",
    ]


def test_json_equal_semantics() -> None:
    """json_equal keeps booleans apart from numbers and compares containers deeply."""
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal([1, 2], [1])
