"""JSON Schema (Draft 2020-12, ``format`` checked) for ``schema_validate`` and pipeline input/output schemas.

Validation is the ``jsonschema`` library's; this module turns its errors into one line each, led
by the JSON path of the offending value, and keeps a few JSON-semantics helpers the data operators
share. ``$ref`` resolves only inside the schema itself: nothing is ever fetched from the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError as SchemaViolation

# jsonschema is imported on first use, not with this module: with its format checkers (rfc3987
# grammars compiled by lark at import) it costs 0.2-2 s, which every `run-once` and daemon start
# paid even when no pipeline validates a schema.

JSON_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean", "object", "array", "null")

# One message quotes the offending value; a 1 MB input must not make a 1 MB error.
MAX_MESSAGE_CHARS = 300
# Errors listed per validation; a list of 10,000 bad items gets the first ones and a count.
MAX_ERRORS = 50
# Compiled validators kept, keyed by the schema's canonical JSON (pipelines reuse a few schemas).
_VALIDATOR_CACHE_SIZE = 256


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
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def child_path(path: str, key: str | int) -> str:
    """``$.a`` + ``b`` -> ``$.a.b``; indices and non-identifier keys use brackets."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def validate_json_schema(data: Any, schema: Any, *, path: str = "$") -> list[str]:
    """Every way ``data`` breaks ``schema``, one message per problem, each starting with its JSON path.

    A schema that is itself invalid yields its own problems (``check_schema``) instead.
    """
    problems = check_schema(schema)
    if problems:
        return [f"invalid schema: {p}" for p in problems]
    validator = _validator(_canonical(schema))
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        return [f"{path}: the value is nested too deeply to validate"]
    except Exception as exc:  # noqa: BLE001 - e.g. an unresolvable $ref: reported, never raised
        return [f"{path}: the schema cannot be applied: {_short(str(exc))}"]
    return _messages(errors, path)


def check_schema(schema: Any, *, path: str = "schema") -> list[str]:
    """Problems in a schema itself (against the Draft 2020-12 meta-schema), each with its location."""
    try:
        text = _canonical(schema)
    except (TypeError, ValueError, RecursionError):
        return [f"{path}: not a JSON value (or nested too deeply)"]
    return list(_schema_problems(text, path))


@lru_cache(maxsize=_VALIDATOR_CACHE_SIZE)
def _schema_problems(text: str, path: str) -> tuple[str, ...]:
    from jsonschema import Draft202012Validator

    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    try:
        errors = sorted(meta.iter_errors(json.loads(text)), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        return (f"{path}: nested too deeply",)
    return tuple(_messages(errors, path))


@lru_cache(maxsize=_VALIDATOR_CACHE_SIZE)
def _validator(text: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(text), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _messages(errors: Iterable[SchemaViolation], path: str) -> list[str]:
    out: list[str] = []
    count = 0
    for error in errors:
        count += 1
        if count <= MAX_ERRORS:
            where = path
            for key in error.absolute_path:
                where = child_path(where, key)
            out.append(f"{where}: {_short(error.message)}")
    if count > MAX_ERRORS:
        out.append(f"... and {count - MAX_ERRORS} more")
    return out


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "..."
