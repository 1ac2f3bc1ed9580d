"""The durability contract, proven by killing processes (issue 3).

A reference pipeline of 35 stages (a parallel foreach, a trycatch whose try fails, a router, a
subpipeline, a conditional, a return, a wide parallel wave) runs in a child process that is
SIGKILLed right after each journal commit in turn, then recovered by a fresh process.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crash_support import ChildResult, committed_results, integrity, read_ledger, run_child


def _crash_then_recover(tmp: Path, reference: dict[str, Any], **kill: Any) -> tuple[ChildResult, list[str]]:
    """Kill one run as asked, recover it, and check every oracle; returns the recovery and problems."""
    state, ledger = tmp / "state", tmp / "ledger.jsonl"
    killed = run_child(state, ledger, **kill)
    problems: list[str] = []
    db = state / "journal.sqlite3"
    committed_before = committed_results(db) if db.exists() else set()
    killed_pids = {e["pid"] for e in read_ledger(ledger)}
    recovered = run_child(state, ledger)
    if recovered.returncode != 0 or recovered.report is None:
        return recovered, [f"recovery exited {recovered.returncode}: {recovered.stderr[-2000:]}"]
    if recovered.report["status"] != "succeeded":
        problems.append(f"recovered run ended {recovered.report['status']}: {recovered.report['error']}")
    if recovered.report["output"] != reference["output"]:
        problems.append("output differs from the uninterrupted run")
    if integrity(db) != "ok":
        problems.append(f"integrity_check: {integrity(db)}")
    after = read_ledger(ledger)
    rerun = sorted({e["path"] for e in after if e["pid"] not in killed_pids
                    and (e["run_id"], e["path"]) in committed_before})
    if rerun:
        problems.append(f"stages ran again after their result was committed: {rerun}")
    counts = Counter((e["run_id"], e["path"]) for e in after)
    missing = reference["stages_run"] - len(counts)
    if missing:
        problems.append(f"{missing} stage(s) of the reference never ran")
    return recovered, problems


@pytest.mark.slow
def test_sigkill_after_every_commit_then_recovery_matches_the_uninterrupted_run(
        tmp_path: Path, reference: dict[str, Any]) -> None:
    """Killed after commit k, for every k, a fresh process finishes the run with the same output,
    a sound journal, and no committed stage executed again."""
    total = reference["transactions"]
    assert total >= 30, "the reference run should cross at least 30 commit boundaries"
    failures: dict[int, list[str]] = {}
    for k in range(1, total + 1):
        _, problems = _crash_then_recover(tmp_path / f"k{k}", reference, kill_after=k)
        if problems:
            failures[k] = problems
    assert not failures, failures


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 23, 37, 41, 59])
def test_sigkill_at_a_random_moment_then_recovery_matches_the_uninterrupted_run(
        tmp_path: Path, reference: dict[str, Any], seed: int) -> None:
    """A SIGKILL at a seeded random moment of the run loses nothing and repeats no committed stage."""
    # The clock starts at the first stage's ledger entry, so the kill lands inside the run's window.
    delay = random.Random(seed).uniform(0.0, reference["run_s"])
    recovered, problems = _crash_then_recover(tmp_path, reference, kill_after_s=delay)
    assert not problems, problems
