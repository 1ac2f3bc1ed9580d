"""Cold start benchmark: ``flowmasond run-once`` of a one-stage pipeline in a fresh process.

``python bench/bench_start.py`` (``--quick`` for a smoke run). Each round times, back to back, a
bare ``python -c pass`` (the interpreter's own start-up: the baseline) and ``flowmasond run-once``
of a one-stage ``logger`` pipeline, both as fresh subprocesses of the same interpreter; medians
over the rounds are reported, wall time (the aim's measure) and the child's CPU time (steadier when
other work shares the cores). The children run from the pipeline's own folder (so that ``-m`` finds
this checkout's flowmasond, not the one of the current directory) with bytecode writing allowed
(so that the warm-up run leaves compiled modules, as an installed package has). Always exits 0 when
the runs succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

from _common import Aim  # noqa: E402

RUN_ONCE_AIM = Aim("cold run-once of a one-stage pipeline", 200.0, "ms")

PIPELINE = {"id": "bench-one", "name": "one stage", "version": "1.0.0",
            "stages": [{"id": "say", "component_type": "logger", "config": {"message": "hi"}}]}


def _time(argv: list[str], cwd: str) -> tuple[float, float]:
    """Wall and CPU ms of one fresh child process running ``argv``."""
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: wait4 cannot block on a full pipe
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = (time.perf_counter() - t0) * 1000.0
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{argv} failed ({child.returncode}): {errors.read().decode(errors='replace')[-2000:]}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rounds, for the smoke test")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="fm-bench-start-") as tmp:
        path = Path(tmp) / "bench-one.pipeline.json"  # alone in its folder: the catalog reads only it
        path.write_text(json.dumps(PIPELINE))
        bare = [sys.executable, "-c", "pass"]
        run_once = [sys.executable, "-m", "flowmasond.cli", "run-once", str(path)]
        _time(run_once, tmp)  # warm the page cache and the bytecode cache
        base, cold, base_cpu, cold_cpu = [], [], [], []
        for _ in range(rounds):
            wall, cpu = _time(bare, tmp)
            base.append(wall)
            base_cpu.append(cpu)
            wall, cpu = _time(run_once, tmp)
            cold.append(wall)
            cold_cpu.append(cpu)
    b, c = statistics.median(base), statistics.median(cold)
    print(f"cold start, {rounds} rounds interleaved, load average {os.getloadavg()[0]:.1f}")
    print(f"  python -c pass (baseline): median {b:.0f} ms (min {min(base):.0f}), "
          f"CPU median {statistics.median(base_cpu):.0f} ms")
    print(f"  flowmasond run-once, one stage: median {c:.0f} ms (min {min(cold):.0f}), "
          f"{c - b:.0f} ms above the bare interpreter; CPU median {statistics.median(cold_cpu):.0f} ms "
          f"(min {min(cold_cpu):.0f})")
    print("\naims:" + (" (--quick: too few rounds to compare with the aim)" if args.quick else ""))
    print(f"  {RUN_ONCE_AIM.name}: {c:.0f} {RUN_ONCE_AIM.unit} ({RUN_ONCE_AIM.label}) "
          f"{RUN_ONCE_AIM.verdict(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
