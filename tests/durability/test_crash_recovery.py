"""The durability contract, proven by killing processes (issue 3).

A reference pipeline of 35 stages (a parallel foreach, a trycatch whose try fails, a router, a
subpipeline, a conditional, a return, a wide parallel wave) runs in a child process that is
SIGKILLed right after each journal commit in turn, then recovered by a fresh process.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crash_support import ChildResult, committed_results, committed_results_pg, integrity, read_ledger, run_child


def _crash_then_recover(tmp: Path, reference: dict[str, Any], **kill: Any) -> tuple[ChildResult, list[str]]:
    """Kill one run as asked, recover it, and check every oracle; returns the recovery and problems."""
    state, ledger = tmp / "state", tmp / "ledger.jsonl"
    killed = run_child(state, ledger, **kill)
    problems: list[str] = []
    if killed.returncode != -signal.SIGKILL:
        problems.append(f"the child was not killed as asked ({kill}): exit {killed.returncode}")
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
    # Fewer, larger transactions are what issue 15 asks for: the floor only keeps the kill loop
    # covering the whole run (35 stages in 29 commits since runs are created running).
    assert total >= 25, "the reference run should cross at least 25 commit boundaries"
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
    _, problems = _crash_then_recover(tmp_path, reference, kill_after_s=delay)
    assert not problems, problems


PG_KILL_POINTS = 8


def test_sigkill_after_sampled_commits_on_postgresql_then_recovery_matches_the_uninterrupted_run(
        tmp_path: Path, reference: dict[str, Any], pg_server: Any) -> None:
    """The same reference run journaled to PostgreSQL: killed after sampled commits, a fresh process
    finishes it with the uninterrupted run's output and no committed stage executed again."""
    # A schema per run in one database: creating a database per trial forces a checkpoint each time.
    db = pg_server.shared_database()
    whole = run_child(tmp_path / "state", tmp_path / "uninterrupted.jsonl",
                      dsn=pg_server.dsn(db, pg_server.create_schema(db)))
    assert whole.returncode == 0 and whole.report is not None, whole.stderr[-2000:]
    assert whole.report["status"] == "succeeded" and whole.report["output"] == reference["output"]
    total = whole.report["transactions"]
    points = sorted(random.Random(7).sample(range(1, total), min(PG_KILL_POINTS, total - 1)))
    failures: dict[int, list[str]] = {}
    for k in points:
        tmp = tmp_path / f"k{k}"
        tmp.mkdir()
        dsn = pg_server.dsn(db, pg_server.create_schema(db))
        ledger = tmp / "ledger.jsonl"
        killed = run_child(tmp / "state", ledger, kill_after=k, dsn=dsn)
        problems: list[str] = []
        if killed.returncode != -signal.SIGKILL:
            problems.append(f"the child was not killed after commit {k}: exit {killed.returncode}")
        committed_before = committed_results_pg(dsn)
        killed_pids = {e["pid"] for e in read_ledger(ledger)}
        recovered = run_child(tmp / "state", ledger, dsn=dsn)
        if recovered.returncode != 0 or recovered.report is None:
            problems.append(f"recovery exited {recovered.returncode}: {recovered.stderr[-2000:]}")
        elif recovered.report["status"] != "succeeded" or recovered.report["output"] != reference["output"]:
            problems.append(f"recovered run ended {recovered.report['status']} with another output")
        after = read_ledger(ledger)
        rerun = sorted({e["path"] for e in after if e["pid"] not in killed_pids
                        and (e["run_id"], e["path"]) in committed_before})
        if rerun:
            problems.append(f"stages ran again after their result was committed: {rerun}")
        if reference["stages_run"] != len(Counter((e["run_id"], e["path"]) for e in after)):
            problems.append("some stage of the reference never ran")
        if problems:
            failures[k] = problems
    assert not failures, failures
