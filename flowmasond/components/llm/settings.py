"""A stage's ``llm_settings`` (FlowMason's field names), validated.

The pipeline validator can check them at load time with ``LLMSettings.model_validate``; nodes check
them again per call so a stage built without the validator still fails clearly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

if TYPE_CHECKING:
    from flowmasond.engine.context import ExecutionContext


class LLMSettings(BaseModel):
    """Per-stage overrides of the provider's defaults; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    top_p: float | None = Field(default=None, gt=0, le=1)


def stage_settings(context: ExecutionContext) -> LLMSettings:
    """The stage's ``llm_settings``, or a ``ComponentError`` (CONFIGURATION) naming the bad key."""
    raw = context.stage.llm_settings if context.stage is not None else None
    try:
        return LLMSettings.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ComponentError(f"invalid llm_settings: {problems}", error_type=ErrorType.CONFIGURATION,
                             stage=context.stage_path, field="llm_settings") from None
