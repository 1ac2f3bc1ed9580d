"""Engine benchmark: DAGExecutor overhead per no-op stage against a plain-asyncio baseline.

Run ``python bench/bench_engine.py`` (``--quick`` for a tiny smoke run, ``--json`` for machine output,
``--profile`` for the top cProfile costs of one chain run). See bench/README.md for what each figure
means. The script always exits 0 when the engine ran correctly, whatever the figures: benchmarks
report, they do not fail CI. It exits non-zero only if a benchmark run itself did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

# Running as `python bench/bench_engine.py` puts bench/ (not the repo) on sys.path; make the
# checkout importable too so the benchmark measures this tree even when it is not pip-installed.
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

from _common import Aim, Timing, current_rss_mb, peak_rss_mb, reset_peak_rss, time_interleaved  # noqa: E402

from flowmasond.engine.cancellation import CancellationToken  # noqa: E402
from flowmasond.engine.checkpoint import MemoryRunStore  # noqa: E402
from flowmasond.engine.context import ExecutionContext  # noqa: E402
from flowmasond.engine.dag import DAGExecutor, RunOutcome  # noqa: E402
from flowmasond.engine.models import PipelineConfig, StageConfig  # noqa: E402
from flowmasond.engine.registry import ComponentInput, ComponentRegistry, operator  # noqa: E402
from flowmasond.engine.interfaces import RunStatus  # noqa: E402

# The aims of the spec (issue 2, "Benchmark").
OVERHEAD_AIM = Aim("engine overhead per no-op stage", 50.0, "µs")
MEMORY_AIM = Aim("memory of a 1,000-stage run", 50.0, "MB", strict=True)

# Full-size shapes (the spec's) and the --quick ones (enough to exercise every code path).
FULL = {"chain": 1000, "width": 20, "depth": 50, "warmup": 2, "repeat": 7, "memory_stages": 1000}
QUICK = {"chain": 40, "width": 4, "depth": 5, "warmup": 1, "repeat": 3, "memory_stages": 40}


@operator("bench_noop", description="Does nothing; measures the engine around it.")
class NoopOperator:
    """A component whose execute returns at once, so any time spent is the caller's."""

    class Input(ComponentInput):
        # One defaulted field so that validating the input is not free: real components have some.
        note: str = ""

    async def execute(self, input: Input, context: ExecutionContext) -> dict[str, Any]:
        return {}


# -- shapes ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Shape:
    """One benchmarked pipeline and the layers its baseline runs (one stage per layer for a chain)."""

    name: str
    title: str
    pipeline: PipelineConfig
    layers: list[list[StageConfig]]

    @property
    def stages(self) -> int:
        return len(self.pipeline.stages)


def chain_shape(n: int) -> Shape:
    """``n`` no-op stages, each depending on the previous one."""
    stages = [{"id": f"s{i:04d}", "component_type": "bench_noop",
               "depends_on": [f"s{i - 1:04d}"] if i else []} for i in range(n)]
    pipeline = PipelineConfig.model_validate({"id": f"bench-chain-{n}", "stages": stages})
    return Shape("chain", f"chain of {n} stages (each depends on the previous one)", pipeline,
                 [[s] for s in pipeline.stages])


def wide_shape(width: int, depth: int) -> Shape:
    """``depth`` layers of ``width`` no-op stages; every stage depends on *all* of the previous layer.

    All-to-all joins stress dependency counting and the ready queue far more than one column per lane.
    """
    stages = []
    for k in range(depth):
        prev = [f"l{k - 1:02d}c{c:02d}" for c in range(width)] if k else []
        stages += [{"id": f"l{k:02d}c{c:02d}", "component_type": "bench_noop", "depends_on": prev}
                   for c in range(width)]
    pipeline = PipelineConfig.model_validate({"id": f"bench-wide-{width}x{depth}", "stages": stages})
    layers = [pipeline.stages[k * width:(k + 1) * width] for k in range(depth)]
    edges = (depth - 1) * width * width
    return Shape("wide", f"{width} wide x {depth} deep = {width * depth} stages (every stage depends on "
                         f"all {width} of the previous layer: {edges:,} edges)", pipeline, layers)


def build_registry() -> ComponentRegistry:
    """The built-ins plus the no-op operator (the daemon's registry, plus one type)."""
    registry = ComponentRegistry.with_builtins()
    registry.register(NoopOperator)
    return registry


# -- the two sides -------------------------------------------------------------------------------------
def engine_runner(executor: DAGExecutor, pipeline: PipelineConfig) -> Callable[[], Awaitable[RunOutcome]]:
    """One full engine run of ``pipeline`` against a fresh in-memory store."""

    async def run() -> RunOutcome:
        outcome = await executor.execute(pipeline, {}, store=MemoryRunStore())
        if outcome.status is not RunStatus.SUCCEEDED:
            raise RuntimeError(f"benchmark run of {pipeline.id} ended {outcome.status.value}: {outcome.error}")
        if len(outcome.results) != len(pipeline.stages):
            raise RuntimeError(f"benchmark run of {pipeline.id} ran {len(outcome.results)} of "
                               f"{len(pipeline.stages)} stages")
        return outcome

    return run


def baseline_runner(shape: Shape) -> Callable[[], Awaitable[None]]:
    """The same component calls in plain asyncio: layer by layer, a layer's stages gathered.

    Each call validates the stage's pydantic input and builds an ``ExecutionContext`` exactly as the
    engine does, so the two sides do the same component work and differ only by the engine's
    bookkeeping (scheduling, templates, timeouts, results, commits).
    """
    instance = NoopOperator()
    input_model = NoopOperator.Input
    run_id, pipeline_id = "bench-baseline", shape.pipeline.id

    async def call(stage: StageConfig, token: CancellationToken) -> Any:
        context = ExecutionContext(run_id=run_id, pipeline_id=pipeline_id, stage_id=stage.id,
                                   stage_path=stage.id, attempt=1, cancellation=token, stage=stage)
        return await instance.execute(input_model.model_validate(stage.config), context)

    async def run() -> None:
        token = CancellationToken()
        for layer in shape.layers:
            if len(layer) == 1:
                await call(layer[0], token)
            else:
                await asyncio.gather(*(call(stage, token) for stage in layer))

    return run


@dataclass(frozen=True, slots=True)
class ShapeResult:
    """The figures of one shape, in µs per stage."""

    shape: Shape
    engine: Timing
    baseline: Timing

    def per_stage_us(self, t: Timing) -> float:
        return t.median_s * 1e6 / self.shape.stages

    @property
    def engine_us(self) -> float:
        return self.per_stage_us(self.engine)

    @property
    def baseline_us(self) -> float:
        return self.per_stage_us(self.baseline)

    @property
    def overhead_us(self) -> float:
        return self.engine_us - self.baseline_us

    @property
    def ratio(self) -> float:
        return self.engine_us / self.baseline_us if self.baseline_us > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.shape.title, "stages": self.shape.stages,
            "engine_us_per_stage": round(self.engine_us, 2),
            "baseline_us_per_stage": round(self.baseline_us, 2),
            "overhead_us_per_stage": round(self.overhead_us, 2),
            "ratio": round(self.ratio, 2),
            "engine_run_ms": {"median": self.engine.median_s * 1e3, "min": self.engine.min_s * 1e3,
                              "max": self.engine.max_s * 1e3},
            "baseline_run_ms": {"median": self.baseline.median_s * 1e3, "min": self.baseline.min_s * 1e3,
                                "max": self.baseline.max_s * 1e3},
            "aim_overhead_us": OVERHEAD_AIM.limit, "verdict": OVERHEAD_AIM.verdict(self.overhead_us),
        }


async def measure_shape(shape: Shape, executor: DAGExecutor, *, warmup: int, repeat: int) -> ShapeResult:
    """Median engine and baseline times of ``shape``, measured alternately in this process."""
    timings = await time_interleaved({"engine": engine_runner(executor, shape.pipeline),
                                      "baseline": baseline_runner(shape)}, warmup=warmup, repeat=repeat)
    return ShapeResult(shape, timings["engine"], timings["baseline"])


# -- memory (in a fresh subprocess) ------------------------------------------------------------------------
async def _memory_child(mode: str, stages: int) -> dict[str, float]:
    """One cold run of a ``stages``-long chain; what it cost in RSS or in traced allocations."""
    registry = build_registry()
    shape = chain_shape(stages)
    executor = DAGExecutor(registry, max_concurrency=20)
    run = engine_runner(executor, shape.pipeline)
    gc.collect()
    if mode == "rss":
        peak_was_reset = reset_peak_rss()
        before = current_rss_mb() if peak_was_reset else None
        if before is None:  # no /proc: the growth of the peak is the best available (may read low)
            before = peak_rss_mb()
        outcome = await run()
        peak = peak_rss_mb()
        assert len(outcome.results) == stages
        return {"rss_before_mb": before, "rss_peak_mb": peak, "rss_growth_mb": max(peak - before, 0.0),
                "rss_peak_was_reset": float(peak_was_reset)}
    tracemalloc.start()
    outcome = await run()
    current, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(outcome.results) == stages
    return {"tracemalloc_peak_mb": peak_bytes / 2**20, "tracemalloc_retained_mb": current / 2**20}


def measure_memory(stages: int) -> dict[str, float]:
    """RSS growth and tracemalloc peak of a cold ``stages``-stage run, each in its own fresh process.

    Separate processes because tracemalloc's own bookkeeping would inflate the RSS figure.
    """
    figures: dict[str, float] = {"stages": stages}
    for mode in ("rss", "tracemalloc"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, "--stages", str(stages)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child ({mode}) failed:\n{proc.stderr}")
        figures.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return figures


# -- profile -------------------------------------------------------------------------------------------
def profile_chain(registry: ComponentRegistry, shape: Shape, top: int = 25) -> str:
    """cProfile of one warm engine run of ``shape``: the top functions by own and cumulative time."""
    # A fresh executor: its semaphore must not be bound to the event loop of the timed runs.
    run = engine_runner(DAGExecutor(registry, max_concurrency=20), shape.pipeline)
    profiler = cProfile.Profile()

    async def warm_then_profile() -> None:
        await run()  # warm: plan cached, first-call costs paid
        profiler.enable()
        await run()
        profiler.disable()

    asyncio.run(warm_then_profile())
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- report --------------------------------------------------------------------------------------------
def render_text(results: list[ShapeResult], memory: dict[str, float], sizes: dict[str, int]) -> str:
    lines = [
        "flowmasond engine benchmark",
        f"python {platform.python_version()} on {os.cpu_count()} CPUs; no-op stages, MemoryRunStore, "
        f"no hooks; median of {sizes['repeat']} runs after {sizes['warmup']} warm-up runs",
        "",
    ]
    for r in results:
        name = r.shape.name
        lines += [
            f"{name}: {r.shape.title}",
            f"{name}  engine    {r.engine_us:9.1f} µs/stage   (run {r.engine.median_s * 1e3:.1f} ms, "
            f"min {r.engine.min_s * 1e3:.1f}, max {r.engine.max_s * 1e3:.1f})",
            f"{name}  baseline  {r.baseline_us:9.1f} µs/stage   (run {r.baseline.median_s * 1e3:.1f} ms, "
            f"min {r.baseline.min_s * 1e3:.1f}, max {r.baseline.max_s * 1e3:.1f})",
            f"{name}  overhead  {r.overhead_us:9.1f} µs/stage   {OVERHEAD_AIM.label}   "
            f"{OVERHEAD_AIM.verdict(r.overhead_us)}",
            f"{name}  ratio     {r.ratio:9.1f} x engine/baseline",
            "",
        ]
    growth, peak = memory["rss_growth_mb"], memory["tracemalloc_peak_mb"]
    lines += [
        f"memory: one cold {int(memory['stages'])}-stage chain run, each figure in a fresh process",
        f"memory  rss growth        {growth:7.1f} MB   {MEMORY_AIM.label}   "
        f"{MEMORY_AIM.verdict(growth)}",
        f"memory  tracemalloc peak  {peak:7.1f} MB   {MEMORY_AIM.label}   "
        f"{MEMORY_AIM.verdict(peak)}",
        *([] if memory["rss_peak_was_reset"] else
          ["memory  (could not reset the peak RSS before the run: rss growth may read low)"]),
        f"memory  retained after    {memory['tracemalloc_retained_mb']:7.1f} MB   (results held by the outcome)",
        f"memory  process rss peak  {memory['rss_peak_mb']:7.1f} MB   (whole process: interpreter, "
        f"imports and run; {memory['rss_before_mb']:.1f} MB before the run)",
    ]
    return "\n".join(lines)


def render_json(results: list[ShapeResult], memory: dict[str, float], sizes: dict[str, int]) -> str:
    doc = {
        "python": platform.python_version(), "cpus": os.cpu_count(), "sizes": sizes,
        "shapes": {r.shape.name: r.to_dict() for r in results},
        "memory": {**{k: round(v, 2) for k, v in memory.items()}, "aim_mb": MEMORY_AIM.limit,
                   "verdict": MEMORY_AIM.verdict(max(memory["rss_growth_mb"], memory["tracemalloc_peak_mb"]))},
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for the smoke test")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--repeat", type=int, help="timed runs per side (median reported)")
    parser.add_argument("--warmup", type=int, help="untimed runs per side first")
    parser.add_argument("--profile", action="store_true", help="also print cProfile top costs of one chain run")
    parser.add_argument("--memory-child", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    parser.add_argument("--stages", type=int, default=1000, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark once and print the figures; 0 unless the engine itself failed."""
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(asyncio.run(_memory_child(args.memory_child, args.stages))))
        return 0
    sizes = dict(QUICK if args.quick else FULL)
    if args.repeat:
        sizes["repeat"] = args.repeat
    if args.warmup is not None:
        sizes["warmup"] = args.warmup
    registry = build_registry()
    # max_concurrency = the DAG's width, so the engine may run a layer as wide as the baseline's gather.
    executor = DAGExecutor(registry, max_concurrency=max(sizes["width"], 1), parallel_execution=True)
    shapes = [chain_shape(sizes["chain"]), wide_shape(sizes["width"], sizes["depth"])]

    async def measure_all() -> list[ShapeResult]:
        return [await measure_shape(s, executor, warmup=sizes["warmup"], repeat=sizes["repeat"]) for s in shapes]

    results = asyncio.run(measure_all())
    memory = measure_memory(sizes["memory_stages"])
    print(render_json(results, memory, sizes) if args.json else render_text(results, memory, sizes))
    if args.profile:
        # With --json the profile goes to stderr so that stdout stays one JSON document.
        stream = sys.stderr if args.json else sys.stdout
        print("\nprofile: one warm engine run of the chain\n", file=stream)
        print(profile_chain(registry, shapes[0]), file=stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
