"""Next-fire computation time for pathological cron expressions: each must stay under 1 ms.

    python bench/bench_cron.py          # ~10 s
    python bench/bench_cron.py --json   # the figures as one JSON document

For each expression and zone, ``CronSchedule.next_after`` is timed from start points spread around
every UTC-offset change of 2025-2027 (and at random through those years). Each start point is timed
five times and its fastest run kept (so a busy machine does not count against the code); the line
reports the slowest start point, the 99th percentile and the median, and PASS when the slowest is
under the aim. The scheduler computes one next fire per schedule per fire on the event loop, so
this is the figure that bounds how long a fire can hold the loop.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import Aim  # noqa: E402
from flowmasond.scheduling.cron import CronSchedule  # noqa: E402

AIM = Aim("next fire, slowest start point", 1.0, "ms", strict=True)
EXPRESSIONS = [
    "0 0 30 2 mon",        # one half of the OR rule never matches (issue 12: 0.12-0.16 s before)
    "0 0 29 2 */7",        # 29 February on a Sunday: years apart (AND: the weekday field starts with '*')
    "0 0 29 2 mon",        # February's Mondays or the 29th
    "59 59 23 31 12 *",    # once a year, last second, 6 fields
    "0 0 31 1-12/2 *",     # the 31st of odd months
    "* * * * * *",         # every second
    "*/7 */11 */5 * * *",  # steps that do not divide their range
    "11,15 2 * * *",       # inside spring-forward gaps
    "*/20 1 * * *",        # wildcard inside fall-back folds
    "0 0 * * *",           # midnight, where Santiago/Havana/Beirut change
    "0 0 13 * 5",          # Friday or the 13th
    "0 0 1-7 * 1",         # first Monday... or any of days 1-7 (OR)
    "0 0 */2 * 1",         # odd days that are Mondays (AND)
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "America/Havana",
         "Asia/Beirut"]


def offset_changes(zone: ZoneInfo) -> list[float]:
    """Instants near which the zone's offset changes in 2025-2027 (6-hour resolution is enough here)."""
    t = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
    end = datetime(2028, 1, 1, tzinfo=timezone.utc).timestamp()
    out, previous = [], datetime.fromtimestamp(t, zone).utcoffset()
    while t < end:
        t += 6 * 3600
        current = datetime.fromtimestamp(t, zone).utcoffset()
        if current != previous:
            out.append(t)
            previous = current
    return out


def start_points(zone: ZoneInfo, rng: random.Random) -> list[float]:
    points = []
    for change in offset_changes(zone):
        points.extend(change + k * 1800 - 0.25 for k in range(-16, 8))
    base = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()
    points.extend(base + rng.uniform(0, 3 * 365 * 86400) for _ in range(40))
    # Far ahead, where a 29 February on a given weekday is decades away (none in 2100).
    far = datetime(2090, 1, 1, tzinfo=timezone.utc).timestamp()
    points.extend(far + rng.uniform(0, 20 * 365 * 86400) for _ in range(10))
    return points


def measure(expression: str, zone_name: str, rng: random.Random) -> list[float]:
    schedule = CronSchedule.parse(expression, zone_name)
    samples = []
    for start in start_points(schedule.zone, rng):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter_ns()
            schedule.next_after(start)
            best = min(best, (time.perf_counter_ns() - t0) / 1e6)
        samples.append(best)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(12)
    rows = []
    for expression in EXPRESSIONS:
        samples = [s for zone in ZONES for s in measure(expression, zone, rng)]
        samples.sort()
        slowest = samples[-1]
        rows.append({"expression": expression, "calls": len(samples), "median_ms": statistics.median(samples),
                     "p99_ms": samples[int(len(samples) * 0.99)], "slowest_ms": slowest,
                     "verdict": AIM.verdict(slowest)})
    if args.json:
        print(json.dumps({"aim_ms": AIM.limit, "rows": rows}, indent=2))
    else:
        print(f"next_after over {len(ZONES)} zones, start points around every offset change 2025-2027 "
              f"({AIM.label} for the slowest start point)")
        for r in rows:
            print(f"  {r['expression']:22} median {r['median_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"slowest {r['slowest_ms']:.3f} ms  {r['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
