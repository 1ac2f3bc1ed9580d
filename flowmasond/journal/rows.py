"""Plain values the journal returns, and the JSON encoding of what it stores."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from flowmasond.engine.interfaces import RunStatus, UsageMetrics

# Compact and stable: the journal stores many small documents.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Encode a JSON document for a TEXT column."""
    return _ENCODER.encode(value)


def dumps_or_none(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


def loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    """One run as the journal holds it."""

    run_id: str
    pipeline_id: str
    pipeline_hash: str  # the pinned definition (pipelines_pinned.hash)
    inputs: dict[str, Any]
    status: RunStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None  # FlowmasonError.to_dict() shape
    parent_run_id: str | None = None
    parent_path: str | None = None
    schedule_id: str | None = None
    fire_time: float | None = None
    recovery_attempts: int = 0
    resumed_count: int = 0
    usage: UsageMetrics  # summed over every committed result of the run
    forked_from: str | None = None  # a rerun: the run it was made from
    from_stage: str | None = None  # a rerun --from: the stage it re-ran from
    breakpoints: tuple[str, ...] = ()  # stage ids the run pauses before
    stepping: bool = False  # pauses before every stage (flowmason step)
    paused_at: dict[str, Any] | None = None  # while paused: {path: {stage_id, inputs}}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRow:
        return cls(
            run_id=row["run_id"],
            pipeline_id=row["pipeline_id"],
            pipeline_hash=row["pipeline_hash"],
            inputs=json.loads(row["inputs"]),
            status=RunStatus(row["status"]),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            output=loads_or_none(row["output"]),
            error=loads_or_none(row["error"]),
            parent_run_id=row["parent_run_id"],
            parent_path=row["parent_path"],
            schedule_id=row["schedule_id"],
            fire_time=row["fire_time"],
            recovery_attempts=row["recovery_attempts"],
            resumed_count=row["resumed_count"],
            usage=UsageMetrics(input_tokens=row["input_tokens"],
                               output_tokens=row["output_tokens"],
                               cost_usd=row["cost_usd"], duration_ms=row["duration_ms"],
                               provider=row["provider"], model=row["model"]),
            forked_from=row["forked_from"],
            from_stage=row["from_stage"],
            breakpoints=tuple(json.loads(row["breakpoints"] or "[]")),
            stepping=bool(row["stepping"]),
            paused_at=loads_or_none(row["paused_at"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the socket and the CLI's ``--json``."""
        return {
            "run_id": self.run_id,
            "pipeline_id": self.pipeline_id,
            "pipeline_hash": self.pipeline_hash,
            "inputs": self.inputs,
            "status": self.status.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "output": self.output,
            "error": self.error,
            "parent_run_id": self.parent_run_id,
            "parent_path": self.parent_path,
            "schedule_id": self.schedule_id,
            "fire_time": self.fire_time,
            "recovery_attempts": self.recovery_attempts,
            "resumed_count": self.resumed_count,
            "usage": self.usage.to_dict(),
            "forked_from": self.forked_from,
            "from_stage": self.from_stage,
            "breakpoints": list(self.breakpoints),
            "stepping": self.stepping,
            "paused_at": self.paused_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    """One entry of the event feed (``run_events``); kinds are listed in state/README.md."""

    id: int
    run_id: str
    ts: float
    kind: str
    path: str | None
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> EventRow:
        return cls(id=row["id"], run_id=row["run_id"], ts=row["ts"], kind=row["kind"],
                   path=row["path"], data=loads_or_none(row["data"]))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "ts": self.ts, "kind": self.kind,
                "path": self.path, "data": self.data}


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    """What one ``Journal.prune`` removed."""

    runs: int  # runs deleted, with their records, attempts and events
    pipelines: int  # pinned definitions no longer referenced
    fires: int  # schedule fires older than the cutoff (each schedule keeps its latest)
    pages_freed: int  # database pages handed back to the file system


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRow:
    """One chunk of a stage's log (``run_logs``)."""

    id: int
    run_id: str
    path: str
    stream: str  # stdout, stderr, or log (logger stages)
    ts: float
    text: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> LogRow:
        return cls(id=row["id"], run_id=row["run_id"], path=row["path"], stream=row["stream"],
                   ts=row["ts"], text=row["text"])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "run_id": self.run_id, "path": self.path, "stream": self.stream,
                "ts": self.ts, "text": self.text}
