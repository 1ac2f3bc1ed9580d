"""The generated-pipeline tests' runner process and figures (a module, not conftest: test files
import it, and ``conftest`` is a different module in every test folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GEN_STATS = {"pipelines": 0, "kill_points": 0, "unreached": 0, "divergent_pipelines": 0}


class GenRunner:
    """One long-lived gen_runner.py process: imports flowmasond once and forks a process per run."""

    def __init__(self, log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "gen_runner.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={k: v for k, v in os.environ.items() if not k.startswith("FLOWMASON_")})

    def run_case(self, case_dir: Path, case: dict[str, Any], kill_points: int | str, seed: int,
                 pg_dsn: str | None = None) -> dict[str, Any]:
        """The oracle run and the kill/recover trials of ``case`` (kill_points: a sample size, or "all");
        with ``pg_dsn``, journaled to PostgreSQL (a schema per run directory) instead of SQLite."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"dir": str(case_dir), "pipelines": case["pipelines"], "root": case["root"],
                   "kill_points": kill_points, "seed": seed, "parallel": GEN_PARALLEL, "pg_dsn": pg_dsn}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"gen_runner.py died; see {self.log.name}")
        answer = json.loads(line)
        from gen_checks import unreached

        missed = sum(1 for trial in answer["trials"] if unreached(trial))
        GEN_STATS["pipelines"] += 1
        GEN_STATS["kill_points"] += len(answer["trials"]) - missed
        GEN_STATS["unreached"] += missed
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# Trials of one case run this many at a time (each is a chain of forked processes).
GEN_PARALLEL = max(2, min(4, os.cpu_count() or 2))
