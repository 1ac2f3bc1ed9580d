"""Peer comparison: one durable step at synchronous=FULL in flowmasond, DBOS and LangGraph.

Run it in a throwaway virtualenv that holds the peers (they are never dependencies of
flowmasond; see bench/README.md):

    python3 -m venv /tmp/venv-peers
    /tmp/venv-peers/bin/pip install -e . dbos langgraph langgraph-checkpoint-sqlite
    /tmp/venv-peers/bin/python bench/bench_peers.py

Each round runs, back to back, a chain of ``--steps`` durable steps in each system, all on SQLite
files in the same directory: flowmasond's engine with the journal at FULL (one commit per stage),
a DBOS workflow of ``@DBOS.step`` calls on a SQLite system database, and a LangGraph graph of
``--steps`` nodes compiled with ``SqliteSaver`` (WAL, synchronous=FULL: one checkpoint commit per
node). The figure is µs per step; ratios are taken within a round and their medians reported.
A peer that is not installed is reported as such; the script still exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypedDict

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

from _common import Aim  # noqa: E402
from bench_engine import build_registry, chain_shape  # noqa: E402

from flowmasond.engine.dag import DAGExecutor  # noqa: E402
from flowmasond.engine.interfaces import RunStatus  # noqa: E402
from flowmasond.journal import Journal  # noqa: E402

DBOS_AIM = Aim("DBOS µs per durable step / flowmasond µs per durable step", 4.0, "x")
LANGGRAPH_AIM = Aim("LangGraph SqliteSaver µs per step / flowmasond µs per step", 3.0, "x")


def flowmasond_runner(directory: Path, steps: int) -> Callable[[int], float]:
    registry = build_registry()
    executor = DAGExecutor(registry, max_concurrency=20)
    shape = chain_shape(steps)

    async def once(i: int) -> float:
        async with await Journal.open(directory / f"fm-{i}.sqlite3", synchronous="FULL") as journal:
            await journal.create_run("peer", shape.pipeline, {})
            t0 = time.perf_counter()
            outcome = await executor.execute(shape.pipeline, {}, run_id="peer",
                                             store=journal.run_store("peer"))
            elapsed = time.perf_counter() - t0
        if outcome.status is not RunStatus.SUCCEEDED:
            raise RuntimeError(f"flowmasond run failed: {outcome.error}")
        return elapsed / steps * 1e6

    return lambda i: asyncio.run(once(i))


def dbos_runner(directory: Path, steps: int) -> Callable[[int], float] | str:
    try:
        from dbos import DBOS
    except ImportError as exc:
        return f"not installed ({exc})"
    DBOS(config={"name": "flowmasond-bench", "system_database_url":
                 f"sqlite:///{directory / 'dbos.sqlite3'}"})

    @DBOS.step()
    def step(i: int) -> int:
        return i

    @DBOS.workflow()
    def chain(n: int) -> int:
        total = 0
        for i in range(n):
            total += step(i)
        return total

    DBOS.launch()

    def once(i: int) -> float:
        t0 = time.perf_counter()
        chain(steps)
        return (time.perf_counter() - t0) / steps * 1e6

    return once


class _State(TypedDict):
    i: int


def langgraph_runner(directory: Path, steps: int) -> Callable[[int], float] | str:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        return f"not installed ({exc})"
    conn = sqlite3.connect(directory / "langgraph.sqlite3", check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()  # WAL mode
    conn.execute("PRAGMA synchronous=FULL")  # SQLite's default, stated: one fsync per commit
    graph: Any = StateGraph(_State)
    names = [f"n{k}" for k in range(steps)]
    for name in names:
        graph.add_node(name, lambda state: {"i": state["i"] + 1})
    graph.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    app = graph.compile(checkpointer=saver)

    def once(i: int) -> float:
        config = {"configurable": {"thread_id": f"t{i}"}, "recursion_limit": steps + 10}
        t0 = time.perf_counter()
        out = app.invoke({"i": 0}, config)
        elapsed = time.perf_counter() - t0
        if out["i"] != steps:
            raise RuntimeError(f"langgraph run ended at {out}")
        return elapsed / steps * 1e6

    return once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20 steps, 1 round")
    args = parser.parse_args(argv)
    steps, rounds = (20, 1) if args.quick else (args.steps, args.rounds)
    with tempfile.TemporaryDirectory(prefix="fm-bench-peers-") as tmp:
        directory = Path(tmp)
        runners: dict[str, Callable[[int], float] | str] = {
            "flowmasond": flowmasond_runner(directory, steps),
            "DBOS": dbos_runner(directory, steps),
            "LangGraph SqliteSaver": langgraph_runner(directory, steps)}
        ready = {name: r for name, r in runners.items() if not isinstance(r, str)}
        samples: dict[str, list[float]] = {name: [] for name in ready}
        for i in range(rounds + 1):  # round 0 warms every side up
            for name, run in ready.items():
                value = run(i)
                if i:
                    samples[name].append(value)
    print(f"{steps} durable steps per chain, {rounds} rounds interleaved, load average "
          f"{os.getloadavg()[0]:.1f}")
    for name, runner in runners.items():
        if isinstance(runner, str):
            print(f"  {name:22}: {runner}")
        else:
            print(f"  {name:22}: median {statistics.median(samples[name]):7.0f} µs/step "
                  f"(min {min(samples[name]):.0f})")
    print("\naims:" + (" (--quick sizes)" if args.quick else ""))
    fm = samples["flowmasond"]
    for name, aim in (("DBOS", DBOS_AIM), ("LangGraph SqliteSaver", LANGGRAPH_AIM)):
        if name not in samples:
            print(f"  {aim.name}: not measured ({runners[name]})")
            continue
        # A higher ratio is better: PASS when the peer is at least `limit` times slower.
        ratio = statistics.median(p / f for p, f in zip(samples[name], fm, strict=True))
        verdict = "PASS" if ratio >= aim.limit else "MISS"
        print(f"  {aim.name}: {ratio:.2f}x (aim >= {aim.limit:g}x) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
