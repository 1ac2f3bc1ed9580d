"""Data-shaping operators: ``json_transform``, ``filter``, ``variable_set``, ``schema_validate``.

Paths are dotted (``items.0.name``): keys of objects, indices of arrays (negative counts from the
end). There is no expression language on purpose: anything richer belongs in a shell stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from flowmasond.components.operators import shadowing_fields
from flowmasond.components.operators.schema import (
    check_schema,
    is_json_number,
    json_equal,
    json_type_name,
    validate_json_schema,
)
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentInput, ComponentOutput, operator
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

_INDEX = re.compile(r"-?\d+")


def lookup_path(data: Any, path: str) -> Any:
    """The value at a dotted path (``""`` is ``data`` itself); LookupError names the missing segment."""
    if path == "":
        return data
    current = data
    walked: list[str] = []
    for segment in path.split("."):
        where = ".".join(walked) or "<root>"
        if isinstance(current, Mapping):
            if segment not in current:
                raise LookupError(f"no key '{segment}' at '{where}'")
            current = current[segment]
        elif isinstance(current, (list, tuple)) and _INDEX.fullmatch(segment):
            index = int(segment)
            if not -len(current) <= index < len(current):
                raise LookupError(f"index {index} out of range at '{where}' (length {len(current)})")
            current = current[index]
        else:
            raise LookupError(f"cannot take '{segment}' of {json_type_name(current)} at '{where}'")
        walked.append(segment)
    return current


@operator("json_transform", description="Build an object from dotted paths into data.")
class JsonTransform:
    """``result[key] = data at mapping[key]`` for every key of ``mapping``."""

    class Input(ComponentInput):
        data: Any
        mapping: dict[str, str]
        # False: a missing path yields `default` instead of failing the stage.
        strict: bool = True
        default: Any = None

    class Output(ComponentOutput):
        result: dict[str, Any]

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        result: dict[str, Any] = {}
        for key, path in input.mapping.items():
            try:
                result[key] = lookup_path(input.data, path)
            except LookupError as exc:
                if input.strict:
                    raise ComponentError(f"mapping '{key}': path '{path}': {exc.args[0]}",
                                         error_type=ErrorType.VALIDATION, stage=context.stage_path,
                                         key=key, path=path) from exc
                result[key] = input.default
        return self.Output(result=result)


FilterOp = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "contains", "exists", "truthy"]
_ORDERINGS = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
_MISSING = object()


@operator("filter", description="Keep the items whose field satisfies op against value.")
class Filter:
    """Keep matching items. A missing field counts as null, which no ordering matches.

    Equality is JSON equality (``true`` is not ``1``). Ordering compares numbers with numbers and
    strings with strings; any other pair is a VALIDATION error naming the item.
    """

    class Input(ComponentInput):
        items: list[Any]
        field: str | None = None  # dotted path in each item; None: the item itself
        op: FilterOp
        value: Any = None

        @model_validator(mode="after")
        def _value_fits_op(self) -> Any:
            if self.op in _ORDERINGS and self.value is None:
                raise ValueError(f"op '{self.op}' needs a value")
            if self.op == "in" and not isinstance(self.value, (list, str, dict)):
                raise ValueError("op 'in' needs a list (or string) value")
            return self

    class Output(ComponentOutput):
        items: list[Any]
        count: int

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        kept = [item for index, item in enumerate(input.items)
                if _matches(_field_of(item, input.field), input.op, input.value, index, input.field, context)]
        return self.Output(items=kept, count=len(kept))


def _field_of(item: Any, field: str | None) -> Any:
    if field is None:
        return item
    try:
        return lookup_path(item, field)
    except LookupError:
        return _MISSING


def _matches(found: Any, op: str, value: Any, index: int, field: str | None,
             context: ExecutionContext) -> bool:
    if op == "exists":
        return found is not _MISSING
    actual = None if found is _MISSING else found
    if op == "eq":
        return json_equal(actual, value)
    if op == "ne":
        return not json_equal(actual, value)
    if op == "truthy":
        return bool(actual)
    if op == "in":
        if isinstance(value, str):
            return isinstance(actual, str) and actual in value
        return any(json_equal(actual, choice) for choice in value)
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        if isinstance(actual, Mapping):
            return value in actual if isinstance(value, str) else False
        if isinstance(actual, (list, tuple)):
            return any(json_equal(element, value) for element in actual)
        return False
    if actual is None:
        return False
    comparable = (is_json_number(actual) and is_json_number(value)) or (
        isinstance(actual, str) and isinstance(value, str))
    if not comparable:
        where = f"items[{index}]" + (f".{field}" if field else "")
        raise ComponentError(f"{where}: cannot compare {json_type_name(actual)} with {json_type_name(value)}",
                             error_type=ErrorType.VALIDATION, stage=context.stage_path, index=index)
    return _ORDERINGS[op](actual, value)


@operator("variable_set", description="Make values addressable as {{upstream.<stage>.variables.x}}.")
class VariableSet:
    """Return ``variables`` as they resolved, so later stages can reference them by name."""

    class Input(ComponentInput):
        variables: dict[str, Any] = Field(default_factory=dict)

    class Output(ComponentOutput):
        variables: dict[str, Any]

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        return self.Output(variables=dict(input.variables))


@operator("schema_validate", description="Check data against a JSON Schema (Draft 2020-12, formats checked).")
class SchemaValidate:
    """Validate ``data`` against a JSON Schema; by default a mismatch fails the stage listing every error.

    The schema is ``json_schema`` (FlowMason's name) or ``schema``.
    """

    with shadowing_fields():
        class Input(ComponentInput):
            model_config = ConfigDict(extra="forbid", populate_by_name=True)

            data: Any
            json_schema: dict[str, Any] | bool = Field(alias="schema")
            raise_on_invalid: bool = True

            @model_validator(mode="before")
            @classmethod
            def _one_schema(cls, value: Any) -> Any:
                if isinstance(value, dict) and "schema" in value and "json_schema" in value:
                    raise ValueError("give the schema as json_schema or schema, not both")
                return value

    class Output(ComponentOutput):
        valid: bool
        errors: list[str]

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        problems = check_schema(input.json_schema)
        if problems:
            raise ComponentError("invalid schema: " + "; ".join(problems),
                                 error_type=ErrorType.CONFIGURATION, stage=context.stage_path)
        errors = validate_json_schema(input.data, input.json_schema)
        if errors and input.raise_on_invalid:
            raise ComponentError(f"data does not match the schema ({len(errors)} error(s)): " + "; ".join(errors),
                                 error_type=ErrorType.VALIDATION, stage=context.stage_path, errors=errors)
        return self.Output(valid=not errors, errors=errors)
