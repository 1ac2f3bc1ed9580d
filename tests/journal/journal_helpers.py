"""Helpers shared by the journal tests (a unique module name: tests/ directories are not packages)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.interfaces import ComponentResult, ErrorType, StageStatus, UsageMetrics


def make_pipeline(pipeline_id: str = "demo", *, stages: int = 2) -> PipelineConfig:
    """A small valid pipeline definition."""
    return PipelineConfig.model_validate({
        "id": pipeline_id,
        "stages": [{"id": f"s{i}", "component_type": "echo",
                    "depends_on": [f"s{i - 1}"] if i else []} for i in range(stages)],
    })


def make_result(stage_id: str = "s0", *, status: StageStatus = StageStatus.SUCCESS,
                output: object = None, handled: bool = False, attempts: int = 1,
                tokens: int = 0) -> ComponentResult:
    """A result with every field set, so round trips compare all of them."""
    now = time.time()
    failed = status is StageStatus.FAILED
    return ComponentResult(
        stage_id=stage_id, component_type="echo", status=status,
        output={"stage": stage_id, "items": [1, 2.5, "x"]} if output is None else output,
        error="boom" if failed else None, error_type=ErrorType.COMPONENT if failed else None,
        usage=UsageMetrics(input_tokens=tokens, output_tokens=2 * tokens, cost_usd=0.001 * tokens,
                           duration_ms=12.5, provider="local", model="m1"),
        attempts=attempts, started_at=now - 0.25, finished_at=now, handled=handled)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def integrity(path: Path) -> str:
    """PRAGMA integrity_check through a fresh connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
