"""Smoke test of the engine benchmark: its --quick mode runs and prints every figure, so it cannot rot."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_engine.py"
NUMBER = r"-?\d+(?:\.\d+)?"


def run_bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args], capture_output=True, text=True,
                          timeout=60, cwd=SCRIPT.parent.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_quick_text_run_prints_every_figure_with_its_aim() -> None:
    """Each shape prints engine, baseline and overhead in µs/stage and the ratio; memory prints both figures."""
    out = run_bench()
    for shape in ("chain", "wide"):
        for label in ("engine", "baseline"):
            assert re.search(rf"^{shape}  {label}\s+{NUMBER} µs/stage", out, re.M), (shape, label, out)
        assert re.search(rf"^{shape}  overhead\s+{NUMBER} µs/stage\s+aim <= 50 µs\s+(PASS|MISS)$", out, re.M), out
        assert re.search(rf"^{shape}  ratio\s+{NUMBER} x engine/baseline$", out, re.M), out
    for label in ("rss growth", "tracemalloc peak"):
        assert re.search(rf"^memory  {label}\s+{NUMBER} MB\s+aim < 50 MB\s+(PASS|MISS)$", out, re.M), (label, out)


def test_quick_json_figures_are_consistent() -> None:
    """The JSON report's overhead is engine minus baseline, its ratio engine over baseline, memory positive."""
    doc = json.loads(run_bench("--json"))
    assert set(doc["shapes"]) == {"chain", "wide"}
    for shape in doc["shapes"].values():
        engine, baseline = shape["engine_us_per_stage"], shape["baseline_us_per_stage"]
        assert engine > 0 and baseline > 0
        assert abs(shape["overhead_us_per_stage"] - (engine - baseline)) < 0.02
        assert abs(shape["ratio"] - engine / baseline) < 0.02 * max(1.0, engine / baseline)
        assert shape["verdict"] in ("PASS", "MISS")
    memory = doc["memory"]
    assert memory["tracemalloc_peak_mb"] > 0 and memory["rss_growth_mb"] >= 0
    assert memory["verdict"] in ("PASS", "MISS")
