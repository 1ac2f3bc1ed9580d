"""Fixtures for the crash tests."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crash_support import read_ledger, run_child


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run: its output and how many commits it takes."""
    base = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    result = run_child(base / "state", base / "ledger.jsonl")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.report is not None and result.report["status"] == "succeeded", result.report
    ledger = read_ledger(base / "ledger.jsonl")
    return {"output": result.report["output"], "transactions": result.report["transactions"],
            "stages_run": len(ledger), "elapsed_s": elapsed, "run_s": result.report["run_s"]}
