"""Smoke test of the resume benchmark: --quick resumes small runs and prints figures and both aims."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_resume.py"
NUMBER = r"-?\d+(?:\.\d+)?"


def test_resume_benchmark_prints_medians_and_both_aims() -> None:
    """Each size's median resume time and the two resume aims with PASS/MISS are printed."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                          timeout=120, cwd=SCRIPT.parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for size in (50, 200):
        assert re.search(rf"{size} committed stages: median {NUMBER} ms", out), out
    for size in ("1,000", "10,000"):
        assert re.search(rf"resume with {size} committed stages -> next stage starts: {NUMBER} ms "
                         r"\(aim <= \d+ ms\) (PASS|MISS)$", out, re.M), out
