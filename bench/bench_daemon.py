"""Daemon benchmark: the real flowmasond subprocess over its real socket.

``python bench/bench_daemon.py`` (``--quick`` for a smoke run). Figures, each with its baseline from
the same run:
- latency from the ``runs.start`` call to the first stage starting (the journal's ``stage.started``
  timestamp), against a bare ``health`` round trip over the same socket;
- throughput of 200 one-stage runs submitted concurrently over the socket, against the same 200
  runs through the engine in this process with an in-memory store;
- the daemon's resident memory idle and with 100 runs active, against a Python process that has
  imported the daemon's modules and nothing else.
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
if str(_REPO) not in sys.path:
    sys.path.insert(1, str(_REPO))

from _common import Aim  # noqa: E402

from flowmason_client.client import AsyncClient  # noqa: E402
from flowmasond.engine.checkpoint import MemoryRunStore  # noqa: E402
from flowmasond.engine.dag import DAGExecutor  # noqa: E402
from flowmasond.engine.models import PipelineConfig  # noqa: E402
from flowmasond.engine.registry import ComponentRegistry  # noqa: E402

LATENCY_AIM = Aim("first stage starts after runs.start", 50.0, "ms")
IDLE_AIM = Aim("idle daemon resident memory", 80.0, "MB", strict=True)
THROUGHPUT_AIM_RUNS_S = 2500.0  # 200 concurrent one-stage runs through the daemon: at least this

ONE_STAGE = {"id": "one", "stages": [{"id": "only", "component_type": "variable_set",
                                      "config": {"variables": {"n": "{{input.n}}"}}}]}
HOLD = {"id": "hold", "stages": [{"id": "wait", "component_type": "sleep", "config": {"seconds": 30}}]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Daemon:
    """A flowmasond subprocess on a temp state dir and socket."""

    def __init__(self, root: Path, max_runs: int) -> None:
        self.root = root
        self.socket = root / "fm.sock"
        pipelines = root / "pipelines"
        pipelines.mkdir()
        for definition in (ONE_STAGE, HOLD):
            (pipelines / f"{definition['id']}.pipeline.json").write_text(json.dumps(definition))
        (root / "flowmasond.toml").write_text(
            f"max_concurrent_runs = {max_runs}\nshutdown_grace_s = 0.5\nlog_level = \"warning\"\n"
            "[journal]\nsynchronous = \"FULL\"\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMASON_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowmasond.cli", "--config", str(root / "flowmasond.toml"),
             "--state-dir", str(root / "state"), "--socket", str(self.socket), "--pipelines", str(pipelines)],
            stdout=subprocess.DEVNULL, stderr=open(root / "daemon.log", "wb"), env=env)

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with AsyncClient(self.socket, timeout=2, connect_timeout=1) as c:
                    await c.health()
                    return
            except Exception:  # noqa: BLE001 - not up yet
                await asyncio.sleep(0.05)
        raise RuntimeError("daemon did not start: " + (self.root / "daemon.log").read_text()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def wait_finished(client: AsyncClient, run_ids: list[str]) -> None:
    pending = set(run_ids)
    while pending:
        runs = (await client.runs_list(limit=1000)).runs
        done = {r.run_id for r in runs if r.status in ("succeeded", "failed", "cancelled", "interrupted")}
        failed = [r.run_id for r in runs if r.run_id in pending and r.status != "succeeded" and r.run_id in done]
        if failed:
            raise RuntimeError(f"runs did not succeed: {failed[:5]}")
        pending -= done
        if pending:
            await asyncio.sleep(0.01)


async def latency(daemon: Daemon, samples: int) -> tuple[float, float]:
    """Median ms from runs.start to the first stage starting, and of a health round trip."""
    firsts, healths = [], []
    async with AsyncClient(daemon.socket) as client:
        for i in range(samples):
            t0 = time.perf_counter()
            await client.health()
            healths.append((time.perf_counter() - t0) * 1000)
            wall0 = time.time()
            run = await client.runs_start("one", {"n": i})
            await wait_finished(client, [run.run_id])
            events = (await client.runs_events(run.run_id)).events
            started = [e.at for e in events if e.kind == "stage.started"]
            firsts.append((float(started[0]) - wall0) * 1000)
    return statistics.median(firsts), statistics.median(healths)


async def throughput(daemon: Daemon, count: int, connections: int) -> float:
    """Seconds for ``count`` one-stage runs submitted concurrently over ``connections`` clients."""
    per = count // connections
    t0 = time.perf_counter()

    async def submit(k: int) -> list[str]:
        async with AsyncClient(daemon.socket) as c:
            return [(await c.runs_start("one", {"n": k * per + j})).run_id for j in range(per)]

    ids = [rid for batch in await asyncio.gather(*(submit(k) for k in range(connections))) for rid in batch]
    async with AsyncClient(daemon.socket) as client:
        # Every run is running or queued once runs.start has answered; the batch is done when none
        # is. The daemon's status is a small reply: listing up to 1,000 runs every 10 ms, as
        # wait_finished does, took about a quarter of the daemon's event loop during the batch
        # (py-spy), which the figure then charged to the daemon.
        while True:
            status = await client.status()
            if not (status.active_runs or 0) and not (status.queued_runs or 0):
                break
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        await wait_finished(client, ids)  # and every one of them succeeded
    return elapsed


async def engine_baseline(count: int) -> float:
    registry = ComponentRegistry.with_builtins()
    executor = DAGExecutor(registry)
    pipeline = PipelineConfig.model_validate(ONE_STAGE)
    t0 = time.perf_counter()
    await asyncio.gather(*(executor.execute(pipeline, {"n": i}, store=MemoryRunStore()) for i in range(count)))
    return time.perf_counter() - t0


async def memory(daemon: Daemon, active: int) -> tuple[float, float]:
    idle = rss_mb(daemon.proc.pid)
    async with AsyncClient(daemon.socket) as client:
        ids = [(await client.runs_start("hold")).run_id for _ in range(active)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = await client.status()
            if (status.active_runs or 0) >= active:
                break
            await asyncio.sleep(0.05)
        busy = rss_mb(daemon.proc.pid)
        for rid in ids:
            await client.runs_cancel(rid)
    return idle, busy


def import_baseline_mb() -> float:
    code = ("import flowmasond.daemon, flowmasond.api.server, flowmasond.journal, flowmasond.runs, "
            "flowmasond.components.llm.nodes, flowmasond.engine.dag; import os;"
            "print([l for l in open(f'/proc/{os.getpid()}/status') if l.startswith('VmRSS')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.strip()) / 1024.0


async def main_async(args: argparse.Namespace) -> int:
    samples, count, connections, active = (5, 20, 4, 10) if args.quick else (30, 200, 20, 100)
    with tempfile.TemporaryDirectory(prefix="fm-bench-daemon-") as tmp:
        daemon = Daemon(Path(tmp), max_runs=max(active, 8))
        try:
            await daemon.ready()
            await asyncio.sleep(0.5)  # let start-up settle before the idle reading
            idle_rss = rss_mb(daemon.proc.pid)
            first_ms, health_ms = await latency(daemon, samples)
            seconds = await throughput(daemon, count, connections)
            _, busy_rss = await memory(daemon, active)
        finally:
            daemon.stop()
    base_s = await engine_baseline(count)
    base_rss = import_baseline_mb()
    print(f"latency runs.start -> first stage started: {first_ms:.1f} ms (median of {samples}); "
          f"health round trip {health_ms:.2f} ms; ratio {first_ms / health_ms:.0f}x")
    print(f"throughput: {count} one-stage runs over {connections} connections in {seconds:.2f} s "
          f"= {count / seconds:.0f} runs/s; engine in-process (no socket, no journal) {base_s:.2f} s "
          f"= {count / base_s:.0f} runs/s; ratio {seconds / base_s:.1f}x")
    print(f"memory: idle {idle_rss:.1f} MB, with {active} runs active {busy_rss:.1f} MB; "
          f"a process that only imported the daemon's modules {base_rss:.1f} MB")
    # The machine is shared: the load average says how much the figures above may have been slowed.
    print(f"aims: (load average {os.getloadavg()[0]:.1f})")
    for aim, value in ((LATENCY_AIM, first_ms), (IDLE_AIM, idle_rss)):
        print(f"  {aim.name}: {value:.1f} {aim.unit} ({aim.label}) {aim.verdict(value)}")
    rate = count / seconds
    print(f"  {count} concurrent one-stage runs through the daemon: {rate:.0f} runs/s "
          f"(aim >= {THROUGHPUT_AIM_RUNS_S:g} runs/s) {'PASS' if rate >= THROUGHPUT_AIM_RUNS_S else 'MISS'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
