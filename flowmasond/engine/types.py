"""Plain value types shared by the engine, the journal and the API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class ErrorType(str, Enum):
    """Classification of every stage failure; decides whether a retry can help."""

    VALIDATION = "VALIDATION"  # input/output did not match the component's model; retrying won't help
    CONFIGURATION = "CONFIGURATION"  # the stage or daemon is set up wrongly (unknown provider, bad template)
    TIMEOUT = "TIMEOUT"  # an attempt ran past its timeout
    CONNECTIVITY = "CONNECTIVITY"  # network or peer unreachable; usually transient
    RATE_LIMIT = "RATE_LIMIT"  # the peer asked us to slow down (HTTP 429)
    PERMISSION = "PERMISSION"  # the OS or a peer refused access
    COMPONENT = "COMPONENT"  # the component itself reported a failure (non-zero exit, HTTP 4xx...)
    CANCELLATION = "CANCELLATION"  # the run was cancelled while the stage was in flight
    STORAGE = "STORAGE"  # the journal could not commit
    UNKNOWN = "UNKNOWN"  # an unexpected exception inside a component

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset({ErrorType.TIMEOUT, ErrorType.CONNECTIVITY, ErrorType.RATE_LIMIT,
                        ErrorType.COMPONENT, ErrorType.UNKNOWN})


class StageStatus(str, Enum):
    """The outcome of one stage execution."""

    SUCCESS = "success"  # finished and produced an output
    FAILED = "failed"  # failed after all attempts
    SKIPPED = "skipped"  # not run: a branch not taken, all dependencies skipped, or a return happened


class RunStatus(str, Enum):
    """Lifecycle of a run as the daemon sees it."""

    PENDING = "pending"  # accepted, waiting for a concurrency slot
    RUNNING = "running"  # executing
    SUCCEEDED = "succeeded"  # finished; output available
    FAILED = "failed"  # a stage failed and the error propagated
    CANCELLED = "cancelled"  # cancelled by a user; resumable
    INTERRUPTED = "interrupted"  # the daemon stopped or died mid-run, or an unsafe stage needs a decision

    @property
    def finished(self) -> bool:
        """True for states in which nothing is executing."""
        return self not in (RunStatus.PENDING, RunStatus.RUNNING)

    @property
    def resumable(self) -> bool:
        """States from which ``resume`` continues the run."""
        return self in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)


MIXED = "mixed"  # a sum over several providers or models


def _merge_name(a: str | None, b: str | None) -> str | None:
    # None is neutral so that summing from an empty UsageMetrics keeps the provider/model name.
    if a is None:
        return b
    if b is None:
        return a
    return a if a == b else MIXED


@dataclass(slots=True)
class UsageMetrics:
    """Resources one stage (or, summed, one run) consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: float = 0.0
    provider: str | None = None
    model: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: UsageMetrics) -> UsageMetrics:
        return UsageMetrics(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            duration_ms=self.duration_ms + other.duration_ms,
            provider=_merge_name(self.provider, other.provider),
            model=_merge_name(self.model, other.model),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "provider": self.provider,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UsageMetrics:
        if not data:
            return cls()
        return cls(
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            cost_usd=float(data.get("cost_usd") or 0.0),
            duration_ms=float(data.get("duration_ms") or 0.0),
            provider=data.get("provider"),
            model=data.get("model"),
        )


@dataclass(slots=True)
class ComponentResult:
    """The committed outcome of one stage execution at one stage path."""

    stage_id: str
    component_type: str
    status: StageStatus
    output: Any = None
    error: str | None = None
    error_type: ErrorType | None = None
    usage: UsageMetrics = field(default_factory=UsageMetrics)
    attempts: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    # A failure the pipeline chose to live with (on_error=continue, a foreach that does not break,
    # a trycatch that caught it). Unhandled failures are retried when a failed run is resumed.
    handled: bool = False

    @property
    def ok(self) -> bool:
        return self.status is StageStatus.SUCCESS

    def with_(self, **changes: Any) -> ComponentResult:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage_id": self.stage_id,
            "component_type": self.component_type,
            "status": self.status.value,
            "output": self.output,
            "error": self.error,
            "error_type": self.error_type.value if self.error_type else None,
            "usage": self.usage.to_dict(),
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "handled": self.handled,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComponentResult:
        return cls(
            stage_id=data["stage_id"],
            component_type=data["component_type"],
            status=StageStatus(data["status"]),
            output=data.get("output"),
            error=data.get("error"),
            error_type=ErrorType(data["error_type"]) if data.get("error_type") else None,
            usage=UsageMetrics.from_dict(data.get("usage")),
            attempts=int(data.get("attempts") or 0),
            started_at=float(data.get("started_at") or 0.0),
            finished_at=float(data.get("finished_at") or 0.0),
            handled=bool(data.get("handled")),
        )

    @classmethod
    def skipped(cls, stage_id: str, component_type: str, reason: str) -> ComponentResult:
        now = time.time()
        return cls(stage_id=stage_id, component_type=component_type, status=StageStatus.SKIPPED,
                   output=None, error=reason, started_at=now, finished_at=now)
