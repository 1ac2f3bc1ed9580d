"""Kill-and-resume trials of generated pipelines, served to the test one case per request line.

Usage: python gen_runner.py   (reads JSON requests on stdin, writes one JSON answer per line)

Importing flowmasond takes most of a process start, so this process imports it once and then
*forks* a fresh process for every run: the uninterrupted oracle run, each run killed at a journal
commit (the writer's SIGKILL failpoint), and each recovery. A forked child shares nothing with the
others but the imported code: it opens the journal itself, as a new daemon would. The parent never
starts an event loop or a thread, so forking is safe. Trials of one case run ``parallel`` at a time.

The answer holds raw observations (exit codes, journal contents, ledger entries); the test decides
what they must satisfy (gen_checks.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from flowmasond.config import DaemonConfig  # noqa: E402
from flowmasond.journal import Journal  # noqa: E402
from flowmasond.journal.writer import FAILPOINT_ENV  # noqa: E402
from flowmasond.logs import configure_logging  # noqa: E402
from flowmasond.pipelines.catalog import PipelineCatalog  # noqa: E402
from flowmasond.runs import RunManager  # noqa: E402
from flowmasond.testing import build_registry  # noqa: E402

import gen_components  # noqa: E402

RUN_ID = "gen-root"
# Set by a request with "pg_dsn": every run of that case journals to PostgreSQL instead, each
# oracle/trial directory in its own schema of that database.
PG_DSN: str | None = None


def _pg_schema(case_dir: Path) -> str:
    import hashlib

    return "g_" + hashlib.sha256(str(case_dir).encode()).hexdigest()[:24]


def _pg_case_dsn(case_dir: Path) -> str:
    assert PG_DSN is not None
    return f"{PG_DSN} options='-c search_path={_pg_schema(case_dir)}'"


def _journal_exists(case_dir: Path) -> bool:
    if PG_DSN is None:
        return (case_dir / "state" / "journal.sqlite3").exists()
    import psycopg

    with psycopg.connect(_pg_case_dsn(case_dir)) as conn:
        row = conn.execute("SELECT to_regclass('run_records') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _query(case_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from the case's journal (SQLite file or PostgreSQL schema), read directly."""
    if PG_DSN is None:
        db = case_dir / "state" / "journal.sqlite3"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(_pg_case_dsn(case_dir)) as conn:
        return conn.execute(sql.encode()).fetchall()

# The builtin components' modules (httpx, pydantic models) are imported here, once, before any fork:
# otherwise every forked run imports them again, which cost ~200 ms of each ~250 ms run.
build_registry(gen_components)


# -- one run, in a forked child ------------------------------------------------------------------------
async def _drive(case_dir: Path, root: str, mode: str) -> dict[str, Any]:
    state = case_dir / "state"
    state.mkdir(exist_ok=True)
    config = DaemonConfig(state_dir=state, socket=state / "unused.sock", pipeline_dirs=[case_dir / "pipelines"],
                          max_concurrency=4, max_recovery_attempts=1000, cancel_grace_s=0.5)
    # NORMAL: a SIGKILLed process loses nothing that FULL would keep (the OS still holds its
    # writes); only a power cut tells them apart, and that is not what these trials test.
    journal: Any
    if PG_DSN is not None:
        from flowmasond.journal.postgres import PgJournal

        journal = await PgJournal.open(_pg_case_dsn(case_dir))
    else:
        journal = await Journal.open(config.journal_path, synchronous="NORMAL")
    try:
        registry = build_registry(gen_components)
        catalog = PipelineCatalog(registry, [case_dir / "pipelines"])
        catalog.load_all()
        manager = RunManager(journal=journal, catalog=catalog, registry=registry, config=config)
        if mode == "start":
            await manager.start(root, {"ledger": str(case_dir / "ledger.jsonl")}, run_id=RUN_ID)
        elif mode == "force":
            await manager.resume(RUN_ID, force=True)
        else:
            await manager.recover()
        while manager.active:
            await asyncio.gather(*(a.task for a in manager.active.values() if a.task is not None))
        row = await journal.get_run(RUN_ID)
        return {"status": row.status.value, "output": row.output, "error": row.error,
                "transactions": journal.stats().transactions}
    finally:
        await journal.close()


def _fork_run(case_dir: Path, root: str, mode: str, kill_after: int | None = None) -> dict[str, Any]:
    """Run one process to its end (or its SIGKILL); returns its exit code and report."""
    report_path = case_dir / f"report-{mode}.json"
    report_path.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            if kill_after is not None:
                os.environ[FAILPOINT_ENV] = str(kill_after)
            else:
                os.environ.pop(FAILPOINT_ENV, None)
            if PG_DSN is not None:
                import psycopg

                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    if mode == "start":  # a fresh run: never the journal of an earlier try of this case
                        conn.execute(f'DROP SCHEMA IF EXISTS "{_pg_schema(case_dir)}" CASCADE'.encode())
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{_pg_schema(case_dir)}"'.encode())
            with open(case_dir / "daemon.log", "a") as log_stream:
                configure_logging(level="error", stream=log_stream, json=True)
                report = asyncio.run(_drive(case_dir, root, mode))
            report_path.write_text(json.dumps(report))
        except BaseException:  # noqa: BLE001 - reported to the parent through the exit code and file
            (case_dir / "crash.txt").write_text(traceback.format_exc())
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    crash = (case_dir / "crash.txt").read_text() if (case_dir / "crash.txt").exists() else None
    return {"returncode": returncode, "report": report, "crash": crash}


# -- what the journal and the ledger hold ------------------------------------------------------------
def _journal_view(case_dir: Path) -> dict[str, Any]:
    """Per-stage statuses of every run (keyed by where the run sits under the root), results kept by a
    resume, and unhandled failures (which a resume retries), straight from the journal."""
    runs = {r: (parent, ppath) for r, parent, ppath in
            _query(case_dir, "SELECT run_id, parent_run_id, parent_path FROM runs")}
    # CAST: PostgreSQL stores handled as a boolean and output as json; SQLite as 0/1 and text.
    rows = _query(case_dir,
                  "SELECT run_id, path, status, CAST(handled AS INTEGER), CAST(output AS TEXT) FROM run_records"
                  " WHERE kind = 'result' ORDER BY run_id, seq")
    keys: dict[str, str] = {}

    def key(run_id: str) -> str:
        if run_id not in keys:
            parent, ppath = runs.get(run_id, (None, None))
            keys[run_id] = "" if parent is None else f"{key(parent)}{ppath}>"
        return keys[run_id]

    latest: dict[tuple[str, str], tuple[str, int, str | None]] = {}
    for run_id, path, status, handled, output in rows:
        latest[(run_id, path)] = (status, handled, output)
    statuses = {key(r) + p: s for (r, p), (s, _, _) in latest.items()}
    outputs = {key(r) + p: None if o is None else json.loads(o) for (r, p), (_, _, o) in latest.items()}
    kept = sorted([r, p] for (r, p), (s, h, _) in latest.items() if s != "failed" or h)
    unhandled = sorted([r, p] for (r, p), (s, h, _) in latest.items() if s == "failed" and not h)
    return {"statuses": statuses, "outputs": outputs, "kept": kept, "unhandled": unhandled,
            "run_keys": {r: key(r) for r in runs}}


def _integrity(case_dir: Path) -> str:
    if PG_DSN is None:
        with sqlite3.connect(case_dir / "state" / "journal.sqlite3") as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    # PostgreSQL checks its own pages; what the journal promises on top is seq 1..n without gaps.
    gaps = _query(case_dir, "SELECT run_id FROM run_records GROUP BY run_id HAVING max(seq) <> count(*)")
    return "ok" if not gaps else f"seq gaps in runs {sorted(r[0] for r in gaps)}"


def _ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_case(case_dir: Path, pipelines: dict[str, Any]) -> None:
    folder = case_dir / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    for pid, definition in pipelines.items():
        (folder / f"{pid}.pipeline.json").write_text(json.dumps({"id": pid, **definition}))


# -- a case -------------------------------------------------------------------------------------------
def _oracle(base: Path, pipelines: dict[str, Any], root: str) -> dict[str, Any]:
    case_dir = base / "oracle"
    _write_case(case_dir, pipelines)
    run = _fork_run(case_dir, root, "start")
    answer = {**run, "ledger": _ledger(case_dir / "ledger.jsonl")}
    if _journal_exists(case_dir):
        answer["journal"] = _journal_view(case_dir)
    return answer


def _trial(base: Path, pipelines: dict[str, Any], root: str, kill_after: int) -> dict[str, Any]:
    """Kill a fresh run after commit ``kill_after``, recover it in a fresh process (and, when it
    stopped for an operator on a stage not safe to repeat, resume it with force in another)."""
    case_dir = base / f"k{kill_after}"
    _write_case(case_dir, pipelines)
    killed = _fork_run(case_dir, root, "start", kill_after=kill_after)
    at_kill = _journal_view(case_dir) if _journal_exists(case_dir) else {"kept": [], "unhandled": [], "statuses": {}}
    ledger_at_kill = len(_ledger(case_dir / "ledger.jsonl"))
    phases = [killed]
    recovered = _fork_run(case_dir, root, "recover")
    phases.append(recovered)
    report = recovered["report"] or {}
    if report.get("status") == "interrupted" and (report.get("error") or {}).get("code") == "unsafe_to_repeat":
        phases.append(_fork_run(case_dir, root, "force"))
    return {"kill_after": kill_after, "phases": phases, "at_kill": at_kill, "ledger_at_kill": ledger_at_kill,
            "ledger": _ledger(case_dir / "ledger.jsonl"),
            "journal": _journal_view(case_dir) if _journal_exists(case_dir) else None,
            "integrity": _integrity(case_dir) if _journal_exists(case_dir) else "no journal"}


def _trials(base: Path, pipelines: dict[str, Any], root: str, points: list[int], parallel: int) -> list[Any]:
    """Run the trials in forked processes, ``parallel`` at a time; each writes its answer to a file."""
    results: dict[int, Any] = {}
    running: dict[int, int] = {}
    queue = list(points)
    while queue or running:
        while queue and len(running) < parallel:
            k = queue.pop(0)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    answer = _trial(base, pipelines, root, k)
                    (base / f"trial-{k}.json").write_text(json.dumps(answer))
                except BaseException:  # noqa: BLE001
                    (base / f"trial-{k}.err").write_text(traceback.format_exc())
                    code = 1
                os._exit(code)
            running[pid] = k
        pid, _ = os.waitpid(-1, 0)
        k = running.pop(pid)
        out = base / f"trial-{k}.json"
        results[k] = json.loads(out.read_text()) if out.exists() else {
            "kill_after": k, "error": (base / f"trial-{k}.err").read_text()
            if (base / f"trial-{k}.err").exists() else "trial process died"}
    return [results[k] for k in points]


def serve() -> None:
    """Answer requests: {dir, pipelines, root, kill_points: "all" | int, seed, parallel}."""
    import random

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        global PG_DSN
        PG_DSN = request.get("pg_dsn")
        base = Path(request["dir"])
        base.mkdir(parents=True, exist_ok=True)
        oracle = _oracle(base, request["pipelines"], request["root"])
        total = ((oracle.get("report") or {}).get("transactions")) or 0
        # After the last commit (the final status) there is nothing left to recover.
        candidates = list(range(1, total))
        wanted = request["kill_points"]
        if wanted != "all" and len(candidates) > int(wanted):
            candidates = sorted(random.Random(request["seed"]).sample(candidates, int(wanted)))
        trials = _trials(base, request["pipelines"], request["root"], candidates,
                         int(request.get("parallel", 2))) if oracle["returncode"] == 0 else []
        sys.stdout.write(json.dumps({"oracle": oracle, "trials": trials}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
