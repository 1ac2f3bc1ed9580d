"""Expressions inside ``{{ }}`` and FlowMason's condition strings, in Jinja2's sandbox.

FlowMason's documentation writes ``{{now()}}``, ``{{len(x)}}``, ``{{a or b}}`` and
``{{x if c else y}}`` and its filter/router/foreach take Python-looking conditions such as
``item.get('status') == 'active'``. They are compiled with Jinja2's
``ImmutableSandboxedEnvironment.compile_expression`` (never ``eval``): attributes starting with
``_`` are refused, mutating methods of lists and dicts are refused, and this module also bounds
``range``, ``**`` and repetition so that an expression cannot exhaust memory or CPU.

The sandbox itself (and Jinja2) lives in ``flowmasond.engine.sandbox``, imported when the first
expression is compiled: a process whose pipeline has no template does not import Jinja2 (issue 15).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

# Bounds that keep one expression cheap: a range, a power's exponent and a repeated sequence.
MAX_RANGE = 10_000
MAX_EXPONENT = 1_000
MAX_REPEAT_LEN = 1_000_000
MAX_RESULT_BITS = 100_000
# Longest expression source accepted (a template is text in a pipeline file, not a program).
MAX_SOURCE_CHARS = 2_000
_CACHE_SIZE = 4096


class ExpressionError(ValueError):
    """An expression that cannot compile, or that failed or was refused while evaluating."""


class Expression:
    """One compiled expression and the free names it reads."""

    __slots__ = ("_run", "names", "source", "stages")
    _run: Callable[[Mapping[str, Any], Any, bool], Any]
    names: frozenset[str]
    stages: frozenset[str]
    source: str

    def __init__(self, source: str) -> None:
        if len(source) > MAX_SOURCE_CHARS:
            raise ExpressionError(f"expression longer than {MAX_SOURCE_CHARS} characters")
        from flowmasond.engine import sandbox  # Jinja2: imported by the first expression compiled

        self._run, self.names, self.stages = sandbox.compile_source(source)
        self.source = source

    def evaluate(self, names: Mapping[str, Any], *, undefined: Any = None, strict: bool = True) -> Any:
        """The value of the expression; ``ExpressionError`` when it fails.

        An expression whose value is undefined (a missing key or name) is an error when
        ``strict``, else ``undefined`` is returned (conditions: a missing key is false).
        """
        return self._run(names, undefined, strict)


@lru_cache(maxsize=_CACHE_SIZE)
def compile_expression(source: str) -> Expression:
    """The compiled ``source`` (cached: templates are evaluated on every stage execution)."""
    return Expression(source)


def evaluate(source: str, names: Mapping[str, Any]) -> Any:
    """Compile (cached) and evaluate ``source`` against ``names``."""
    return compile_expression(source).evaluate(names)


_FALSE_STRINGS = frozenset({"", "false", "0"})


def truthy(value: Any) -> bool:
    """Condition semantics: the strings "false", "0" and "" are false; otherwise Python truth."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)
