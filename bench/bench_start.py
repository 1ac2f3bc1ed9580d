"""Cold start benchmark: ``flowmasond run-once`` of a one-stage pipeline in a fresh process.

``python bench/bench_start.py`` (``--quick`` for a smoke run). Each round times, back to back, a
bare ``python -c pass`` (the interpreter's own start-up: the baseline) and ``flowmasond run-once``
of a one-stage ``logger`` pipeline, both as fresh subprocesses of the same interpreter; medians
over the rounds are reported. Always exits 0 when the runs succeed.
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


def _time(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = (time.perf_counter() - t0) * 1000.0
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rounds, for the smoke test")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="fm-bench-start-") as tmp:
        path = Path(tmp) / "bench-one.pipeline.json"
        path.write_text(json.dumps(PIPELINE))
        bare = [sys.executable, "-c", "pass"]
        run_once = [sys.executable, "-m", "flowmasond.cli", "run-once", str(path)]
        _time(run_once)  # warm the page cache and the bytecode cache
        base, cold = [], []
        for _ in range(rounds):
            base.append(_time(bare))
            cold.append(_time(run_once))
    b, c = statistics.median(base), statistics.median(cold)
    print(f"cold start, {rounds} rounds interleaved, load average {os.getloadavg()[0]:.1f}")
    print(f"  python -c pass (baseline): median {b:.0f} ms (min {min(base):.0f})")
    print(f"  flowmasond run-once, one stage: median {c:.0f} ms (min {min(cold):.0f}), "
          f"{c - b:.0f} ms above the bare interpreter")
    print("\naims:" + (" (--quick: too few rounds to compare with the aim)" if args.quick else ""))
    print(f"  {RUN_ONCE_AIM.name}: {c:.0f} {RUN_ONCE_AIM.unit} ({RUN_ONCE_AIM.label}) "
          f"{RUN_ONCE_AIM.verdict(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
