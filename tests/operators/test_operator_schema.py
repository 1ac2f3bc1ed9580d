"""JSON Schema checking (Draft 2020-12 through the jsonschema library) and the JSON-equality helpers."""

from __future__ import annotations

import pytest

from flowmasond.components.operators.schema import MAX_ERRORS, check_schema, json_equal, validate_json_schema

ITEMS_SCHEMA = {
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                        "properties": {"name": {"type": "string"}}}}},
}


def test_valid_data_has_no_errors() -> None:
    """Data matching the schema yields an empty list."""
    assert validate_json_schema({"items": [{"name": "a"}, {"name": "b"}]}, ITEMS_SCHEMA) == []


def test_type_error_names_the_json_path() -> None:
    """A wrong type deep inside is reported at its JSON path."""
    data = {"items": [{"name": "a"}, {"name": "b"}, {"name": 3}]}
    assert validate_json_schema(data, ITEMS_SCHEMA) == ["$.items[2].name: 3 is not of type 'string'"]


@pytest.mark.parametrize(("schema", "bad", "good"), [
    ({"type": "string", "pattern": "^[a-z]+$"}, "a; rm -rf /", "abc"),
    ({"format": "email"}, "not-an-email", "a@example.org"),
    ({"format": "date-time"}, "2026-13-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    ({"format": "ipv4"}, "999.1.1.1", "10.0.0.1"),
    ({"oneOf": [{"type": "integer"}, {"type": "string"}]}, 1.5, 1),
    ({"const": "prod"}, "staging", "prod"),
    ({"not": {"type": "null"}}, None, 0),
    ({"type": "array", "uniqueItems": True}, [1, 1], [1, 2]),
    ({"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}, {"A": 1}, {"a": 1}),
    ({"$defs": {"pos": {"type": "integer", "minimum": 1}}, "$ref": "#/$defs/pos"}, 0, 1),
    ({"type": "integer"}, True, 2),
    ({"type": "object", "additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}, {"a": 1}),
])
def test_keywords_the_old_subset_ignored_are_enforced(schema: dict, bad: object, good: object) -> None:
    """pattern, format, oneOf, const, not, uniqueItems, propertyNames, $ref... reject bad data and accept good."""
    assert validate_json_schema(good, schema) == []
    assert len(validate_json_schema(bad, schema)) == 1


def test_every_error_is_reported_in_path_order() -> None:
    """Each problem gets its own message, sorted by path."""
    schema = {"properties": {"a": {"type": "integer"}, "b": {"maxLength": 1}}, "required": ["c"]}
    assert validate_json_schema({"a": "x", "b": "long"}, schema) == [
        "$: 'c' is a required property",
        "$.a: 'x' is not of type 'integer'",
        "$.b: 'long' is too long",
    ]


def test_error_count_and_message_length_are_bounded() -> None:
    """A huge bad input yields at most MAX_ERRORS messages plus a count, each short."""
    errors = validate_json_schema(["x" * 100_000] * 200, {"items": {"type": "integer"}})
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1] == f"... and {200 - MAX_ERRORS} more"
    assert all(len(e) < 400 for e in errors)


def test_remote_refs_are_never_fetched() -> None:
    """A $ref to a URL is reported as unresolvable instead of being downloaded."""
    errors = validate_json_schema(1, {"$ref": "http://127.0.0.1:9/schema.json"})
    assert len(errors) == 1 and "cannot be applied" in errors[0]


def test_deeply_nested_data_is_an_error_not_a_crash() -> None:
    """Data nested beyond the interpreter's recursion depth gives a message, never RecursionError."""
    data: object = 1
    for _ in range(5000):
        data = [data]
    schema: dict = {"$defs": {"n": {"items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    assert validate_json_schema(data, schema) == ["$: the value is nested too deeply to validate"]


def test_check_schema_accepts_a_valid_schema() -> None:
    """A well-formed schema has no problems."""
    assert check_schema(ITEMS_SCHEMA) == []


def test_check_schema_reports_bad_keywords_with_location() -> None:
    """Unknown type names and malformed keywords are reported against the meta-schema with their location."""
    problems = check_schema({"properties": {"a": {"type": "strnig"}, "b": {"minLength": -1}}, "required": "a"})
    assert [p.split(":")[0] for p in problems] == [
        "schema.properties.a.type", "schema.properties.b.minLength", "schema.required"]


def test_an_invalid_schema_is_reported_instead_of_validating() -> None:
    """validate_json_schema with a malformed schema returns the schema's problems."""
    assert validate_json_schema(1, {"type": "int"})[0].startswith("invalid schema: schema.type:")


def test_json_equal_semantics() -> None:
    """json_equal keeps booleans apart from numbers and compares containers deeply."""
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal([1, 2], [1])
