"""Smoke test of the cluster benchmark: its --quick mode runs one node and three and prints every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_cluster.py"
NUMBER = r"-?\d+(?:\.\d+)?"


def test_cluster_benchmark_prints_the_baseline_both_rates_and_the_aim() -> None:
    """One daemon without [cluster], one node, three nodes: runs/s of each, then the ratio with its verdict."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=180,
                          cwd=SCRIPT.parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(rf"^baseline, one daemon without \[cluster\].*= {NUMBER} runs/s$", out, re.M), out
    for label in ("one node:", "three nodes:"):
        assert re.search(rf"^{label}\s+60 one-stage runs in {NUMBER} s = {NUMBER} runs/s$", out, re.M), (label, out)
    assert re.search(rf"three nodes / one node: {NUMBER}x \(aim >= 1.5x\) (PASS|MISS)$", out, re.M), out
