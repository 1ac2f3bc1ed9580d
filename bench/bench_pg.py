"""PostgreSQL journal benchmark: a durable stage against a raw INSERT + COMMIT on the same server.

``python bench/bench_pg.py`` starts a throwaway PostgreSQL server (tests/pg_support.py: Debian's
binaries, fsync on, Unix socket) unless ``--dsn`` names a database to use; ``--quick`` for a smoke
run. Figures, each against a baseline measured in the same run on the same server:
- raw commit: one ``INSERT`` of a small row + ``COMMIT`` through psycopg's async connection (the
  floor a durable stage cannot beat: one round trip to the server and one WAL flush);
- a sequential chain through the engine with PgJournal: blocks of raw commits interleaved with
  blocks of chain stages, the ratio taken per pair of blocks and its median reported (so the disk's
  drift on a shared machine hits both sides);
- 20-wide waves (every stage depends on all 20 of the previous wave): µs per stage, journal
  transactions per stage (group commit shares one WAL flush between the stages finishing together),
  and the per-stage cost against one raw commit;
- resume: ``load_snapshot`` of a run holding 1,000 and 10,000 committed stages (median of 5), the
  read a resumed or recovered run starts from.
Always exits 0 when the runs themselves succeed: benchmarks report, they do not fail CI.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
for extra in (str(_REPO), str(_REPO / "tests")):
    if extra not in sys.path:
        sys.path.insert(1, extra)

from _common import Aim  # noqa: E402
from bench_engine import build_registry, chain_shape, wide_shape  # noqa: E402

from flowmasond.engine.dag import DAGExecutor  # noqa: E402
from flowmasond.engine.interfaces import RunStatus  # noqa: E402
from flowmasond.journal.postgres import PgJournal  # noqa: E402

CHAIN_AIM = Aim("chain: durable stage / raw INSERT+COMMIT (interleaved blocks, median)", 1.5, "x")
WIDE_AIM = Aim("20-wide waves: durable stage / raw INSERT+COMMIT", 0.5, "x")
WIDE_COMMITS_AIM = Aim("20-wide waves: journal transactions per stage", 0.3, "commits")
RESUME_1K_AIM = Aim("load_snapshot of 1,000 committed stages", 10.0, "ms")
RESUME_10K_AIM = Aim("load_snapshot of 10,000 committed stages", 150.0, "ms")

FULL = {"blocks": 15, "block": 100, "width": 20, "depth": 30, "repeat": 3, "resume": (1000, 10000)}
QUICK = {"blocks": 2, "block": 10, "width": 20, "depth": 3, "repeat": 1, "resume": (50, 200)}
_PAYLOAD = "x" * 200


async def raw_block(conn: Any, n: int) -> float:
    """µs per raw INSERT + COMMIT, ``n`` in a row."""
    t0 = time.perf_counter()
    for _ in range(n):
        async with conn.transaction():
            await conn.execute("INSERT INTO bench_raw (payload) VALUES (%s)", [_PAYLOAD])
    return (time.perf_counter() - t0) / n * 1e6


async def timed_run(executor: DAGExecutor, journal: PgJournal, shape: Any, run_id: str) -> tuple[float, float]:
    """µs per stage and journal transactions per stage of one run of ``shape``."""
    await journal.create_run(run_id, shape.pipeline, {})
    before = journal.stats().transactions
    t0 = time.perf_counter()
    outcome = await executor.execute(shape.pipeline, {}, run_id=run_id, store=journal.run_store(run_id))
    elapsed = time.perf_counter() - t0
    if outcome.status is not RunStatus.SUCCEEDED:
        raise RuntimeError(f"benchmark run failed: {outcome.error}")
    return elapsed / shape.stages * 1e6, (journal.stats().transactions - before) / shape.stages


async def snapshot_ms(journal: PgJournal, committed: int) -> float:
    """Median ms of ``load_snapshot`` for a run holding ``committed`` stage results."""
    from flowmasond.engine.interfaces import ComponentResult, Record, StageStatus

    shape = chain_shape(1)
    run_id = f"resume-{committed}"
    await journal.create_run(run_id, shape.pipeline, {})
    store = journal.run_store(run_id)
    records = [Record.of_result(f"s{i:05d}", ComponentResult(f"s{i:05d}", "bench_noop", StageStatus.SUCCESS,
                                                             output={"i": i, "text": "x" * 50}, attempts=1,
                                                             started_at=1.0, finished_at=2.0))
               for i in range(committed)]
    for k in range(0, committed, 500):
        await store.commit(records[k:k + 500])
    samples = []
    for _ in range(6):  # the first warms up
        t0 = time.perf_counter()
        snapshot = await journal.load_snapshot(run_id)
        samples.append((time.perf_counter() - t0) * 1000)
        assert len(snapshot.results) == committed
    return statistics.median(samples[1:])


async def main_async(dsn: str, sizes: dict[str, int], quick: bool) -> int:
    import psycopg

    raw = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await raw.execute("CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT GENERATED ALWAYS AS IDENTITY "
                      "PRIMARY KEY, payload TEXT NOT NULL)")
    journal = await PgJournal.open(dsn)
    executor = DAGExecutor(build_registry(), max_concurrency=20)
    try:
        version = (await (await raw.execute("SHOW server_version")).fetchone() or ("?",))[0]
        fsync = (await (await raw.execute("SHOW fsync")).fetchone() or ("?",))[0]
        print(f"PostgreSQL {version}, fsync={fsync}, {journal.database}")

        chain = chain_shape(sizes["block"])
        rows: list[tuple[float, float]] = []
        for b in range(sizes["blocks"] + 1):  # block 0 warms both sides up
            raw_us = await raw_block(raw, sizes["block"])
            chain_us, _ = await timed_run(executor, journal, chain, f"chain-{b}")
            if b:
                rows.append((raw_us, chain_us))
        ratios = [c / r for r, c in rows]
        raw_median = statistics.median(r for r, _ in rows)
        chain_median = statistics.median(c for _, c in rows)
        chain_ratio = statistics.median(ratios)
        print(f"\nchain against raw, interleaved: {sizes['blocks']} blocks of {sizes['block']} raw commits "
              f"and a {sizes['block']}-stage chain")
        print(f"  raw INSERT+COMMIT {raw_median:.0f} µs; chain {chain_median:.0f} µs/stage")
        print(f"  chain / raw per block: median {chain_ratio:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")

        wide = wide_shape(sizes["width"], sizes["depth"])
        wide_rows = []
        for i in range(sizes["repeat"] + 1):
            raw_us = await raw_block(raw, sizes["block"])
            us, commits = await timed_run(executor, journal, wide, f"wide-{i}")
            if i:
                wide_rows.append((raw_us, us, commits))
        wide_raw = statistics.median(r for r, _, _ in wide_rows)
        wide_us = statistics.median(u for _, u, _ in wide_rows)
        wide_ratio = statistics.median(u / r for r, u, _ in wide_rows)
        wide_commits = statistics.median(c for _, _, c in wide_rows)
        print(f"\n{wide.title}")
        print(f"  {wide_us:.0f} µs/stage, {wide_commits:.3f} journal transactions/stage; "
              f"raw INSERT+COMMIT {wide_raw:.0f} µs (same run)")
        print(f"  stage / raw commit: median {wide_ratio:.2f}x")

        small, large = sizes["resume"]
        resume = {n: await snapshot_ms(journal, n) for n in (small, large)}
        print("\nresume: load_snapshot (one REPEATABLE READ transaction, binary results) of a run holding")
        for n, ms in resume.items():
            print(f"  {n:>6} committed stages: {ms:8.1f} ms")

        print("\naims:" + (" (--quick sizes: the figures are not comparable with the aims)" if quick else ""))
        for aim, value in ((CHAIN_AIM, chain_ratio), (WIDE_AIM, wide_ratio), (WIDE_COMMITS_AIM, wide_commits),
                           (RESUME_1K_AIM, resume[small]), (RESUME_10K_AIM, resume[large])):
            print(f"  {aim.name}: {value:.3g} {aim.unit} ({aim.label}) {aim.verdict(value)}")
    finally:
        await journal.close()
        await raw.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", help="a database to use (default: a throwaway server started here)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.dsn:
        return asyncio.run(main_async(args.dsn, sizes, args.quick))
    from pg_support import start_server

    server = start_server()
    try:
        return asyncio.run(main_async(server.dsn(server.create_database()), sizes, args.quick))
    finally:
        server.destroy()


if __name__ == "__main__":
    sys.exit(main())
