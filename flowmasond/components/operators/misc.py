"""Small operators: ``logger``, ``sleep``, and ``fail`` (for tests and examples of retry/trycatch)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

import structlog
from pydantic import Field, field_validator

from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentInput, ComponentOutput, operator
from flowmasond.engine.interfaces import ErrorType
from flowmasond.engine.stage_logs import sink_of
from flowmasond.errors import ComponentError

LOGGER_NAME = "flowmasond.stage"


@operator("logger", description="Log a message (and optional data) with the run and stage bound.")
class Logger:
    """Log through structlog with run_id, pipeline_id, stage_id, stage_path and attempt bound."""

    class Input(ComponentInput):
        message: str
        level: Literal["debug", "info", "warning", "error"] = "info"
        data: Any = None
        tags: dict[str, str] | None = None  # bound to the log line
        passthrough: Any = None  # returned unchanged, so the logger can sit inside a chain

    class Output(ComponentOutput):
        message: str
        level: str
        logged: bool = True
        log_id: str  # <run id>/<stage path>/<attempt>: unique, and stable for one attempt
        passthrough: Any = None

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        # The engine may hand over a logger already bound to more (daemon, pipeline file...).
        base = context.logger if hasattr(context.logger, "bind") else structlog.get_logger(LOGGER_NAME)
        log = base.bind(run_id=context.run_id, pipeline_id=context.pipeline_id,
                        stage_id=context.stage_id, stage_path=context.stage_path, attempt=context.attempt)
        fields: dict[str, Any] = {"data": input.data} if input.data is not None else {}
        if input.tags:
            fields["tags"] = dict(input.tags)
        getattr(log, input.level)(input.message, **fields)
        sink = sink_of(context)
        if sink is not None:
            extra = f" {json.dumps(input.data, default=str)}" if input.data is not None else ""
            sink.write(context.run_id, context.stage_path, "log", f"{input.level}: {input.message}{extra}\n")
        return self.Output(message=input.message, level=input.level, passthrough=input.passthrough,
                           log_id=f"{context.idempotency_key}/{context.attempt}")


@operator("sleep", description="Wait a number of seconds (cancellable at once).")
class Sleep:
    """Sleep ``seconds``; a timeout or cancellation interrupts it immediately."""

    class Input(ComponentInput):
        seconds: float = Field(ge=0)

    class Output(ComponentOutput):
        slept_s: float

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        started = time.monotonic()
        await asyncio.sleep(input.seconds)
        return self.Output(slept_s=time.monotonic() - started)


@operator("fail", description="Fail with a chosen ErrorType, optionally only for the first attempts.")
class Fail:
    """Raise ``ComponentError(message, error_type)`` while ``attempt <= fail_attempts`` (always if None).

    With ``fail_attempts: 2`` and two retries, a pipeline shows retry succeeding on attempt 3.
    """

    class Input(ComponentInput):
        message: str = "failure requested"
        error_type: ErrorType = ErrorType.COMPONENT
        fail_attempts: int | None = Field(default=None, ge=0)

        @field_validator("error_type", mode="before")
        @classmethod
        def _by_name(cls, value: Any) -> Any:
            return value.strip().upper() if isinstance(value, str) else value

    class Output(ComponentOutput):
        attempt: int

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        if input.fail_attempts is None or context.attempt <= input.fail_attempts:
            raise ComponentError(input.message, error_type=input.error_type, stage=context.stage_path,
                                 attempt=context.attempt)
        return self.Output(attempt=context.attempt)
