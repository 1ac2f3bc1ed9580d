"""A writer process killed with SIGKILL mid-stream leaves a sound journal holding every ack."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

from journal_helpers import integrity, make_pipeline

from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.journal import Journal

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4

# Four tasks commit as fast as they can (so commits are grouped); each prints a path only after
# its commit returned, i.e. once the journal acknowledged it as durable.
CHILD = r"""
import asyncio, sys
import structlog
# stdout carries only acknowledged paths: the journal's own log lines (e.g. "commits move to the
# writer thread" on a loaded machine) go to stderr.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import ComponentResult, Record, StageStatus
from flowmasond.journal import Journal

async def main(path, run_id, prefix, workers):
    journal = await Journal.open(path)
    store = journal.run_store(run_id)

    async def worker(w):
        i = 0
        while True:
            path = f"{prefix}/w{w}/{i}"
            await store.mark_started(path, 1, durable=False)
            result = ComponentResult(stage_id="step", component_type="echo",
                                     status=StageStatus.SUCCESS,
                                     output={"i": i, "pad": "z" * 700}, attempts=1)
            await store.commit([Record.of_result(path, result),
                                Record.of_state(f"{prefix}/w{w}", ControlFlowState.loop([i]))])
            sys.stdout.write(path + "\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def _run_and_kill(db_path: Path, prefix: str, acks_before_kill: int) -> list[str]:
    """Start the writer child, SIGKILL it after some acks; return every path it acknowledged."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db_path), "run", prefix, str(WORKERS),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[str] = []
    try:
        while len(acked) < acks_before_kill:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            if not line:
                raise AssertionError((await proc.stderr.read()).decode())
            acked.append(line.decode().rstrip("\n"))
    finally:
        proc.send_signal(signal.SIGKILL)
    rest = await proc.stdout.read()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Lines printed before the kill are acknowledged; a torn last line was not finished printing.
    acked.extend(line.decode() for line in rest.split(b"\n")[:-1])
    return acked


def _committed_paths(db_path: Path) -> tuple[list[int], list[str]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT seq, path FROM run_records WHERE run_id = 'run' AND "
                            "kind = 'result' ORDER BY seq").fetchall()
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM run_records WHERE run_id = 'run' ORDER BY seq")]
    finally:
        conn.close()
    return seqs, [r[1] for r in rows]


async def test_sigkilled_writer_loses_no_acknowledged_commit(db_path: Path) -> None:
    """After SIGKILLs mid-stream the journal passes integrity_check, holds every acknowledged
    record, and per writer task holds a gap-free prefix of its commits."""
    journal = await Journal.open(db_path)
    await journal.create_run("run", make_pipeline(), {})
    await journal.close()
    rng = random.Random(20240611)
    acked: list[str] = []

    for round_no in range(2):
        acked += await _run_and_kill(db_path, f"round{round_no}", rng.randint(20, 80))

        assert integrity(db_path) == "ok"
        seqs, committed = _committed_paths(db_path)
        assert seqs == list(range(1, len(seqs) + 1))
        assert set(acked) <= set(committed)
        per_task: dict[str, list[int]] = defaultdict(list)
        for path in committed:
            task, index = path.rsplit("/", 1)
            per_task[task].append(int(index))
        assert all(indexes == list(range(len(indexes))) for indexes in per_task.values())

    reopened = await Journal.open(db_path)
    try:
        snapshot = await reopened.load_snapshot("run")
    finally:
        await reopened.close()
    assert set(acked) <= set(snapshot.results)
    for task, indexes in per_task.items():
        assert snapshot.states[task] == ControlFlowState.loop([max(indexes)])
