"""Fixtures for the crash tests."""

from __future__ import annotations

import time
from typing import Any
from collections.abc import Iterator

import pytest

from crash_support import read_ledger, run_child
from gen_support import GEN_STATS, GenRunner


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


# -- generated pipelines (test_generated_pipelines.py) -----------------------------------------------
@pytest.fixture(scope="session")
def gen_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GenRunner]:
    """The runner process shared by every generated-pipeline test of the session."""
    runner = GenRunner(tmp_path_factory.mktemp("gen_runner") / "runner.log")
    yield runner
    runner.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report how much the generated-pipeline tests covered."""
    if GEN_STATS["pipelines"]:
        terminalreporter.write_line(
            "generated pipelines: {pipelines} run, {kill_points} kill points tried ({unreached} more not "
            "reached: the run took fewer commits), {divergent_pipelines} diverged from their oracle"
            .format(**GEN_STATS))
