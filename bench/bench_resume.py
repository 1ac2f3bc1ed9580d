"""Resume benchmark alone: ``bench_journal.py``'s resume measurement, repeated, with medians.

``python bench/bench_resume.py`` (``--rounds N``, ``--quick``, ``--profile``). Each round builds a
fresh journal holding a run of 1,000 (then 10,000) committed chain stages, marks it interrupted and
times the daemon's ``RunManager.resume`` until the next stage starts (see ``resume_ms`` in
``bench_journal.py``). The baseline, measured on the same journal file right after: the journal's
own snapshot query run with plain ``sqlite3`` in process (fetchall, no decoding), the floor of a
resume that reads what it reads now. The rounds of both sizes are interleaved; medians are reported with the aims.
``--profile [STAGES]`` prints cProfile's top costs of one resume (10,000 stages by default).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

from bench_engine import build_registry  # noqa: E402
from bench_journal import RESUME_1K_AIM, RESUME_10K_AIM, resume_ms  # noqa: E402

from flowmasond.journal.sqlfiles import queries  # noqa: E402
from flowmasond.logs import configure_logging  # noqa: E402


def _raw_read_ms(directory: Path) -> float:
    """ms of the journal's snapshot query for the benchmark's run with plain sqlite3 (the baseline)."""
    [path] = directory.glob("state-*/journal.sqlite3")
    conn = sqlite3.connect(path)
    try:
        t0 = time.perf_counter()
        conn.execute(queries().snapshot, ("resume-bench",)).fetchall()
        return (time.perf_counter() - t0) * 1000.0
    finally:
        conn.close()


async def _rounds(sizes: tuple[int, ...], rounds: int) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    registry = build_registry()
    figures: dict[int, list[float]] = {n: [] for n in sizes}
    raw: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="fm-bench-resume-") as tmp:
                figures[n].append(await resume_ms(Path(tmp), n, registry))
                raw[n].append(_raw_read_ms(Path(tmp)))
    return figures, raw


async def _profile(committed: int) -> None:
    registry = build_registry()
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="fm-bench-resume-") as tmp:
        ms = await resume_ms(Path(tmp), committed, registry, profiler=profiler)
    print(f"profiled resume of {committed} committed stages: {ms:.1f} ms (under cProfile)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs, one round (the smoke test)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", type=int, nargs="?", const=10_000, metavar="STAGES",
                        help="cProfile one resume of STAGES committed stages (default 10,000)")
    args = parser.parse_args(argv)
    configure_logging(level="warning", stream=sys.stderr)
    if args.profile:
        asyncio.run(_profile(args.profile))
        return 0
    sizes = (50, 200) if args.quick else (1_000, 10_000)
    rounds = 1 if args.quick else args.rounds
    figures, raw = asyncio.run(_rounds(sizes, rounds))
    print(f"resume through the run manager, {rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    for n in sizes:
        print(f"  {n:>6} committed stages: median {statistics.median(figures[n]):.1f} ms "
              f"(min {min(figures[n]):.1f}, max {max(figures[n]):.1f}); baseline, its snapshot query "
              f"alone (plain sqlite3): median {statistics.median(raw[n]):.1f} ms")
    print("\naims:" + (" (--quick sizes: the figures are not comparable with the aims)" if args.quick else ""))
    for aim, n in ((RESUME_1K_AIM, sizes[0]), (RESUME_10K_AIM, sizes[1])):
        value = statistics.median(figures[n])
        print(f"  {aim.name}: {value:.3g} {aim.unit} ({aim.label}) {aim.verdict(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
