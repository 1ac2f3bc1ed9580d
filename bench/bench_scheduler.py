"""Scheduler benchmark: 1,000 schedules due in the same second, and the memory of 1,000 pipelines.

    python bench/bench_scheduler.py                 # 1,000 schedules, ~30-40 s
    python bench/bench_scheduler.py --schedules 200 # smaller
    python bench/bench_scheduler.py --json          # the figures as one JSON document

Two real ``flowmasond`` processes run in the same invocation, one after the other:

* **baseline**: an empty daemon (no pipelines), for its resident memory;
* **loaded**: N one-stage pipelines (``variable_set``), each with one schedule ``*/15 * * * * *``
  (every 15 s: all N are due in the same second). After it is ready and idle, its resident memory
  is read; then one batch of N fires is measured from the journal: for the runs of one fire time,
  how late each was accepted (run row created) and started (``running``) against that fire time.

``max_concurrent_runs`` is set to N so that "started" measures the daemon, not a queue behind the
default limit of 8 (``--max-concurrent-runs 8`` shows that case). Figures are printed; the exit
status is 0 unless a daemon could not start or a fire was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flowmason_client.client import Client  # noqa: E402
from flowmason_client.errors import ClientError  # noqa: E402
from flowmasond.scheduling.cron import CronSchedule  # noqa: E402

CRON = "*/15 * * * * *"
PERIOD_S = 15.0
# A batch is measured only if the daemon is idle at least this long before its fire time.
LEAD_S = 2.0


class Daemon:
    """A flowmasond subprocess on its own state dir, socket and pipeline folder."""

    def __init__(self, root: Path, *, max_concurrent_runs: int) -> None:
        self.root = root
        for sub in ("state", "pipelines"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "flowmasond.toml").write_text(
            f"max_concurrent_runs = {max_concurrent_runs}\nshutdown_grace_s = 5.0\n"
            "[journal]\nretention_days = 30\n")
        self.socket = root / "flowmasond.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pipelines(self) -> Path:
        return self.root / "pipelines"

    @property
    def journal(self) -> Path:
        return self.root / "state" / "journal.sqlite3"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until the scheduler answers; returns the seconds that took."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET", "LISTEN_"))}
        started = time.monotonic()
        with open(self.root / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flowmasond.cli", "--state-dir", str(self.root / "state"),
                 "--socket", str(self.socket), "--pipelines", str(self.pipelines),
                 "--config", str(self.root / "flowmasond.toml")],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"flowmasond exited with {self.proc.returncode}; see {self.root / 'daemon.log'}")
            try:
                with Client(self.socket, timeout=10.0, connect_timeout=1.0) as client:
                    if client.status().schedules is not None and self._scheduler_up(client):
                        return time.monotonic() - started
            except ClientError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"flowmasond did not become ready in {timeout} s")

    def _scheduler_up(self, client: Client) -> bool:
        expected = sum(1 for _ in self.pipelines.glob("*.pipeline.json"))
        return len(client.schedules_list().schedules) == expected

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SystemExit("no VmRSS in /proc (Linux only)")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_pipelines(folder: Path, count: int) -> None:
    for i in range(count):
        definition = {"id": f"bench_{i:04d}",
                      "stages": [{"id": "out", "component_type": "variable_set", "config": {"variables": {"i": i}}}],
                      "schedules": [{"id": "s", "cron": CRON, "misfire": "skip", "overlap": "allow"}]}
        (folder / f"bench_{i:04d}.pipeline.json").write_text(json.dumps(definition))


def wait_idle_before_a_fire(daemon: Daemon, cron: CronSchedule) -> float:
    """The next fire time at least LEAD_S away with no run active before it (earlier batches done)."""
    with Client(daemon.socket, timeout=30.0) as client:
        while True:
            fire = cron.next_after(time.time() + LEAD_S)
            assert fire is not None
            while time.time() < fire - 0.5:
                status = client.status()
                if not status.active_runs and not status.queued_runs:
                    return fire
                time.sleep(0.1)


def batch_figures(journal: Path, fire_time: float, expected: int, timeout: float = 300.0) -> dict[str, Any]:
    """Wait until every run of ``fire_time`` finished; the lateness of acceptance and start, in seconds."""
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30.0)
    try:
        while True:
            rows = conn.execute("SELECT created_at, started_at, finished_at, status FROM runs WHERE fire_time = ?",
                                (fire_time,)).fetchall()
            fires = conn.execute("SELECT count(*) FROM schedule_fires WHERE fire_time = ?", (fire_time,)).fetchone()[0]
            if len(rows) >= expected and all(r[2] is not None for r in rows):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(rows)} of {expected} runs of the batch finished in {timeout} s")
            time.sleep(0.25)
    finally:
        conn.close()
    accepted = sorted(r[0] - fire_time for r in rows)
    started = sorted(r[1] - fire_time for r in rows)
    finished = sorted(r[2] - fire_time for r in rows)
    return {
        "runs": len(rows), "fires_recorded": fires, "succeeded": sum(1 for r in rows if r[3] == "succeeded"),
        "accepted_median_s": statistics.median(accepted), "accepted_last_s": accepted[-1],
        "started_median_s": statistics.median(started), "started_last_s": started[-1],
        "finished_last_s": finished[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--max-concurrent-runs", type=int, default=None, help="default: --schedules")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    count = args.schedules
    limit = args.max_concurrent_runs or count
    cron = CronSchedule.parse(CRON)

    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp:
        baseline = Daemon(Path(tmp) / "baseline", max_concurrent_runs=limit)
        try:
            baseline_start = baseline.start()
            time.sleep(1.0)  # let start-up garbage settle before reading memory
            baseline_rss = baseline.rss_mb()
        finally:
            baseline.stop()

        loaded = Daemon(Path(tmp) / "loaded", max_concurrent_runs=limit)
        write_pipelines(loaded.pipelines, count)
        try:
            loaded_start = loaded.start()
            fire_time = wait_idle_before_a_fire(loaded, cron)
            loaded_rss = loaded.rss_mb()
            figures = batch_figures(loaded.journal, fire_time, count)
            after_rss = loaded.rss_mb()
        finally:
            loaded.stop()

    result = {
        "schedules": count, "cron": CRON, "max_concurrent_runs": limit,
        "batch": figures,
        "memory_mb": {"empty_daemon": round(baseline_rss, 1), "loaded_idle": round(loaded_rss, 1),
                      "loaded_after_batch": round(after_rss, 1),
                      "per_pipeline_kb": round((loaded_rss - baseline_rss) * 1024 / max(count, 1), 1),
                      "ratio_loaded_to_empty": round(loaded_rss / baseline_rss, 2)},
        "startup_s": {"empty_daemon": round(baseline_start, 2), "loaded": round(loaded_start, 2)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        b, m = figures, result["memory_mb"]
        print(f"scheduler: {count} schedules due in the same second ({CRON}), max_concurrent_runs={limit}")
        print(f"  fires recorded          {b['fires_recorded']} (runs {b['runs']}, succeeded {b['succeeded']})")
        print(f"  accepted  (run created) median {b['accepted_median_s'] * 1000:8.0f} ms   last {b['accepted_last_s'] * 1000:8.0f} ms after the fire time")
        print(f"  started   (running)     median {b['started_median_s'] * 1000:8.0f} ms   last {b['started_last_s'] * 1000:8.0f} ms")
        print(f"  finished                                      last {b['finished_last_s'] * 1000:8.0f} ms")
        print(f"memory (VmRSS of the daemon process)")
        print(f"  empty daemon (baseline) {m['empty_daemon']:8.1f} MB")
        print(f"  {count} pipelines, idle  {m['loaded_idle']:8.1f} MB   (+{m['loaded_idle'] - m['empty_daemon']:.1f} MB, "
              f"{m['per_pipeline_kb']:.1f} KB per pipeline, x{m['ratio_loaded_to_empty']})")
        print(f"  after the batch         {m['loaded_after_batch']:8.1f} MB")
        print(f"start-up to scheduler ready: empty {result['startup_s']['empty_daemon']:.2f} s, "
              f"loaded {result['startup_s']['loaded']:.2f} s")
        last_ms = b['started_last_s'] * 1000
        print(f"aims: (load average {os.getloadavg()[0]:.1f})")
        print(f"  every run started after its fire time: last {last_ms:.0f} ms "
              f"(aim <= 250 ms) {'PASS' if last_ms <= 250 else 'MISS'}")
    return 0 if figures["fires_recorded"] == count and figures["runs"] == count else 1


if __name__ == "__main__":
    sys.exit(main())
