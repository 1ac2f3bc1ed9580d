"""Data-shaping operators: ``json_transform``, ``filter``, ``variable_set``, ``schema_validate``.

Paths are dotted (``items.0.name``): keys of objects, indices of arrays (negative counts from the
end). FlowMason's conditions and ``{{...}}`` mapping templates are evaluated in the Jinja2 sandbox
of ``flowmasond.engine.expressions``, never with ``eval``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import jmespath
from pydantic import ConfigDict, Field, field_validator, model_validator

from flowmasond.components.operators import shadowing_fields
from flowmasond.components.operators.schema import (
    check_schema,
    is_json_number,
    json_equal,
    json_type_name,
    validate_json_schema,
)
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.expressions import ExpressionError, compile_expression, truthy
from flowmasond.engine.templates import render_expressions
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


@operator("json_transform", description="Reshape data: a JMESPath query and/or a mapping of paths.",
          deferred_template_roots=frozenset({"data"}))
class JsonTransform:
    """``result[key] = data at mapping[key]`` for every key of ``mapping`` (FlowMason's fields).

    A mapping value is a dotted path (``user.name``, ``items.0``) or a template evaluated against
    ``data`` itself: ``{{data.user.name}}``, ``{{name}}`` (a key of data), or an expression such
    as ``{{data.tags[0] if data.tags else 'none'}}``. ``jmespath_expression`` is applied first;
    the mapping then reads its result. ``template`` (as FlowMason's templates write it) is an
    object of such templates, rendered whole; its top-level keys are also output fields, so
    ``{{upstream.<stage>.<key>}}`` reads them. Without any of these, ``data`` passes through.
    """

    class Input(ComponentInput):
        data: Any = None
        mapping: dict[str, Any] | None = None
        template: Any = None
        jmespath_expression: str | None = None
        defaults: dict[str, Any] | None = None  # per output key, used when its path is missing
        # False: a missing path without a `defaults` entry yields `default` instead of failing.
        strict: bool = True
        default: Any = None

        @field_validator("jmespath_expression")
        @classmethod
        def _compiles(cls, value: str | None) -> str | None:
            if value is not None:
                try:
                    jmespath.compile(value)
                except jmespath.exceptions.ParseError as exc:
                    raise ValueError(f"invalid JMESPath expression: {exc}") from None
            return value

    class Output(ComponentOutput):
        result: Any
        fields_mapped: int = 0
        fields_missing: list[str] = Field(default_factory=list)

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        data = input.data
        if input.jmespath_expression is not None:
            try:
                data = jmespath.search(input.jmespath_expression, data)
            except jmespath.exceptions.JMESPathError as exc:
                raise ComponentError(f"jmespath_expression failed: {exc}", error_type=ErrorType.VALIDATION,
                                     stage=context.stage_path) from exc
        if input.template is not None:
            return self._render(input, data, context)
        if input.mapping is None:
            if isinstance(data, dict) and input.defaults:
                data = {**input.defaults, **data}
            return self.Output(result=data)
        result: dict[str, Any] = {}
        missing: list[str] = []
        defaults = input.defaults or {}
        for key, spec in input.mapping.items():
            try:
                result[key] = _mapped_value(data, spec)
            except (LookupError, ExpressionError) as exc:
                missing.append(key)
                if key in defaults:
                    result[key] = defaults[key]
                elif input.strict:
                    raise ComponentError(f"mapping '{key}': {spec!r}: {exc.args[0]}",
                                         error_type=ErrorType.VALIDATION, stage=context.stage_path,
                                         key=key, path=spec) from exc
                else:
                    result[key] = input.default
        return self.Output(result=result, fields_mapped=len(result) - len(missing), fields_missing=missing)


    def _render(self, input: Input, data: Any, context: ExecutionContext) -> Output:
        """``template`` rendered over ``data``; a top-level key that fails follows the mapping rules."""
        if not isinstance(input.template, dict):
            try:
                return self.Output(result=_render_template(input.template, data))
            except ExpressionError as exc:
                raise ComponentError(f"template: {exc}", error_type=ErrorType.VALIDATION,
                                     stage=context.stage_path) from exc
        result: dict[str, Any] = {}
        missing: list[str] = []
        defaults = input.defaults or {}
        for key, spec in input.template.items():
            try:
                result[key] = _render_template(spec, data)
            except ExpressionError as exc:
                missing.append(key)
                if key in defaults:
                    result[key] = defaults[key]
                elif input.strict:
                    raise ComponentError(f"template '{key}': {exc}", error_type=ErrorType.VALIDATION,
                                         stage=context.stage_path, key=key) from exc
                else:
                    result[key] = input.default
        # The rendered keys are also output fields: FlowMason's templates read {{upstream.<stage>.<key>}}.
        extra = {k: v for k, v in result.items() if k not in self.Output.model_fields}
        return self.Output(result=result, fields_mapped=len(result) - len(missing), fields_missing=missing, **extra)


def _render_template(template: Any, data: Any) -> Any:
    """``template`` with every string's ``{{...}}`` evaluated against ``data`` (nested to any depth)."""
    if isinstance(template, str):
        if "{{" not in template:
            return template
        names = dict(data) if isinstance(data, dict) else {}
        names["data"] = data
        return render_expressions(template, names)
    if isinstance(template, dict):
        return {key: _render_template(value, data) for key, value in template.items()}
    if isinstance(template, list):
        return [_render_template(value, data) for value in template]
    return template


def _mapped_value(data: Any, spec: Any) -> Any:
    """One mapping value: a template over ``data``, a dotted path, or (not a string) a constant."""
    if not isinstance(spec, str):
        return spec
    if "{{" in spec:
        names = dict(data) if isinstance(data, dict) else {}
        names["data"] = data
        return render_expressions(spec, names)
    return lookup_path(data, spec)


FilterOp = Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "contains", "exists", "truthy"]
_ORDERINGS = {
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
_MISSING = object()


@operator("filter", description="Pass or fail data by a condition, or keep the list items that match.")
class Filter:
    """FlowMason's filter, with this project's item filter as the alternative spelling.

    FlowMason's fields: ``data`` and a ``condition`` expression (sandboxed, see
    ``flowmasond.engine.expressions``) reading ``data`` (``filter_mode: pass_fail``) or each
    ``item`` (``filter_array``), and/or ``field_conditions`` ``{path: expected}``. flowmasond's
    own spelling: ``items`` with ``op`` against ``value`` at ``field``. A missing field counts as
    null, which no ordering matches; equality is JSON equality (``true`` is not ``1``).
    """

    class Input(ComponentInput):
        data: Any = None
        condition: str | None = None
        field_conditions: dict[str, Any] | None = None
        pass_if_missing: bool = False
        filter_mode: Literal["pass_fail", "filter_array"] = "pass_fail"
        invert: bool = False
        items: list[Any] | None = None
        field: str | None = None  # dotted path in each item; None: the item itself
        op: FilterOp | None = None
        value: Any = None

        @field_validator("condition")
        @classmethod
        def _compiles(cls, value: str | None) -> str | None:
            if value is not None:
                try:
                    compile_expression(value)
                except ExpressionError as exc:
                    raise ValueError(str(exc)) from None
            return value

        @model_validator(mode="after")
        def _value_fits_op(self) -> Any:
            if self.items is not None or self.op is not None:
                if self.items is None or self.op is None:
                    raise ValueError("'items' and 'op' go together (or use data/condition)")
                if self.op in _ORDERINGS and self.value is None:
                    raise ValueError(f"op '{self.op}' needs a value")
                if self.op == "in" and not isinstance(self.value, (list, str, dict)):
                    raise ValueError("op 'in' needs a list (or string) value")
            elif self.condition is None and self.field_conditions is None:
                raise ValueError("set condition or field_conditions (or items and op)")
            return self

    class Output(ComponentOutput):
        passed: bool
        data: Any = None
        filtered_count: int = 0
        reason: str = ""
        items: list[Any] | None = None  # the kept items (items/op spelling and filter_array)
        count: int | None = None

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        if input.op is not None:
            assert input.items is not None
            kept = [item for index, item in enumerate(input.items)
                    if _matches(_field_of(item, input.field), input.op, input.value, index, input.field, context)]
            return self.Output(passed=bool(kept), data=kept, filtered_count=len(input.items) - len(kept),
                               reason=f"{len(kept)} of {len(input.items)} items matched", items=kept,
                               count=len(kept))
        if input.filter_mode == "filter_array":
            if not isinstance(input.data, list):
                raise ComponentError(f"filter_mode filter_array needs a list as data, got {json_type_name(input.data)}",
                                     error_type=ErrorType.VALIDATION, stage=context.stage_path)
            kept = [item for item in input.data if _passes(input, {"item": item}, item, context) != input.invert]
            return self.Output(passed=bool(kept), data=kept, filtered_count=len(input.data) - len(kept),
                               reason=f"{len(kept)} of {len(input.data)} items passed", items=kept,
                               count=len(kept))
        passed = _passes(input, {"data": input.data}, input.data, context) != input.invert
        return self.Output(passed=passed, data=input.data if passed else None,
                           reason=("passed" if passed else "did not pass") + (" (inverted)" if input.invert else ""))


def _passes(input: Any, names: dict[str, Any], subject: Any, context: ExecutionContext) -> bool:
    if input.field_conditions:
        for path, expected in input.field_conditions.items():
            try:
                actual = lookup_path(subject, path)
            except LookupError:
                if not input.pass_if_missing:
                    return False
                continue
            if not json_equal(actual, expected):
                return False
    if input.condition is None:
        return True
    try:
        value = compile_expression(input.condition).evaluate(names, undefined=_MISSING, strict=False)
    except ExpressionError as exc:
        raise ComponentError(f"condition {input.condition!r}: {exc}", error_type=ErrorType.VALIDATION,
                             stage=context.stage_path) from exc
    if value is _MISSING:  # the condition reads a key the data does not have
        return input.pass_if_missing
    return truthy(value)


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


@operator("variable_set", description="Name a value: {{upstream.<stage>.value}} (or .variables.<name>).")
class VariableSet:
    """FlowMason's ``name`` / ``value`` (optionally ``extract_path`` into it), or ``variables``.

    The values become this stage's output; later stages read them from there. There is no
    shared mutable variable store (a durable run replays outputs, not mutations), so ``scope``
    and ``overwrite`` are accepted for compatibility and ``previous_value`` is always null.
    """

    class Input(ComponentInput):
        name: str | None = Field(default=None, min_length=1)
        value: Any = None
        scope: Literal["pipeline", "stage", "global", "run"] = "pipeline"
        overwrite: bool = True
        extract_path: str | None = None
        variables: dict[str, Any] = Field(default_factory=dict)

        @model_validator(mode="after")
        def _something_to_set(self) -> Any:
            if self.name is None and not self.variables and self.value is not None:
                raise ValueError("'value' needs a 'name'")
            return self

    class Output(ComponentOutput):
        variables: dict[str, Any]
        name: str | None = None
        value: Any = None
        previous_value: Any = None
        was_set: bool = False

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        variables = dict(input.variables)
        value = input.value
        if input.name is not None:
            if input.extract_path:
                try:
                    value = lookup_path(value, input.extract_path)
                except LookupError as exc:
                    raise ComponentError(f"extract_path '{input.extract_path}': {exc.args[0]}",
                                         error_type=ErrorType.VALIDATION, stage=context.stage_path) from exc
            variables[input.name] = value
        return self.Output(variables=variables, name=input.name, value=value,
                           was_set=input.name is not None or bool(variables))


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
