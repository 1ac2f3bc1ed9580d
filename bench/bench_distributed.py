"""Stages across workers: a 20-wide wave run locally on its owner vs distributed over three nodes.

``python bench/bench_distributed.py`` (``--quick``: 3 runs per case). A throwaway PostgreSQL server
is started as in the tests (tests/pg_support.py) and three real cluster nodes on it, each with
``stage_workers = 8``. Every run is a 20-wide wave plus a stage joining it, submitted to node ``a``
one at a time; the clock runs from ``runs.start`` until the database holds the run ``succeeded``.
Two kinds of stages: ``variable_set`` (no work: the figure is the cost of handing a stage to a
worker and back) and ``sleep`` 100 ms (a stage waiting on I/O). Cases: the same pipeline without
``distribute`` (the baseline, measured in the same run) and with it. Medians over the runs.
Always exits 0 when the runs succeed: benchmarks report, they do not fail CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
for extra in (_REPO, _REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(1, str(extra))

import psycopg  # noqa: E402

from flowmason_client.client import AsyncClient  # noqa: E402
from pg_support import start_server  # noqa: E402

WIDTH = 20


def wave(pipeline_id: str, component: str, config: dict[str, Any], distribute: bool) -> dict[str, Any]:
    stages: list[dict[str, Any]] = [{"id": f"w{i}", "component_type": component, "config": config}
                                    for i in range(1, WIDTH + 1)]
    stages.append({"id": "join", "component_type": "variable_set", "depends_on": [s["id"] for s in stages],
                   "config": {"variables": {"done": True}}})
    return {"id": pipeline_id, "distribute": distribute, "stages": stages}


PIPELINES = {
    "noop_local": wave("noop_local", "variable_set", {"variables": {"n": "{{input.n}}"}}, False),
    "noop_distributed": wave("noop_distributed", "variable_set", {"variables": {"n": "{{input.n}}"}}, True),
    "sleep_local": wave("sleep_local", "sleep", {"seconds": 0.1}, False),
    "sleep_distributed": wave("sleep_distributed", "sleep", {"seconds": 0.1}, True),
}


class Node:
    """One flowmasond cluster node (subprocess) holding every benchmark pipeline."""

    def __init__(self, root: Path, name: str, dsn: str) -> None:
        self.root = root / name
        self.socket = self.root / "fm.sock"
        pipelines = self.root / "pipelines"
        pipelines.mkdir(parents=True)
        for pipeline_id, definition in PIPELINES.items():
            (pipelines / f"{pipeline_id}.pipeline.json").write_text(json.dumps(definition))
        (self.root / "flowmasond.toml").write_text(
            "max_concurrency = 20\nshutdown_grace_s = 0.5\nlog_level = \"warning\"\n"
            f"[journal]\nbackend = \"postgresql\"\ndsn = \"{dsn}\"\n"
            f"[cluster]\nenabled = true\nnode_id = \"{name}\"\nlease_seconds = 15\nheartbeat_seconds = 5\n"
            "stage_workers = 8\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMASON_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowmasond.cli", "--config", str(self.root / "flowmasond.toml"),
             "--state-dir", str(self.root / "state"), "--socket", str(self.socket), "--pipelines", str(pipelines)],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "daemon.log", "wb"), env=env)

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with AsyncClient(self.socket, timeout=2, connect_timeout=1) as c:
                    if (await c.health()).status == "ok":
                        return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("node did not start: " + (self.root / "daemon.log").read_text()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def one_run(client: AsyncClient, conn: Any, pipeline_id: str, n: int) -> float:
    """Seconds from submitting one run to the database holding it succeeded."""
    t0 = time.perf_counter()
    run_id = (await client.runs_start(pipeline_id, {"n": n})).run_id
    while True:
        row = await (await conn.execute(b"SELECT status FROM runs WHERE run_id = %s", (run_id,))).fetchone()
        if row and row[0] == "succeeded":
            return time.perf_counter() - t0
        if row and row[0] in ("failed", "cancelled", "interrupted"):
            raise RuntimeError(f"run {run_id} of {pipeline_id} ended {row[0]}")
        await asyncio.sleep(0.002)


async def main_async(args: argparse.Namespace) -> int:
    runs = 3 if args.quick else 20
    server = start_server()
    nodes: list[Node] = []
    try:
        dsn = server.dsn(server.create_database())
        with tempfile.TemporaryDirectory(prefix="fm-bench-distributed-") as tmp:
            nodes = [Node(Path(tmp), name, dsn) for name in ("a", "b", "c")]
            await asyncio.gather(*(n.ready() for n in nodes))
            times: dict[str, list[float]] = {p: [] for p in PIPELINES}
            async with AsyncClient(nodes[0].socket) as client, \
                    await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                for pipeline_id in PIPELINES:  # one warm-up run each
                    await one_run(client, conn, pipeline_id, -1)
                for k in range(runs):  # interleaved, so load changes hit every case alike
                    for pipeline_id in PIPELINES:
                        times[pipeline_id].append(await one_run(client, conn, pipeline_id, k))
            for n in nodes:
                n.stop()
            nodes = []
    finally:
        for n in nodes:
            n.stop()
        server.destroy()
    med = {p: statistics.median(v) * 1000 for p, v in times.items()}
    print(f"20-wide wave + join, one run at a time, median of {runs} runs (ms per run):")
    for kind, what in (("noop", "variable_set (no work)"), ("sleep", "sleep 100 ms")):
        local, dist = med[f"{kind}_local"], med[f"{kind}_distributed"]
        print(f"  {what:24s} local {local:8.1f}   distributed over 3 nodes {dist:8.1f}   "
              f"ratio {dist / local:5.2f}x   handing one stage out: {(dist - local) / WIDTH:6.2f} ms more per stage")
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per case, for a smoke run")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
