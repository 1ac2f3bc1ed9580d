"""Pydantic models of a ``*.pipeline.json`` file (FlowMason-compatible field names).

These are the boundary: structural validation only. Cross-stage rules (unknown dependencies,
cycles, unknown components, undeclared config keys, bad template references) live in
``flowmasond.pipelines.validation`` so that every problem of a file is reported together.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

# Template roots: a stage with one of these ids would make ``{{input.x}}`` ambiguous.
RESERVED_STAGE_IDS = frozenset({"input", "upstream", "env", "context"})


class RetryConfig(BaseModel):
    """Per-stage retry policy; delays in milliseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int = Field(default=0, ge=0, le=100)
    initial_delay_ms: int = Field(default=1000, ge=0)
    max_delay_ms: int = Field(default=30000, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    jitter: bool | float = True


class ScheduleConfig(BaseModel):
    """A cron schedule declared in a pipeline file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    cron: str = Field(min_length=1)
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    misfire: Literal["skip", "run_once", "run_all"] = "run_once"
    overlap: Literal["skip", "queue", "allow", "cancel_previous"] = "skip"


class StageConfig(BaseModel):
    """One stage of a pipeline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1)
    component_type: str = Field(min_length=1)
    name: str | None = None
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    timeout_ms: int | None = Field(default=None, gt=0)
    retry_config: RetryConfig | None = None
    on_error: Literal["propagate", "continue"] = "propagate"
    # LLM nodes (FlowMason field names): which configured provider, and per-stage overrides.
    provider: str | None = None
    llm_settings: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_component_alias(cls, data: Any) -> Any:
        # FlowMason files may say `component` instead of `component_type`.
        if isinstance(data, dict) and "component" in data and "component_type" not in data:
            data = dict(data)
            data["component_type"] = data.pop("component")
        return data

    @field_validator("depends_on")
    @classmethod
    def _no_duplicate_deps(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for dep in value:
            if dep in seen:
                raise ValueError(f"'{dep}' is listed twice")
            seen.add(dep)
        return value


class PipelineConfig(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str | None = None
    version: str = "1.0.0"
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    stages: list[StageConfig] = Field(min_length=1)
    output_stage_id: str | None = None
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    # Free-form FlowMason metadata kept for compatibility; ignored by the engine.
    tags: list[str] = Field(default_factory=list)
    category: str | None = None

    def stage(self, stage_id: str) -> StageConfig:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    # Computed once: a definition is never mutated after loading, and resume compares hashes often.
    _hash: str | None = PrivateAttr(default=None)

    def canonical_json(self) -> str:
        """Stable serialisation used for pinning and hashing a run's definition."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True,
                          separators=(",", ":"))

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: the identity a run pins."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.canonical_json().encode()).hexdigest()
        return self._hash
