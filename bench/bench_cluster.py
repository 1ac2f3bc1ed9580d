"""Cluster benchmark: 1,000 short runs through one node and through three nodes on one PostgreSQL.

``python bench/bench_cluster.py`` (``--quick``: 60 runs, a smoke run). A throwaway PostgreSQL server
is started as in the tests (tests/pg_support.py). Each node is a real flowmasond subprocess with
``[cluster]`` on (leases, fencing, heartbeats); the runs are one-stage pipelines submitted
concurrently over the nodes' sockets (round-robin over the three), and the clock stops when the
database holds every run ``succeeded``. Figures: runs/s of one node, of three, and their ratio;
the baseline measured in the same run is one daemon on the same server without ``[cluster]``
(the single-owner PostgreSQL journal).
Always exits 0 when the runs succeed: benchmarks report, they do not fail CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
for extra in (_REPO, _REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(1, str(extra))

import psycopg  # noqa: E402

from flowmason_client.client import AsyncClient  # noqa: E402
from pg_support import PgServer, start_server  # noqa: E402

SCALE_AIM = 1.5  # three nodes at least this many times one node's runs/s
ONE_STAGE = {"id": "one", "stages": [{"id": "only", "component_type": "variable_set",
                                      "config": {"variables": {"n": "{{input.n}}"}}}]}
CONNECTIONS_PER_NODE = 8


class Node:
    """One flowmasond cluster node (subprocess) on ``dsn``."""

    def __init__(self, root: Path, name: str, dsn: str, cluster: bool = True) -> None:
        self.root = root / name
        self.socket = self.root / "fm.sock"
        pipelines = self.root / "pipelines"
        pipelines.mkdir(parents=True)
        (pipelines / "one.pipeline.json").write_text(json.dumps(ONE_STAGE))
        (self.root / "flowmasond.toml").write_text(
            "max_concurrent_runs = 64\nshutdown_grace_s = 0.5\nlog_level = \"warning\"\n"
            f"[journal]\nbackend = \"postgresql\"\ndsn = \"{dsn}\"\n"
            + (f"[cluster]\nenabled = true\nnode_id = \"{name}\"\nlease_seconds = 15\nheartbeat_seconds = 5\n"
               if cluster else ""))
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


async def _succeeded(dsn: str, expected: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = await (await conn.execute(b"SELECT count(*) FILTER (WHERE status = 'succeeded'), "
                                            b"count(*) FILTER (WHERE status IN ('failed', 'cancelled', "
                                            b"'interrupted')) FROM runs")).fetchone()
            assert row is not None
            if row[1]:
                raise RuntimeError(f"{row[1]} runs did not succeed")
            if row[0] >= expected:
                return
            await asyncio.sleep(0.02)
    raise RuntimeError("the runs did not finish in time")


async def through(server: PgServer, root: Path, names: list[str], count: int, *, cluster: bool = True) -> float:
    """Seconds for ``count`` one-stage runs submitted round-robin to nodes ``names`` on a fresh database."""
    dsn = server.dsn(server.create_database())
    nodes = [Node(root, f"{name}-{len(names)}", dsn, cluster) for name in names]
    try:
        await asyncio.gather(*(n.ready() for n in nodes))
        sockets = [n.socket for n in nodes for _ in range(CONNECTIONS_PER_NODE)]
        per = count // len(sockets)
        extra = count - per * len(sockets)

        async def submit(k: int, sock: Path) -> None:
            async with AsyncClient(sock) as client:
                for j in range(per + (1 if k < extra else 0)):
                    await client.runs_start("one", {"n": k * 10_000 + j})

        t0 = time.perf_counter()
        await asyncio.gather(*(submit(k, s) for k, s in enumerate(sockets)))
        await _succeeded(dsn, count)
        return time.perf_counter() - t0
    finally:
        for n in nodes:
            n.stop()


async def main_async(args: argparse.Namespace) -> int:
    count = 60 if args.quick else 1000
    server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="fm-bench-cluster-") as tmp:
            single = await through(server, Path(tmp), ["single"], count, cluster=False)
            one = await through(server, Path(tmp), ["solo"], count)
            three = await through(server, Path(tmp), ["a", "b", "c"], count)
    finally:
        server.destroy()
    rate0, rate1, rate3 = count / single, count / one, count / three
    ratio = rate3 / rate1
    print(f"baseline, one daemon without [cluster] (single-owner PostgreSQL journal): {count} runs in "
          f"{single:.2f} s = {rate0:.0f} runs/s")
    print(f"one node:    {count} one-stage runs in {one:.2f} s = {rate1:.0f} runs/s")
    print(f"three nodes: {count} one-stage runs in {three:.2f} s = {rate3:.0f} runs/s")
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    print("aims:" + (" (--quick sizes: the figures are not comparable with the aims)" if args.quick else ""))
    print(f"  three nodes / one node: {ratio:.2f}x (aim >= {SCALE_AIM:g}x) {'PASS' if ratio >= SCALE_AIM else 'MISS'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 runs, for a smoke run")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
