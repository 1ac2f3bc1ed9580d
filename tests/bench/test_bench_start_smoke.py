"""Smoke test of the cold-start benchmark: --quick runs run-once and prints baseline, figure and aim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_start.py"
NUMBER = r"-?\d+(?:\.\d+)?"


def test_start_benchmark_prints_baseline_run_once_and_aim() -> None:
    """The bare interpreter baseline, the run-once figure and one PASS/MISS aim line are printed."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                          timeout=120, cwd=SCRIPT.parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(rf"python -c pass \(baseline\): median {NUMBER} ms", out), out
    assert re.search(rf"flowmasond run-once, one stage: median {NUMBER} ms", out), out
    assert re.search(r"cold run-once of a one-stage pipeline: \d+ ms \(aim <= 200 ms\) (PASS|MISS)$",
                     out, re.M), out
