"""Journal benchmark: what durability costs, against baselines measured in the same run.

``python bench/bench_journal.py`` (``--quick`` for a smoke run). Figures:
- raw SQLite: one INSERT + COMMIT in WAL mode, synchronous=FULL and NORMAL (the floor a journal
  commit cannot beat on this disk);
- a sequential chain and a 20-wide DAG through the engine with the journal at FULL, NORMAL, and off
  (MemoryRunStore): µs per stage, journal transactions per stage, ratio against the raw commit;
- the chain aim itself: blocks of FULL chain stages interleaved with blocks of raw FULL commits,
  each side's block averaged the same way (total time / count), the ratio taken per pair of blocks
  (so that the disk's mood, which drifts by 2x over minutes on a shared machine, hits both sides),
  and the median ratio reported;
- resume: how long from the resume call (pinned definition + snapshot load) until the next stage
  starts, for runs holding 1,000 and 10,000 committed stages.
Always exits 0 when the runs themselves succeed: benchmarks report, they do not fail CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

from _common import Aim  # noqa: E402
from bench_engine import build_registry, chain_shape, wide_shape  # noqa: E402

from flowmasond.engine.checkpoint import MemoryRunStore  # noqa: E402
from flowmasond.engine.interfaces import ComponentResult, ExecutionHooks, Record, RunStatus, StageStatus  # noqa: E402
from flowmasond.engine.dag import DAGExecutor  # noqa: E402
from flowmasond.journal import Journal  # noqa: E402

NORMAL_AIM = Aim("NORMAL chain: journal work per stage (journal NORMAL - journal off)", 60.0, "µs")
CHAIN_AIM = Aim("FULL chain per stage - one raw WAL+FULL commit (interleaved blocks)", 60.0, "µs")
WIDE_AIM = Aim("commits per stage in 20-wide waves (FULL)", 0.3, "commits")
RESUME_1K_AIM = Aim("resume with 1,000 committed stages -> next stage starts", 10.0, "ms")
RESUME_10K_AIM = Aim("resume with 10,000 committed stages -> next stage starts", 100.0, "ms")

FULL = {"chain": 300, "width": 20, "depth": 50, "raw": 300, "repeat": 3, "resume": (1000, 10000),
        "blocks": 15, "block": 100}
QUICK = {"chain": 20, "width": 4, "depth": 4, "raw": 30, "repeat": 1, "resume": (50, 200),
         "blocks": 2, "block": 10}


_RAW_PAYLOAD = "x" * 200


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """A plain SQLite file in WAL mode with one small table: the raw-commit baseline."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data TEXT)")
    return conn


def raw_commits(conn: sqlite3.Connection, n: int) -> list[float]:
    """Seconds of each of ``n`` transactions of one INSERT + COMMIT."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (data) VALUES (?)", (_RAW_PAYLOAD,))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - t0)
    return samples


def raw_commit_us(directory: Path, synchronous: str, n: int) -> tuple[float, float]:
    """Median and mean µs of one INSERT + COMMIT in WAL mode with ``synchronous``."""
    conn = raw_connection(directory / f"raw-{synchronous}.sqlite3", synchronous)
    try:
        samples = raw_commits(conn, n)
    finally:
        conn.close()
    return statistics.median(samples) * 1e6, statistics.mean(samples) * 1e6


class RawCommitStore(MemoryRunStore):
    """The floor of any durable journal: the engine's in-memory store plus one raw WAL+FULL commit
    (one small INSERT) per engine commit, on the loop's thread. No journal code runs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn

    async def commit(self, records: Any) -> None:
        await super().commit(records)
        raw_commits(self._conn, 1)


async def _timed_chain(executor: DAGExecutor, shape: Any, store: Any, run_id: str | None) -> float:
    t0 = time.perf_counter()
    if run_id is None:
        outcome = await executor.execute(shape.pipeline, {}, store=store)
    else:
        outcome = await executor.execute(shape.pipeline, {}, run_id=run_id, store=store)
    elapsed = time.perf_counter() - t0
    if outcome.status is not RunStatus.SUCCEEDED:
        raise RuntimeError(f"benchmark run failed: {outcome.error}")
    return elapsed / shape.stages * 1e6


async def chain_against_raw(directory: Path, registry: Any, blocks: int,
                            block: int) -> dict[str, float]:
    """Interleave, ``blocks`` times: ``block`` raw FULL commits, a chain of ``block`` stages with
    the journal at FULL, and the same chain over ``RawCommitStore`` (the floor). Each figure is a
    block's total time / count; ratios are taken per block and their medians returned."""
    raw = raw_connection(directory / "raw-interleaved.sqlite3", "FULL")
    floor_conn = raw_connection(directory / "floor-interleaved.sqlite3", "FULL")
    journal = await Journal.open(directory / "chain-interleaved.sqlite3", synchronous="FULL")
    executor = DAGExecutor(registry, max_concurrency=20)
    shape = chain_shape(block)
    rows: list[tuple[float, float, float]] = []
    try:
        for b in range(blocks + 1):  # block 0 warms every side up
            raw_block = sum(raw_commits(raw, block)) / block * 1e6
            run_id = f"interleaved-{b}"
            await journal.create_run(run_id, shape.pipeline, {})
            chain_block = await _timed_chain(executor, shape, journal.run_store(run_id), run_id)
            floor_block = await _timed_chain(executor, shape, RawCommitStore(floor_conn), None)
            if b:
                rows.append((raw_block, chain_block, floor_block))
    finally:
        raw.close()
        floor_conn.close()
        await journal.close()
    ratios = [chain / raw_us for raw_us, chain, _ in rows]
    return {"excess_us": statistics.median(chain - raw_us for raw_us, chain, _ in rows),
            "raw_us": statistics.median(r[0] for r in rows),
            "chain_us": statistics.median(r[1] for r in rows),
            "floor_us": statistics.median(r[2] for r in rows),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "floor_ratio": statistics.median(floor / raw_us for raw_us, _, floor in rows),
            "journal_share": statistics.median(chain / floor for _, chain, floor in rows)}


async def journaled_run(directory: Path, synchronous: str | None, shape: Any, registry: Any,
                        repeat: int) -> dict[str, float]:
    """µs per stage and journal transactions per stage of one shape (synchronous=None: no journal)."""
    executor = DAGExecutor(registry, max_concurrency=20)
    times, commits = [], []
    for i in range(repeat + 1):
        if synchronous is None:
            store: Any = MemoryRunStore()
            t0 = time.perf_counter()
            outcome = await executor.execute(shape.pipeline, {}, store=store)
            elapsed = time.perf_counter() - t0
            tx = store.commits
        else:
            journal = await Journal.open(directory / f"j-{shape.name}-{synchronous}-{i}.sqlite3",
                                         synchronous=synchronous)
            run_id = f"bench-{i}"
            await journal.create_run(run_id, shape.pipeline, {})
            before = journal.stats().transactions
            t0 = time.perf_counter()
            outcome = await executor.execute(shape.pipeline, {}, run_id=run_id, store=journal.run_store(run_id))
            elapsed = time.perf_counter() - t0
            tx = journal.stats().transactions - before
            await journal.close()
        if outcome.status is not RunStatus.SUCCEEDED:
            raise RuntimeError(f"benchmark run failed: {outcome.error}")
        if i:  # the first run warms up
            times.append(elapsed / shape.stages * 1e6)
            commits.append(tx / shape.stages)
    return {"us_per_stage": statistics.median(times), "commits_per_stage": statistics.median(commits)}


class _FirstStart(ExecutionHooks):
    """Notes when the first stage that actually executes starts."""

    def __init__(self) -> None:
        self.at: float | None = None

    async def on_stage_start(self, run_id: str, path: str, stage: Any, attempt: int) -> None:
        if self.at is None:
            self.at = time.perf_counter()


async def resume_ms(directory: Path, committed: int, registry: Any, profiler: Any = None) -> float:
    """Resume a run holding ``committed`` committed stages through the daemon's RunManager:
    ms from the ``resume`` call until the next stage starts (profiled by ``profiler`` if given)."""
    import json

    from flowmasond.config import DaemonConfig
    from flowmasond.pipelines.catalog import PipelineCatalog
    from flowmasond.pipelines.loader import FileLimits
    from flowmasond.runs import RunManager

    shape = chain_shape(committed + 1)
    folder = directory / f"pipelines-{committed}"
    folder.mkdir()
    (folder / f"{shape.pipeline.id}.pipeline.json").write_text(
        json.dumps(shape.pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)))
    # A 10,001-stage pipeline file is larger than the default file limit (1 MiB).
    config = DaemonConfig(state_dir=directory / f"state-{committed}", socket=directory / "unused.sock",
                          pipeline_dirs=[folder], limits={"max_pipeline_file_bytes": 1 << 26})
    config.state_dir.mkdir()
    journal = await Journal.open(config.journal_path, synchronous=config.journal.synchronous)
    catalog = PipelineCatalog(registry, [folder], limits=FileLimits(
        max_bytes=config.limits.max_pipeline_file_bytes))
    catalog.load_all()
    pipeline = catalog.get(shape.pipeline.id)
    run_id = "resume-bench"
    await journal.create_run(run_id, pipeline, {})
    store = journal.run_store(run_id)
    batch: list[Record] = []
    now = time.time()
    for stage in pipeline.stages[:committed]:
        batch.append(Record.of_result(stage.id, ComponentResult(
            stage_id=stage.id, component_type=stage.component_type, status=StageStatus.SUCCESS,
            output={}, attempts=1, started_at=now, finished_at=now)))
        if len(batch) == 1000:
            await store.commit(batch)
            batch = []
    if batch:
        await store.commit(batch)
    await journal.set_run_status(run_id, RunStatus.INTERRUPTED, expected=[RunStatus.PENDING])
    hook = _FirstStart()
    manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config, hooks=[hook])
    manager.executor.plan_for(pipeline)  # a running daemon has planned its pipelines before
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    await manager.resume(run_id)
    if profiler is not None:
        while hook.at is None and manager.active:
            await asyncio.sleep(0)
        profiler.disable()
    while manager.active:
        await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))
    row = await journal.get_run(run_id)
    await journal.close()
    if row.status is not RunStatus.SUCCEEDED or hook.at is None:
        raise RuntimeError(f"resume benchmark failed: {row.error}")
    return (hook.at - t0) * 1000.0


async def main_async(args: argparse.Namespace) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    if args.repeat is not None:
        sizes["repeat"] = args.repeat
    if args.blocks is not None:
        sizes["blocks"] = args.blocks
    registry = build_registry()
    with tempfile.TemporaryDirectory(prefix="fm-bench-journal-", dir=args.dir) as tmp:
        directory = Path(tmp)
        raw_full, raw_full_mean = raw_commit_us(directory, "FULL", sizes["raw"])
        raw_normal, raw_normal_mean = raw_commit_us(directory, "NORMAL", sizes["raw"])
        print(f"raw SQLite WAL commit (INSERT+COMMIT), {sizes['raw']} in a row: "
              f"FULL median {raw_full:.0f} µs (mean {raw_full_mean:.0f}), "
              f"NORMAL median {raw_normal:.0f} µs (mean {raw_normal_mean:.0f})   [disk: {directory}]")
        chain = chain_shape(sizes["chain"])
        wide = wide_shape(sizes["width"], sizes["depth"])
        results: dict[str, dict[str, dict[str, float]]] = {}
        for shape in (chain, wide):
            results[shape.name] = {}
            for mode in ("off", "NORMAL", "FULL"):
                results[shape.name][mode] = await journaled_run(
                    directory, None if mode == "off" else mode, shape, registry, sizes["repeat"])
            print(f"\n{shape.title}")
            off = results[shape.name]["off"]["us_per_stage"]
            for mode in ("off", "NORMAL", "FULL"):
                r = results[shape.name][mode]
                raw = {"FULL": raw_full, "NORMAL": raw_normal}.get(mode)
                extra = f", {r['us_per_stage'] / raw:.2f}x one raw {mode} commit" if raw else ""
                print(f"  journal {mode:6}: {r['us_per_stage']:8.1f} µs/stage, "
                      f"{r['commits_per_stage']:.3f} commits/stage, {r['us_per_stage'] / off:6.1f}x journal-off{extra}")
        paired = await chain_against_raw(directory, registry, sizes["blocks"], sizes["block"])
        print(f"\nchain against raw, interleaved: {sizes['blocks']} blocks, each of {sizes['block']} raw "
              f"FULL commits, a {sizes['block']}-stage chain with the journal at FULL, and the same "
              "chain over the floor store (engine + one raw FULL commit per stage, no journal)")
        print(f"  raw commit {paired['raw_us']:.0f} µs; chain {paired['chain_us']:.0f} µs/stage; "
              f"floor {paired['floor_us']:.0f} µs/stage (medians of block averages)")
        print(f"  chain - raw commit per block: median {paired['excess_us']:.0f} µs/stage")
        print(f"  chain / raw commit per block: median {paired['ratio']:.2f}x "
              f"(min {paired['ratio_min']:.2f}x, max {paired['ratio_max']:.2f}x); "
              f"floor / raw: {paired['floor_ratio']:.2f}x; chain / floor (the journal's own share): "
              f"{paired['journal_share']:.2f}x")
        print("\nresume through the run manager (journal reads, snapshot, restore of committed stages, until the next stage starts):")
        resume = {}
        for n in sizes["resume"]:
            resume[n] = await resume_ms(directory, n, registry)
            print(f"  {n:>6} committed stages: {resume[n]:8.1f} ms")
        print("\naims:" + (" (--quick sizes: the figures are not comparable with the aims)"
                            if args.quick else ""))
        small, large = sizes["resume"]
        chain_r = results["chain"]
        normal_work = chain_r["NORMAL"]["us_per_stage"] - chain_r["off"]["us_per_stage"]
        print(f"  baselines, same run: raw FULL commit {paired['raw_us']:.0f} µs (interleaved), "
              f"journal-off chain {chain_r['off']['us_per_stage']:.1f} µs/stage, raw NORMAL "
              f"commit {raw_normal:.0f} µs; 20-wide FULL {results['wide']['FULL']['us_per_stage']:.0f} "
              f"µs/stage, NORMAL {results['wide']['NORMAL']['us_per_stage']:.0f} µs/stage, "
              f"off {results['wide']['off']['us_per_stage']:.0f} µs/stage; load average "
              f"{os.getloadavg()[0]:.1f}")
        checks = [(NORMAL_AIM, normal_work), (CHAIN_AIM, paired["excess_us"]),
                  (WIDE_AIM, results["wide"]["FULL"]["commits_per_stage"]),
                  (RESUME_1K_AIM, resume[small]), (RESUME_10K_AIM, resume[large])]
        for aim, value in checks:
            print(f"  {aim.name}: {value:.3g} {aim.unit} ({aim.label}) {aim.verdict(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs per shape and journal mode (default 3; more on a busy machine)")
    parser.add_argument("--blocks", type=int, default=None,
                        help="interleaved blocks of the FULL chain aim (default 15)")
    parser.add_argument("--dir", default=os.environ.get("FLOWMASON_BENCH_DIR"),
                        help="where the databases go (default: the system temp dir)")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
