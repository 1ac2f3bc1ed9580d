"""A JSON-Schema subset checker, shared by ``schema_validate`` and pipeline input/output schemas.

Supported keywords: type (a name or a list of names), properties, required, additionalProperties,
items, enum, minimum, maximum, minLength, maxLength, minItems, maxItems. Other keywords are ignored,
as JSON Schema itself ignores unknown keywords; ``check_schema`` reports malformed known ones.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

JSON_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean", "object", "array", "null")

_LENGTH_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")


def json_type_name(value: Any) -> str:
    """The JSON type name of a Python value ('integer' for ints, 'number' for floats)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def is_json_number(value: Any) -> bool:
    """True for ints and floats, never for booleans (JSON keeps them apart)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality with JSON semantics: ``true`` is not ``1``, ``1`` equals ``1.0``, arrays by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if is_json_number(a) and is_json_number(b):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _has_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if name == "number":
        return is_json_number(value)
    return json_type_name(value) == name


def child_path(path: str, key: str | int) -> str:
    """``$.a`` + ``b`` -> ``$.a.b``; indices and non-identifier keys use brackets."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def validate_json_schema(data: Any, schema: Mapping[str, Any], *, path: str = "$") -> list[str]:
    """Every way ``data`` breaks ``schema``, one message per problem, each starting with its JSON path."""
    errors: list[str] = []
    _validate(data, schema, path, errors)
    return errors


def _validate(value: Any, schema: Any, path: str, errors: list[str]) -> None:
    if not isinstance(schema, Mapping):
        return  # check_schema reports it; a malformed sub-schema constrains nothing
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list) and types and not any(_has_type(value, t) for t in types):
        # Further keywords would only restate the mismatch.
        errors.append(f"{path}: expected {' or '.join(map(str, types))}, got {json_type_name(value)}")
        return

    enum = schema.get("enum")
    if isinstance(enum, list) and not any(json_equal(value, choice) for choice in enum):
        errors.append(f"{path}: must be one of {json.dumps(enum, default=str)}")

    if is_json_number(value):
        minimum, maximum = schema.get("minimum"), schema.get("maximum")
        if is_json_number(minimum) and value < minimum:
            errors.append(f"{path}: must be >= {minimum}, got {value}")
        if is_json_number(maximum) and value > maximum:
            errors.append(f"{path}: must be <= {maximum}, got {value}")

    if isinstance(value, str):
        _check_length(len(value), schema, "minLength", "maxLength", "characters", path, errors)

    if isinstance(value, (list, tuple)):
        _check_length(len(value), schema, "minItems", "maxItems", "items", path, errors)
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                _validate(item, items, child_path(path, index), errors)

    if isinstance(value, Mapping):
        _validate_object(value, schema, path, errors)


def _check_length(length: int, schema: Mapping[str, Any], low_key: str, high_key: str, unit: str,
                  path: str, errors: list[str]) -> None:
    low, high = schema.get(low_key), schema.get(high_key)
    if isinstance(low, int) and length < low:
        errors.append(f"{path}: must have at least {low} {unit}, got {length}")
    if isinstance(high, int) and length > high:
        errors.append(f"{path}: must have at most {high} {unit}, got {length}")


def _validate_object(value: Mapping[str, Any], schema: Mapping[str, Any], path: str,
                     errors: list[str]) -> None:
    required = schema.get("required")
    if isinstance(required, list):
        for name in required:
            if isinstance(name, str) and name not in value:
                errors.append(f"{child_path(path, name)}: is required")
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for name, sub_schema in properties.items():
        if name in value:
            _validate(value[name], sub_schema, child_path(path, name), errors)
    extra = schema.get("additionalProperties", True)
    if extra is True:
        return
    for name in value:
        if name in properties:
            continue
        if extra is False:
            errors.append(f"{child_path(path, str(name))}: is not allowed")
        elif isinstance(extra, Mapping):
            _validate(value[name], extra, child_path(path, str(name)), errors)


def check_schema(schema: Any, *, path: str = "schema") -> list[str]:
    """Problems in a schema itself (unknown type names, malformed keywords), each with its location."""
    problems: list[str] = []
    _check(schema, path, problems)
    return problems


def _check(schema: Any, path: str, problems: list[str]) -> None:
    if not isinstance(schema, Mapping):
        problems.append(f"{path}: a schema must be an object, got {json_type_name(schema)}")
        return
    if "type" in schema:
        types = schema["type"]
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not names:
            problems.append(f"{path}.type: must be a type name or a non-empty list of them")
        else:
            for name in names:
                if name not in JSON_TYPES:
                    problems.append(f"{path}.type: unknown type {name!r} (expected one of {', '.join(JSON_TYPES)})")
    if "properties" in schema:
        properties = schema["properties"]
        if not isinstance(properties, Mapping):
            problems.append(f"{path}.properties: must be an object")
        else:
            for name, sub_schema in properties.items():
                _check(sub_schema, child_path(f"{path}.properties", str(name)), problems)
    if "required" in schema:
        required = schema["required"]
        if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
            problems.append(f"{path}.required: must be a list of property names")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        _check(schema["additionalProperties"], f"{path}.additionalProperties", problems)
    if "items" in schema:
        _check(schema["items"], f"{path}.items", problems)
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{path}.enum: must be a list")
    for key in ("minimum", "maximum"):
        if key in schema and not is_json_number(schema[key]):
            problems.append(f"{path}.{key}: must be a number")
    for key in _LENGTH_KEYWORDS:
        value = schema.get(key)
        if key in schema and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            problems.append(f"{path}.{key}: must be a non-negative integer")
