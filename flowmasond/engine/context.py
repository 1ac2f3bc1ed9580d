"""What a component sees of the run it executes in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

from flowmasond.engine.cancellation import CancellationToken

if TYPE_CHECKING:
    from flowmasond.engine.models import StageConfig


@dataclass(slots=True, kw_only=True)
class ExecutionContext:
    """Per-attempt context handed to ``Component.execute``."""

    run_id: str
    pipeline_id: str
    stage_id: str
    stage_path: str  # unique within the run: 'fetch', 'loop/3/transform', 'tc/cleanup'
    attempt: int  # 1-based, counted across retries *and* across resumes
    cancellation: CancellationToken
    stage: StageConfig | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)  # loop variables etc.
    services: Mapping[str, Any] = field(default_factory=dict)  # e.g. 'providers' for LLM nodes
    logger: Any = None

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and resumes of this stage: hand it to external systems."""
        return f"{self.run_id}/{self.stage_path}"
