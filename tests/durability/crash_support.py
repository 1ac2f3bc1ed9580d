"""Helpers for the crash tests: a child process that runs the reference pipeline against a journal."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RUNNER = HERE / "crash_runner.py"
PIPELINES = HERE / "pipelines"
RUN_ID = "crash-ref"


@dataclass
class ChildResult:
    returncode: int
    report: dict[str, Any] | None
    stderr: str


def run_child(state_dir: Path, ledger: Path, *, kill_after: int | None = None,
              kill_after_s: float | None = None, dsn: str | None = None) -> ChildResult:
    """Run (or recover) the reference run in a fresh process; optionally SIGKILL it.

    ``kill_after`` arms the journal's commit failpoint; ``kill_after_s`` kills the process that long
    after its first stage wrote to the ledger (so the kill lands inside the run, not in start-up).
    ``dsn`` journals the run to that PostgreSQL database instead of ``state_dir``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMASON_")}
    if kill_after is not None:
        env["FLOWMASON_FAILPOINT_KILL_AFTER_COMMIT"] = str(kill_after)
    cmd = [sys.executable, str(RUNNER), str(state_dir), str(PIPELINES), RUN_ID, str(ledger)]
    if dsn is not None:
        cmd.append(dsn)
    if kill_after_s is None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    else:
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while child.poll() is None and not ledger.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(kill_after_s)
        child.kill()
        out, err = child.communicate()
        code = child.returncode
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return ChildResult(code, json.loads(lines[-1]) if lines else None, err)


def committed_results(db: Path) -> set[tuple[str, str]]:
    """(run_id, stage path) of every result the journal holds, read straight from the file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {(r, p) for r, p in conn.execute("SELECT run_id, path FROM run_records WHERE kind = 'result'")}


def committed_results_pg(dsn: str) -> set[tuple[str, str]]:
    """The same, from a PostgreSQL journal."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {(r, p) for r, p in conn.execute("SELECT run_id, path FROM run_records WHERE kind = 'result'")}


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
