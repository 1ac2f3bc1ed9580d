"""Jinja2's sandbox as FlowMason expressions use it: compiling one expression, and evaluating it.

Imported by ``flowmasond.engine.expressions`` when the first expression is compiled (the rules are
described there), so that a process that never compiles one does not import Jinja2.
"""

from __future__ import annotations

import datetime
import functools
import json
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowmasond.engine.expressions import (
    MAX_EXPONENT,
    MAX_RANGE,
    MAX_REPEAT_LEN,
    MAX_RESULT_BITS,
    ExpressionError,
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _safe_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise SecurityError(f"range() longer than {MAX_RANGE} items is refused")
    return result


# The functions an expression may call, besides methods of plain values and Jinja filters.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "now": _now,
    "len": len, "str": str, "int": int, "float": float, "bool": bool, "abs": abs, "round": round,
    "min": min, "max": max, "sum": sum, "sorted": sorted, "list": list, "range": _safe_range,
    "json": lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str),
}


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with mapping keys preferred over methods and costly operators bounded."""

    intercepted_binops = frozenset({"**", "*"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `{{data.items}}` means the key "items", not dict.items: FlowMason data is JSON.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"an exponent above {MAX_EXPONENT} is refused")
            if isinstance(left, int) and isinstance(right, int) \
                    and left.bit_length() * abs(right) > MAX_RESULT_BITS:
                raise SecurityError(f"a power above {MAX_RESULT_BITS} bits is refused")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) \
                    and len(seq) * max(count, 0) > MAX_REPEAT_LEN:
                raise SecurityError(f"a repetition longer than {MAX_REPEAT_LEN} is refused")
        return operator.mul(left, right)


def _environment() -> _Environment:
    env = _Environment(undefined=ChainableUndefined)
    env.globals.clear()
    env.globals.update(FUNCTIONS)
    # Python spellings FlowMason's conditions use: `x is None`, `x is True`.
    env.tests["None"] = env.tests["none"]
    env.tests["True"] = env.tests["true"]
    env.tests["False"] = env.tests["false"]
    return env


_ENV = _environment()


# FlowMason stage ids contain hyphens (`parse-alert`), which an expression would read as a
# subtraction: `upstream.parse-alert.severity` is rewritten to `upstream['parse-alert'].severity`.
_HYPHENATED_STAGE = re.compile(r"(?<![\w.])upstream\.([A-Za-z_]\w*(?:-\w+)+)")



def compile_source(source: str) -> tuple[Callable[[Mapping[str, Any], Any, bool], Any], frozenset[str],
                                         frozenset[str]]:
    """``source`` compiled: its evaluator (``run`` bound to it), the free names and the stage ids it reads."""
    code = _HYPHENATED_STAGE.sub(lambda m: f"upstream[{m.group(1)!r}]", source)
    try:
        ast = _ENV.parse("{{ " + code + " }}")
        fn = _ENV.compile_expression(code, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"invalid expression: {exc.message}") from None
    names = frozenset(node.name for node in ast.find_all(nodes.Name) if node.ctx == "load") - FUNCTIONS.keys()
    # Stage ids read as `upstream.<id>` or `upstream['<id>']`, so validation can check them.
    stages: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node, (nodes.Getattr, nodes.Getitem)):
            continue
        if isinstance(node.node, nodes.Name) and node.node.name == "upstream":
            if isinstance(node, nodes.Getattr):
                stages.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                stages.add(node.arg.value)
    return functools.partial(run, fn), names, frozenset(stages)


def run(fn: Callable[..., Any], names: Mapping[str, Any], undefined: Any, strict: bool) -> Any:
    """The value of a compiled expression (see ``Expression.evaluate``)."""
    try:
        value = fn(**names)
    except SecurityError as exc:
        raise ExpressionError(f"refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        if not strict:
            return undefined  # `item.qty > 2` on an item without qty
        raise ExpressionError(f"undefined value: {exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None
    if isinstance(value, ChainableUndefined):
        if not strict:
            return undefined
        hint = getattr(value, "_undefined_hint", None) or "a name or key that does not exist"
        raise ExpressionError(f"the expression is undefined ({hint})")
    return value
