"""Template resolution for stage configs: ``{{input.a}}``, ``{{upstream.s.f}}``, ``{{s.output.f}}``,
``{{env.VAR}}`` and ``{{context.key}}``; list items as ``xs.0`` or ``xs[0]``; anything else inside
the braces (``{{len(x)}}``, ``{{a or b}}``, ``{{x if c else y}}``, ``{{now()}}``) is an expression
evaluated in Jinja2's sandbox (``flowmasond.engine.expressions``).

This is on the engine's hot path (every stage, every foreach iteration), so each distinct template
string is parsed once (``_compile`` is cached) and a string without ``{{`` is returned after one
substring test. A string that is exactly one template keeps the referenced value's native type;
in mixed text every non-string value is rendered as compact JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel

from flowmasond.engine.expressions import Expression, ExpressionError, compile_expression
from flowmasond.errors import TemplateError

RefKind = Literal["input", "upstream", "seed", "env", "context", "expr", "invalid"]
Location = tuple[str | int, ...]  # dict keys and list indexes leading to a value in a config
ROOTS = ("input", "upstream", "env", "context")

# Inner text may not hold braces, so `{{{x}}}` finds `{{x}}` and stray single braces stay literal.
_TEMPLATE_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
# A dotted path (`a.b.0`, `a.b[1]`): no whitespace, operators, calls or quotes. Anything else is
# an expression.
_PATHISH = re.compile(r"[^\s(){}'\"+*/%<>=!,|~?:&^@#]+")
_BRACKET_INDEX = re.compile(r"\[(-?\d+)\]")
# Distinct template strings in a daemon are bounded by its pipeline files; this leaves ample room.
_COMPILE_CACHE_SIZE = 8192
# Enough keys to spot a typo in an error message without dumping a huge mapping.
_KEYS_SHOWN = 12


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """One ``{{...}}`` found in a config.

    ``root`` is ``input``/``upstream``/``env``/``context``, or the stage id for the seed's
    ``{{<stage>.output...}}`` form (``kind`` is then ``seed``). ``stage`` is the referenced stage
    for the upstream and seed forms. ``path`` holds the segments after the root (after the stage
    id for upstream, after ``output`` for seed). ``error`` is set when the reference can never
    resolve (unknown root, empty segment...); ``kind`` is then ``invalid``.
    """

    text: str
    kind: RefKind
    root: str
    stage: str | None
    path: tuple[str, ...]
    error: str | None = None
    # Each segment pre-parsed as a list index (None when not an integer), so lookups never re-parse.
    _indexes: tuple[int | None, ...] = field(default=(), repr=False, compare=False)
    # kind "expr": the compiled expression; `names` are the free names it reads.
    expression: Expression | None = field(default=None, repr=False, compare=False)
    names: frozenset[str] = field(default=frozenset(), repr=False, compare=False)


@dataclass(slots=True)
class TemplateScope:
    """What templates resolve against for one stage execution."""

    input: Any
    # stage id -> that stage's output; None when the stage was skipped or failed-and-continued.
    upstream: Mapping[str, Any]
    env: Mapping[str, str]
    # run_id, stage_id, pipeline_id, attempt, loop variables (item, index or custom names), ...
    context: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    # Literal text and references in order; `single` is set when the whole string is one template.
    parts: tuple[str | TemplateRef, ...]
    single: TemplateRef | None


class _Unresolved(Exception):
    """Internal: carries a failed lookup up through the config walk, collecting its location."""

    def __init__(self, text: str, detail: str) -> None:
        super().__init__(detail)
        self.text = text
        self.detail = detail
        self.where: list[str] = []


def is_template(value: Any) -> bool:
    """Whether ``value`` is a string holding at least one ``{{...}}`` template."""
    if not isinstance(value, str) or "{{" not in value:
        return False
    return any(isinstance(part, TemplateRef) for part in _compile(value).parts)


def contains_template(value: Any) -> bool:
    """Whether ``value`` (a string, or a dict/list nested to any depth) holds a template."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(contains_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_template(v) for v in value)
    return False


def references(value: Any) -> list[TemplateRef]:
    """Every template in ``value`` (nested dicts and lists walked), in document order."""
    return [ref for _, ref in walk_references(value)]


def walk_references(value: Any, where: Location = ()) -> Iterator[tuple[Location, TemplateRef]]:
    """Like ``references`` but with each template's location (dict keys and list indexes)."""
    if isinstance(value, str):
        if "{{" in value:
            for part in _compile(value).parts:
                if isinstance(part, TemplateRef):
                    yield where, part
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk_references(item, (*where, str(key)))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from walk_references(item, (*where, i))


def resolve(value: Any, scope: TemplateScope, *, stage: str | None = None,
            shell: tuple[str, str] | None = None, defer: frozenset[str] = frozenset()) -> Any:
    """Resolve every template in ``value`` (a string, or dicts/lists nested to any depth).

    Containers are always copied, so a component can never mutate the pipeline's own config.
    ``shell`` = (command field, env field) of a component whose string command runs through a
    shell: see ``_resolve_shell_command``. A string holding a template that reads one of the
    ``defer`` roots (``{{data.x}}`` in a ``json_transform``) is left as it is, for the component
    to evaluate. Raises ``TemplateError`` naming the template, the missing segment and the config
    field.
    """
    try:
        if shell is not None and isinstance(value, Mapping):
            return _resolve_with_shell_command(value, scope, *shell)
        if defer:
            return _resolve_deferring(value, scope, defer)
        return _resolve(value, scope)
    except _Unresolved as exc:
        field_path = ".".join(reversed(exc.where)) or None
        raise TemplateError(f"{exc.text}: {exc.detail}", stage=stage, field=field_path) from None


def _resolve(value: Any, scope: TemplateScope) -> Any:
    kind = type(value)
    if kind is str:
        if "{{" not in value:
            return value
        return _render(_compile(value), scope)
    if kind in _SCALARS:
        return value
    if kind is dict or isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            try:
                out[key] = _resolve(item, scope)
            except _Unresolved as exc:
                exc.where.append(str(key))
                raise
        return out
    if kind is list or isinstance(value, tuple):
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_resolve(item, scope))
            except _Unresolved as exc:
                exc.where.append(str(i))
                raise
        return items
    if isinstance(value, str):  # a str subclass
        return _resolve(str(value), scope)
    return value


# -- shell commands ----------------------------------------------------------------------------
#
# A template value pasted into a string that `/bin/sh -c` parses would be shell syntax: the run
# input `bob; rm -rf ~` would run. So in a string command no value is ever pasted: each template
# becomes a reference to an environment variable of the child (FLOWMASON_TEMPLATE_<n>) holding the
# value. The shell never parses the result of a parameter expansion as syntax, in any context, so
# the value arrives as data whatever it holds. The reference is written for the quoting context the
# template sits in (plain, '...' or "..."), so that it is exactly one word, or part of the
# author's quoted word. Were the context misjudged (a quote inside `$(...)`, a heredoc), the worst
# outcome is word splitting of the value, never its execution.

SHELL_TEMPLATE_PREFIX = "FLOWMASON_TEMPLATE_"

_PLAIN, _SINGLE, _DOUBLE = "plain", "single", "double"


def _resolve_with_shell_command(config: Mapping[str, Any], scope: TemplateScope, command_key: str,
                                env_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    values: dict[str, str] = {}
    for key, item in config.items():
        try:
            if key == command_key and type(item) is str and "{{" in item:
                out[key] = _render_shell(_compile(item), scope, values)
            else:
                out[key] = _resolve(item, scope)
        except _Unresolved as exc:
            exc.where.append(str(key))
            raise
    if values:
        env = out.get(env_key)
        # Set last: a stage's own env entry cannot replace a value its command refers to.
        out[env_key] = {**env, **values} if isinstance(env, Mapping) else ({**values} if env is None else env)
    return out


def _render_shell(compiled: _Compiled, scope: TemplateScope, values: dict[str, str]) -> Any:
    if compiled.single is not None:
        value = _lookup(compiled.single, scope)
        if isinstance(value, (list, tuple)):
            return list(value)  # a whole argv: the component runs it without a shell
    chunks: list[str] = []
    state, escaped = _PLAIN, False
    for part in compiled.parts:
        if isinstance(part, str):
            chunks.append(part)
            state, escaped = _shell_state_after(part, state)
            continue
        if escaped:
            # The backslash would apply to the first character of the reference and unbalance it.
            raise _Unresolved(part.text, "a template may not follow a backslash in a shell command")
        name = f"{SHELL_TEMPLATE_PREFIX}{len(values) + 1}"
        values[name] = _as_text(_lookup(part, scope))
        if state == _DOUBLE:
            chunks.append("${" + name + "}")
        elif state == _SINGLE:
            chunks.append("'\"${" + name + "}\"'")
        else:
            chunks.append('"${' + name + '}"')
    return "".join(chunks)


def _shell_state_after(text: str, state: str) -> tuple[str, bool]:
    """The quoting state (plain, single, double) after ``text``, starting in ``state``, and whether
    a backslash at its end escapes what follows."""
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif state == _SINGLE:
            if char == "'":
                state = _PLAIN
        elif char == "\\":
            escaped = True
        elif state == _DOUBLE:
            if char == '"':
                state = _PLAIN
        elif char == "'":
            state = _SINGLE
        elif char == '"':
            state = _DOUBLE
    return state, escaped


def _resolve_deferring(value: Any, scope: TemplateScope, defer: frozenset[str]) -> Any:
    if isinstance(value, str):
        return value if reads_roots(value, defer) else _resolve(value, scope)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            try:
                out[key] = _resolve_deferring(item, scope, defer)
            except _Unresolved as exc:
                exc.where.append(str(key))
                raise
        return out
    if isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_resolve_deferring(item, scope, defer))
            except _Unresolved as exc:
                exc.where.append(str(i))
                raise
        return items
    return value


def reads_roots(text: str, roots: frozenset[str]) -> bool:
    """Whether a template in ``text`` reads one of ``roots`` (as a path root or an expression name)."""
    if "{{" not in text:
        return False
    for part in _compile(text).parts:
        if isinstance(part, TemplateRef) and (part.root in roots or part.names & roots):
            return True
    return False


def _render(compiled: _Compiled, scope: TemplateScope) -> Any:
    if compiled.single is not None:
        return _lookup(compiled.single, scope)
    chunks = []
    for part in compiled.parts:
        if isinstance(part, str):
            chunks.append(part)
        else:
            chunks.append(_as_text(_lookup(part, scope)))
    return "".join(chunks)


def _as_text(value: Any) -> str:
    if type(value) is str:
        return value
    return _ENCODER.encode(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


_SCALARS = frozenset({int, float, bool, type(None)})
# One encoder for all rendering: json.dumps with options builds a new encoder on every call.
# Non-ASCII stays readable because rendered text usually lands in prompts, messages and commands.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)


# -- parsing ---------------------------------------------------------------------------------


@lru_cache(maxsize=_COMPILE_CACHE_SIZE)
def _compile(text: str) -> _Compiled:
    parts: list[str | TemplateRef] = []
    pos = 0
    for match in _TEMPLATE_RE.finditer(text):
        if match.start() > pos:
            parts.append(text[pos:match.start()])
        parts.append(_parse_ref(match.group(0), match.group(1)))
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    single = parts[0] if len(parts) == 1 and isinstance(parts[0], TemplateRef) else None
    return _Compiled(parts=tuple(parts), single=single)


def _parse_ref(text: str, inner: str) -> TemplateRef:
    if not inner:
        return _invalid(text, "", "empty template")
    if not _PATHISH.fullmatch(inner) or "[" in _BRACKET_INDEX.sub("", inner) or "]" in _BRACKET_INDEX.sub("", inner):
        return _parse_expression(text, inner)
    segments = tuple(_BRACKET_INDEX.sub(r".\1", inner).split("."))
    if any(not s.strip() for s in segments):
        return _invalid(text, segments[0], "empty path segment")
    root, rest = segments[0], segments[1:]
    if root == "input":
        return _ref(text, "input", root, None, rest)
    if root == "context":
        return _ref(text, "context", root, None, rest)
    if root == "upstream":
        if not rest:
            return _invalid(text, root, "'upstream' needs a stage id: {{upstream.<stage>.<field>}}")
        return _ref(text, "upstream", root, rest[0], rest[1:])
    if root == "env":
        if len(rest) != 1:
            return _invalid(text, root, "'env' takes exactly one variable name: {{env.VAR}}")
        return _ref(text, "env", root, None, rest)
    if len(rest) >= 1 and rest[0] == "output":
        return _ref(text, "seed", root, root, rest[1:])
    return _invalid(text, root, f"unknown root '{root}' (expected input, upstream, env, context, "
                                "or <stage>.output)")


def _parse_expression(text: str, inner: str) -> TemplateRef:
    try:
        expression = compile_expression(inner)
    except ExpressionError as exc:
        return _invalid(text, inner.split(".", 1)[0], str(exc))
    return TemplateRef(text=text, kind="expr", root="", stage=None, path=(), expression=expression,
                       names=expression.names)


def _ref(text: str, kind: RefKind, root: str, stage: str | None, path: tuple[str, ...]) -> TemplateRef:
    return TemplateRef(text=text, kind=kind, root=root, stage=stage, path=path,
                       _indexes=tuple(_as_index(s) for s in path))


def _invalid(text: str, root: str, error: str) -> TemplateRef:
    return TemplateRef(text=text, kind="invalid", root=root, stage=None, path=(), error=error)


def _as_index(segment: str) -> int | None:
    try:
        return int(segment)
    except ValueError:
        return None


# -- lookup ----------------------------------------------------------------------------------

_MISSING = object()


def _lookup(ref: TemplateRef, scope: TemplateScope) -> Any:
    kind = ref.kind
    if kind == "input":
        return _walk(ref, scope.input, "input")
    if kind == "upstream" or kind == "seed":
        stage = ref.stage
        assert stage is not None
        output = scope.upstream.get(stage, _MISSING)
        if output is _MISSING:
            raise _Unresolved(ref.text, f"no output from stage '{stage}' in this run (unknown stage, "
                                        "or it has not run yet: is it in depends_on?)")
        if output is None and ref.path:
            raise _Unresolved(ref.text, f"stage '{stage}' has no output (it was skipped, or it failed "
                                        f"and the pipeline continued), so '{ref.path[0]}' cannot be read")
        return _walk(ref, output, f"upstream.{stage}")
    if kind == "env":
        name = ref.path[0]
        value = scope.env.get(name)
        if value is None:
            # An allow-listed view (flowmasond.environment) explains a name it hides.
            describe = getattr(scope.env, "describe_missing", None)
            raise _Unresolved(ref.text, describe(name) if describe is not None
                              else f"environment variable '{name}' is not set")
        return value
    if kind == "context":
        if ref.path and ref.path[0] not in scope.context:
            raise _Unresolved(ref.text, f"context has no '{ref.path[0]}' (available: "
                                        f"{_keys_hint(scope.context)})")
        return _walk(ref, scope.context, "context")
    if kind == "expr":
        return _evaluate(ref, scope)
    raise _Unresolved(ref.text, ref.error or "invalid template")


def _evaluate(ref: TemplateRef, scope: TemplateScope) -> Any:
    assert ref.expression is not None
    try:
        return ref.expression.evaluate(_names_for(ref.names, scope))
    except ExpressionError as exc:
        raise _Unresolved(ref.text, str(exc)) from None


def evaluate_expression(source: str, scope: TemplateScope, extra: Mapping[str, Any] | None = None) -> Any:
    """A FlowMason expression field (``condition_expression``...) evaluated in a stage's scope.

    ``extra`` adds names (``value``, ``item``). An undefined result (a missing key) is None, so
    a condition on a missing key is false. Raises ``ExpressionError``.
    """
    expression = compile_expression(source)
    names = _names_for(expression.names, scope)
    if extra:
        names.update({k: v for k, v in extra.items() if k in expression.names})
    return expression.evaluate(names, strict=False)


def _names_for(wanted: frozenset[str], scope: TemplateScope) -> dict[str, Any]:
    """The values of the free names of an expression: the roots, then stages, then context."""
    names: dict[str, Any] = {}
    for name in wanted:
        if name == "input":
            names[name] = scope.input
        elif name == "upstream":
            names[name] = scope.upstream
        elif name == "env":
            names[name] = scope.env
        elif name == "context":
            names[name] = scope.context
        elif name in scope.upstream:
            names[name] = {"output": scope.upstream[name]}  # the seed's {{<stage>.output.x}}
        elif name in scope.context:
            names[name] = scope.context[name]  # loop variables: {{item.name}}
    return names


def _walk(ref: TemplateRef, value: Any, where: str) -> Any:
    current = value
    for segment, index in zip(ref.path, ref._indexes, strict=True):
        kind = type(current)
        if kind is dict or (kind is not list and isinstance(current, Mapping)):
            found = current.get(segment, _MISSING)
            if found is _MISSING:
                raise _Unresolved(ref.text, f"key '{segment}' not found in {where} "
                                            f"(keys: {_keys_hint(current)})")
            current = found
        elif kind is list or isinstance(current, tuple):
            if index is None:
                raise _Unresolved(ref.text, f"'{segment}' is not a list index ({where} is a list of "
                                            f"{len(current)} items)")
            if not -len(current) <= index < len(current):
                raise _Unresolved(ref.text, f"index {index} out of range (list has {len(current)} items)")
            current = current[index]
        elif current is None:
            raise _Unresolved(ref.text, f"{where} is null, so '{segment}' cannot be read")
        elif isinstance(current, BaseModel):
            extra = current.__pydantic_extra__ or {}
            if segment in type(current).model_fields:
                current = getattr(current, segment)
            elif segment in extra:
                current = extra[segment]
            else:
                raise _Unresolved(ref.text, f"key '{segment}' not found in {where}")
        else:
            raise _Unresolved(ref.text, f"{where} is {_type_name(current)}, so '{segment}' cannot be read")
        where = f"{where}.{segment}"
    return current


def _keys_hint(mapping: Mapping[str, Any]) -> str:
    keys = [str(k) for k in mapping]
    if not keys:
        return "none"
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _KEYS_SHOWN else "")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def render_expressions(text: str, names: Mapping[str, Any]) -> Any:
    """``text`` with every ``{{...}}`` evaluated as an expression over ``names`` alone.

    For components that evaluate their own templates (``json_transform`` reads ``{{data.x}}``).
    A string that is exactly one template keeps the value's native type. Raises
    ``ExpressionError``.
    """
    parts: list[Any] = []
    pos = 0
    for match in _TEMPLATE_RE.finditer(text):
        parts.append(text[pos:match.start()])
        parts.append(compile_expression(match.group(1)).evaluate(names))
        pos = match.end()
    parts.append(text[pos:])
    if len(parts) == 3 and parts[0] == "" and parts[2] == "":
        return parts[1]
    return "".join(p if i % 2 == 0 else _as_text(p) for i, p in enumerate(parts))
