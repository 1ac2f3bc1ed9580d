"""Leaf components of the generated pipelines: each attempt appends one line to a ledger file.

``gen_step`` fails its first ``fail_attempts`` attempts (a large number: always) with a message that
does not change between attempts or processes, so the run output of a killed-and-resumed run can be
compared with the uninterrupted one. ``gen_unsafe_step`` is the same, declared not safe to repeat.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentInput, operator
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

FAILURE_MESSAGE = "gen_step failure requested"


class _StepInput(ComponentInput):
    ledger: str
    value: Any = None
    fail_attempts: int = 0


def _append(path: str, entry: dict[str, Any]) -> None:
    # One O_APPEND write: lines of concurrent stages never interleave, and the line is in the
    # kernel before the stage goes on, so a SIGKILL right after cannot lose it.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


@operator("gen_step", description="Append {path, attempt, run_id, pid} to a ledger; fail the first attempts.")
class GenStep:
    """One side effect per attempt, then ``{"value": value}`` or a failure."""

    Input = _StepInput

    async def execute(self, input: _StepInput, context: ExecutionContext) -> Any:
        _append(input.ledger, {"path": context.stage_path, "attempt": context.attempt,
                               "run_id": context.run_id, "pid": os.getpid()})
        if context.attempt <= input.fail_attempts:
            raise ComponentError(FAILURE_MESSAGE, error_type=ErrorType.COMPONENT)
        return {"value": input.value}


@operator("gen_unsafe_step", description="gen_step, declared not safe to repeat after a crash.",
          safe_to_repeat=False)
class GenUnsafeStep(GenStep):
    """``gen_step`` for a side effect that must not happen twice without an operator's say."""
