"""Pydantic models of a ``*.pipeline.json`` file (FlowMason-compatible field names).

These are the boundary: structural validation only. Cross-stage rules (unknown dependencies,
cycles, unknown components, undeclared config keys, bad template references) live in
``flowmasond.pipelines.validation`` so that every problem of a file is reported together.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, field_validator,
                      model_validator)

# Template roots: a stage with one of these ids would make ``{{input.x}}`` ambiguous.
RESERVED_STAGE_IDS = frozenset({"input", "upstream", "env", "context"})
# retry_config keys FlowMason defines but flowmasond does not honour (it retries by ErrorType);
# the loader warns about them.
FLOWMASON_RETRY_IGNORED = frozenset({"retry_on_errors", "retry_on_status_codes"})


def canonical_component_name(name: str) -> str:
    """``http-request`` (FlowMason templates) and ``http_request`` name the same component."""
    return name.strip().replace("-", "_")


def normalise_stage(data: dict[str, Any]) -> dict[str, Any]:
    """A stage dict with FlowMason's spellings mapped onto this project's fields (a copy)."""
    data = dict(data)
    for alias in ("type", "component"):
        if alias in data:
            value = data.pop(alias)
            data.setdefault("component_type", value)
    if isinstance(data.get("component_type"), str):
        data["component_type"] = canonical_component_name(data["component_type"])
    mapping = data.get("input_mapping")
    if isinstance(mapping, dict):
        # FlowMason's canonical name for the component's inputs; `config` is its legacy alias.
        del data["input_mapping"]
        config = data.get("config", mapping)
        data["config"] = {**mapping, **config} if isinstance(config, dict) else config
    handling = data.get("error_handling")
    if isinstance(handling, dict):
        del data["error_handling"]
        action = handling.get("on_error")
        if action == "retry" and "retry_config" not in data:
            data["retry_config"] = {"max_retries": handling.get("max_retries", 3),
                                    "initial_delay_ms": handling.get("retry_delay", 1000)}
        elif action in ("continue", "skip") and "on_error" not in data:
            data["on_error"] = "continue"
    if "model" in data and isinstance(data["model"], str):
        settings = data.get("llm_settings")
        settings = dict(settings) if isinstance(settings, dict) else {}
        settings.setdefault("model", data.pop("model"))
        data["llm_settings"] = settings
    retry = data.get("retry_config")
    if isinstance(retry, dict) and FLOWMASON_RETRY_IGNORED & retry.keys():
        data["retry_config"] = {k: v for k, v in retry.items() if k not in FLOWMASON_RETRY_IGNORED}
    return data


class RetryConfig(BaseModel):
    """Per-stage retry policy; delays in milliseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # FlowMason's default: a stage that has a retry_config retries three times.
    max_retries: int = Field(default=3, ge=0, le=100)
    # `backoff_ms` is FlowMason's name.
    initial_delay_ms: int = Field(default=1000, ge=0, validation_alias=AliasChoices("initial_delay_ms", "backoff_ms"))
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
    # FlowMason: a disabled stage is skipped (its dependents follow the skip rules).
    enabled: bool = True
    # FlowMason: the output dependents see when the stage failed under on_error=continue.
    fallback_output: Any = None
    # FlowMason Studio and catalogue metadata; kept for round trips, ignored by the engine.
    position: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    component_package: str | None = None
    # flowmasond: this leaf stage may run on any cluster node's stage workers (None: the
    # pipeline's `distribute`). Control-flow stages always run on the run's owner.
    distribute: StrictBool | None = None  # "yes" is an error, as for component flags

    @model_validator(mode="before")
    @classmethod
    def _accept_flowmason_spellings(cls, data: Any) -> Any:
        return normalise_stage(data) if isinstance(data, dict) else data

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

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1)
    name: str | None = None
    version: str = "1.0.0"
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    # A pipeline that `extends` another may list no stages of its own (the loader merges them).
    stages: list[StageConfig] = Field(min_length=1)
    output_stage_id: str | None = None
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    # Free-form FlowMason metadata kept for compatibility; ignored by the engine.
    tags: list[str] = Field(default_factory=list)
    category: str | None = None
    # FlowMason inheritance, already resolved by the loader: the parent's id, and whether this
    # pipeline is only a base for others (an abstract pipeline is never run).
    extends: str | None = None
    abstract: bool = False
    # FlowMason `flowmason init` / Studio template fields: documentation, never executed.
    schema_uri: str | None = Field(default=None, alias="$schema")
    sample_input: Any = None
    example_input: Any = None
    difficulty: str | None = None
    use_cases: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] | None = None
    compositions: list[str] = Field(default_factory=list)
    # flowmasond: the leaf stages of this pipeline may run on any cluster node's stage workers
    # (a stage's own `distribute` wins). Without [cluster] every stage runs locally.
    distribute: StrictBool | None = None  # "yes" is an error, as for component flags

    def stage(self, stage_id: str) -> StageConfig:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    # Computed once: a definition is never mutated after loading, and resume compares hashes often.
    _hash: str | None = PrivateAttr(default=None)
    _canonical: str | None = PrivateAttr(default=None)

    def canonical_json(self) -> str:
        """Stable serialisation used for pinning and hashing a run's definition.

        Computed once, like the hash: every run of the pipeline pins it (1,000 schedules firing
        at once dumped their definitions 1,000 times on the event loop).
        """
        if self._canonical is None:
            data = self.model_dump(mode="json", by_alias=True)
            # An unset `distribute` is left out, so that definitions written before the field
            # existed keep their hash (a pinned run resumes against the same identity).
            for holder in (data, *data["stages"]):
                if holder.get("distribute") is None:
                    holder.pop("distribute", None)
            self._canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return self._canonical

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: the identity a run pins."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.canonical_json().encode()).hexdigest()
        return self._hash
