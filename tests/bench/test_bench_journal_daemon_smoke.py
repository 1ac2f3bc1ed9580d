"""Smoke tests of the journal and daemon benchmarks: their --quick modes run and print every figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
NUMBER = r"-?\d+(?:\.\d+)?"


def _quick(script: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_journal_benchmark_prints_raw_commit_modes_resume_and_aims() -> None:
    """The journal benchmark reports the raw-commit baseline, each journal mode, the interleaved
    chain / raw / floor figures, resume times and verdicts."""
    out = _quick("bench_journal.py")
    assert re.search(rf"FULL median {NUMBER} µs \(mean {NUMBER}\), NORMAL median {NUMBER} µs", out), out
    for mode in ("off", "NORMAL", "FULL"):
        assert re.search(rf"journal {mode}\s*:\s+{NUMBER} µs/stage, {NUMBER} commits/stage", out), (mode, out)
    assert re.search(rf"raw commit {NUMBER} µs; chain {NUMBER} µs/stage; floor {NUMBER} µs/stage", out), out
    assert re.search(rf"floor / raw: {NUMBER}x; chain / floor .*: {NUMBER}x", out), out
    assert len(re.findall(rf"^\s+\d+ committed stages:\s+{NUMBER} ms$", out, re.M)) == 2, out
    assert len(re.findall(r"\((aim <=? [^)]*)\) (PASS|MISS)$", out, re.M)) == 5, out


def test_daemon_benchmark_prints_latency_throughput_memory_and_aims() -> None:
    """The daemon benchmark reports latency, throughput and memory, each beside its baseline."""
    out = _quick("bench_daemon.py")
    assert re.search(rf"first stage started: {NUMBER} ms .* health round trip {NUMBER} ms", out), out
    assert re.search(rf"= {NUMBER} runs/s; engine in-process .* ratio {NUMBER}x", out), out
    assert re.search(rf"memory: idle {NUMBER} MB, with \d+ runs active {NUMBER} MB", out), out
    assert len(re.findall(r"(PASS|MISS)$", out, re.M)) == 3, out


def test_postgresql_benchmark_prints_chain_and_waves_against_raw_commits(pg_dsn: str) -> None:
    """The PostgreSQL benchmark (on the session's test server) reports raw commits, the chain and the
    20-wide waves beside them, the snapshot reads of a resume, and five verdicts."""
    proc = subprocess.run([sys.executable, str(BENCH / "bench_pg.py"), "--quick", "--dsn", pg_dsn],
                          capture_output=True, text=True, timeout=120, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(rf"raw INSERT\+COMMIT {NUMBER} µs; chain {NUMBER} µs/stage", out), out
    assert re.search(rf"{NUMBER} µs/stage, {NUMBER} journal transactions/stage", out), out
    assert len(re.findall(rf"^\s+\d+ committed stages:\s+{NUMBER} ms$", out, re.M)) == 2, out
    assert len(re.findall(r"\((aim <=? [^)]*)\) (PASS|MISS)$", out, re.M)) == 5, out


def test_hops_benchmark_prints_each_way_of_committing() -> None:
    """The hops benchmark (the measured reason the writer is not an aiosqlite connection) prints
    µs per transaction for all four ways."""
    out = _quick("bench_hops.py")
    for way in ("inline (loop thread)", "SqliteThread, one hop", "aiosqlite public API, 3 hops",
                "aiosqlite private _execute, one hop"):
        assert re.search(rf"{re.escape(way)}\s+{NUMBER} µs/transaction \(min {NUMBER}\)", out), (way, out)


def test_peers_benchmark_runs_flowmasond_side_without_the_peers() -> None:
    """The peer comparison imports and runs its flowmasond chain in the test environment (where
    DBOS and LangGraph are not installed and are reported so)."""
    out = _quick("bench_peers.py")
    assert re.search(rf"flowmasond\s+: median\s+{NUMBER} µs/step", out), out
    assert len(re.findall(r"per (durable )?step: ", out)) == 2, out
