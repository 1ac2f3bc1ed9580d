"""The real daemon on the PostgreSQL journal: runs, a SIGKILL mid-run, one owner, the database restarting.

Shell stages append ``<path> <attempt>`` to a ledger file before their work, so each test sees
exactly which stages ran and how often; a gate file holds one stage "running" for as long as the
test wants.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from daemon_support import DaemonProcess
from pg_support import PgServer

EX_TEMPFAIL = 75
EX_CONFIG = 78
LEDGER_LINE = 'echo "$FLOWMASON_STAGE_PATH $FLOWMASON_ATTEMPT" >> "$LEDGER"'
WAIT_FOR_GATE = 'while [ ! -e "$GATE" ]; do sleep 0.02; done'


def _stage(stage_id: str, command: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    stage: dict[str, Any] = {"id": stage_id, "component_type": "shell",
                             "config": {"command": f"{LEDGER_LINE}; {command}",
                                        "env": {"LEDGER": "{{input.ledger}}", "GATE": "{{input.gate}}"},
                                        "kill_grace_s": 0.5}}
    if depends_on:
        stage["depends_on"] = depends_on
    return stage


# one -> two -> wait (blocks until the gate file exists) -> last
GATED = {"id": "gated", "stages": [
    _stage("one", "true"), _stage("two", "true", ["one"]), _stage("wait", WAIT_FOR_GATE, ["two"]),
    _stage("last", "true", ["wait"])]}


def _ran(ledger: Path, path: str) -> list[int]:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return [int(line.split()[1]) for line in lines if line.split()[0] == path]


def _wait_until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _pg_config(dsn: str) -> dict[str, Any]:
    return {"shutdown_grace_s": 2.0, "cancel_grace_s": 0.5,
            "journal": {"backend": "postgresql", "dsn": dsn, "reconnect_timeout_s": 30.0}}


def _start_gated(daemon: DaemonProcess, tmp_path: Path) -> tuple[str, Path, Path]:
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    with daemon.client() as client:
        run_id = client.call("runs.start", {"pipeline_id": "gated",
                                            "inputs": {"ledger": str(ledger), "gate": str(gate)}})["run_id"]
    _wait_until(lambda: _ran(ledger, "wait"), "the gated stage to start")
    return run_id, ledger, gate


def test_a_daemon_on_postgresql_runs_a_pipeline_to_success(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], pg_dsn: str,
        tmp_path: Path) -> None:
    """With backend = "postgresql" the run, its results and its events are in the database, not in SQLite."""
    write_pipeline(GATED)
    daemon = daemon_factory(config=_pg_config(pg_dsn)).start()
    run_id, _ledger, gate = _start_gated(daemon, tmp_path)
    gate.touch()

    info = daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})

    assert info["status"] == "succeeded"
    with psycopg.connect(pg_dsn) as conn:
        paths = conn.execute("SELECT path FROM run_records WHERE run_id = %s ORDER BY seq", [run_id]).fetchall()
        kinds = {r[0] for r in conn.execute("SELECT kind FROM run_events WHERE run_id = %s", [run_id])}
    assert [p[0] for p in paths] == ["one", "two", "wait", "last"]
    assert {"run.created", "stage.started", "stage.completed", "run.status"} <= kinds
    assert not (daemon.state_dir / "journal.sqlite3").exists()


def test_sigkill_mid_run_then_restart_resumes_without_rerunning_committed_stages(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], pg_dsn: str,
        tmp_path: Path) -> None:
    """Killed while `wait` runs, a new daemon on the same database finishes the run: `one` and `two` never run again."""
    write_pipeline(GATED)
    daemon = daemon_factory(config=_pg_config(pg_dsn)).start()
    run_id, ledger, gate = _start_gated(daemon, tmp_path)
    assert daemon.proc is not None

    daemon.kill()
    assert daemon.proc.returncode == -9
    gate.touch()
    daemon.restart()
    info = daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})

    assert info["status"] == "succeeded"
    assert (_ran(ledger, "one"), _ran(ledger, "two"), _ran(ledger, "last")) == ([1], [1], [1])
    assert len(_ran(ledger, "wait")) == 2  # in flight at the kill: the only stage that runs again
    with psycopg.connect(pg_dsn) as conn:
        committed = conn.execute("SELECT path, count(*) FROM run_records WHERE run_id = %s AND kind = 'result' "
                                 "GROUP BY path", [run_id]).fetchall()
    assert dict(committed) == {"one": 1, "two": 1, "wait": 1, "last": 1}


def test_a_second_daemon_on_the_same_database_exits_75_naming_the_owner(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], pg_dsn: str,
        tmp_path: Path) -> None:
    """Another flowmasond (own state dir and socket) on a busy database exits 75 naming the first one's pid."""
    write_pipeline(GATED)
    first = daemon_factory(config=_pg_config(pg_dsn)).start()
    run_id, ledger, gate = _start_gated(first, tmp_path)
    assert first.proc is not None
    config = tmp_path / "second.toml"
    config.write_text(f'[journal]\nbackend = "postgresql"\ndsn = {json.dumps(pg_dsn)}\n')

    second = subprocess.run([sys.executable, "-m", "flowmasond.cli", "--state-dir", str(tmp_path / "second"),
                             "--socket", str(tmp_path / "second.sock"), "--pipelines", str(first.pipelines),
                             "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=first.env)

    assert second.returncode == EX_TEMPFAIL, second.stderr
    assert f"pid={first.proc.pid}" in second.stderr
    gate.touch()
    assert first.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert [_ran(ledger, p) for p in ("one", "two", "wait", "last")] == [[1], [1], [1], [1]]


def test_a_daemon_keeps_running_across_a_database_restart(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], pg_dsn: str,
        pg_server: PgServer, tmp_path: Path) -> None:
    """The server restarts while a stage runs: the daemon reconnects, the run finishes, nothing runs twice."""
    write_pipeline(GATED)
    daemon = daemon_factory(config=_pg_config(pg_dsn)).start()
    run_id, ledger, gate = _start_gated(daemon, tmp_path)

    pg_server.restart(mode="fast")
    gate.touch()
    info = daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})

    assert daemon.proc is not None and daemon.proc.poll() is None
    assert info["status"] == "succeeded"
    assert [_ran(ledger, p) for p in ("one", "two", "wait", "last")] == [[1], [1], [1], [1]]
    assert "journal reconnected" in daemon.log()


def test_a_postgresql_backend_without_a_dsn_is_a_configuration_error(
        daemon_factory: Callable[..., DaemonProcess]) -> None:
    """backend = "postgresql" and no dsn: exit 78 with a message naming journal.dsn."""
    daemon = daemon_factory(config={"journal": {"backend": "postgresql"}}).start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == EX_CONFIG
    assert "journal.dsn" in daemon.log()


def test_schedules_stage_logs_and_pauses_work_through_the_postgresql_journal(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], pg_dsn: str) -> None:
    """An every-second schedule fires runs (each fire recorded once), `flowmason logs` shows a shell
    stage's output, and a schedule paused before a restart is still paused after it."""
    write_pipeline({"id": "tick", "stages": [{"id": "say", "component_type": "shell",
                                              "config": {"command": "echo hello-from-$FLOWMASON_STAGE_PATH"}}],
                    "schedules": [{"id": "every", "cron": "* * * * * *", "overlap": "allow"}]})
    daemon = daemon_factory(config=_pg_config(pg_dsn)).start()

    def fired_runs() -> list[tuple[str, float]]:
        with psycopg.connect(pg_dsn) as conn:
            return [(str(r), float(t)) for r, t in conn.execute(
                "SELECT run_id, fire_time FROM runs WHERE schedule_id = 'every' AND status = 'succeeded'")]

    _wait_until(lambda: len(fired_runs()) >= 2, "two scheduled runs to succeed")
    paused = daemon.cli("schedule", "pause", "tick/every")
    assert paused.returncode == 0, paused.stderr
    logs = daemon.cli("logs", fired_runs()[0][0])
    daemon.stop()
    daemon.restart()
    listed = {r["name"]: r for r in json.loads(daemon.cli("schedules", "--json").stdout)}

    assert "hello-from-say" in logs.stdout, logs.stdout + logs.stderr
    with psycopg.connect(pg_dsn) as conn:
        fires = conn.execute("SELECT fire_time, count(*) FROM schedule_fires GROUP BY fire_time").fetchall()
    assert fires and all(count == 1 for _, count in fires)
    assert len({t for _, t in fired_runs()}) == len(fired_runs())  # one run per fire time
    assert listed["tick/every"]["paused"] is True


def test_a_daemon_started_before_its_database_waits_for_it_then_runs(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], pg_dsn: str,
        pg_server: PgServer, tmp_path: Path) -> None:
    """The server is down when the daemon starts: it logs that it waits, then opens the journal once it is up."""
    write_pipeline(GATED)
    pg_server.stop()
    daemon = daemon_factory(config=_pg_config(pg_dsn)).start(wait=False)
    _wait_until(lambda: "journal waiting for the database" in daemon.log(), "the daemon to report the wait")
    assert daemon.proc is not None and daemon.proc.poll() is None

    pg_server.start()
    daemon.wait_ready()
    run_id, _ledger, gate = _start_gated(daemon, tmp_path)
    gate.touch()

    assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert "journal database reachable" in daemon.log()


def test_a_database_that_stays_down_past_the_reconnect_timeout_stops_the_start_with_exit_1(
        daemon_factory: Callable[..., DaemonProcess], pg_dsn: str, pg_server: PgServer) -> None:
    """Still unreachable after reconnect_timeout_s: the daemon exits 1 naming the database, not a traceback."""
    pg_server.stop()
    config = _pg_config(pg_dsn)
    config["journal"]["reconnect_timeout_s"] = 1.0
    daemon = daemon_factory(config=config).start(wait=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(timeout=30)

    assert code == 1
    assert "journal connect failed" in daemon.log()
    assert "journal waiting for the database" in daemon.log()
