"""Helpers shared by the benchmarks: timing with warm-up and medians, memory probes, aim lines.

Benchmarks report; they never fail. Every figure is compared with a baseline measured in the same
process and the same run, so that a slow or busy machine moves both numbers together.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True, slots=True)
class Aim:
    """A target figure: PASS when the measured value is at most (or, strict, under) ``limit``."""

    name: str
    limit: float
    unit: str
    strict: bool = False  # "under 50 MB" is strict, "at most 50 µs" is not

    @property
    def label(self) -> str:
        return f"aim {'<' if self.strict else '<='} {self.limit:g} {self.unit}"

    def verdict(self, value: float) -> str:
        ok = value < self.limit if self.strict else value <= self.limit
        return "PASS" if ok else "MISS"


@dataclass(frozen=True, slots=True)
class Timing:
    """Median and spread of repeated measurements of one thing, in seconds per repetition."""

    median_s: float
    min_s: float
    max_s: float
    samples: int


def summarize(samples: list[float]) -> Timing:
    """Median, min and max of ``samples`` (seconds)."""
    return Timing(median_s=statistics.median(samples), min_s=min(samples), max_s=max(samples),
                  samples=len(samples))


async def time_once(fn: Callable[[], Awaitable[object]]) -> float:
    """Wall time of one await of ``fn()``, after a full collection so garbage of earlier runs
    is not charged to this one (the collector stays enabled: real runs pay for their own)."""
    gc.collect()
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def time_interleaved(fns: dict[str, Callable[[], Awaitable[object]]], *, warmup: int,
                           repeat: int) -> dict[str, Timing]:
    """Time each of ``fns`` ``repeat`` times, alternating between them.

    Alternating (engine, baseline, engine, baseline...) rather than timing one then the other means
    a burst of load from another process on this shared machine hits both sides, not just one.
    """
    for _ in range(warmup):
        for fn in fns.values():
            await fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            samples[name].append(await time_once(fn))
    return {name: summarize(values) for name, values in samples.items()}


def current_rss_mb() -> float | None:
    """Resident set size of this process now, in MB; None where /proc is not available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False if impossible.

    Without the reset, the peak after a run is often still the one reached while importing
    (pydantic, structlog, httpx...), and the growth caused by the run itself reads as zero.
    Writing 5 to ``/proc/self/clear_refs`` is Linux's documented way to reset the high-water mark.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process's memory, in MB.

    Prefers ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` also counts the peak of the memory
    image this process was forked from (the kernel keeps it across exec), so a child started by a
    big parent reports the parent's RSS as its own peak. ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes, Linux KiB.
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
