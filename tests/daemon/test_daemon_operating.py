"""Operating runs through the real daemon and the real `flowmason` command: rerun and fork,
stage logs, breakpoints and stepping, terminate, delete and prune."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest

from daemon_acceptance_support import WAIT_FOR_GATE, ran, read_ledger, shell_stage, wait_until
from daemon_support import DaemonProcess

# extract -> transform -> load, and audit beside them (it depends on nothing).
FORKABLE: dict[str, Any] = {
    "id": "forkable",
    "stages": [
        shell_stage("extract", "echo extracted"),
        shell_stage("audit", "echo audited >&2"),
        shell_stage("transform", "echo transformed {{input.tag}}", depends_on=["extract"]),
        shell_stage("load", "echo loaded", depends_on=["transform"]),
    ],
}

# Prints a line, waits for the test's gate file, prints another: output that arrives over time.
TALKER: dict[str, Any] = {
    "id": "talker",
    "stages": [shell_stage("talk", f"echo first line; {WAIT_FOR_GATE}; echo second line", gate="gate"),
               {"id": "note", "component_type": "logger", "depends_on": ["talk"],
                "config": {"message": "talk finished", "data": {"lines": 2}}}],
}

SLEEPER: dict[str, Any] = {
    "id": "sleeper",
    "stages": [shell_stage("nap", "sleep 30")],
}

FAILER: dict[str, Any] = {
    "id": "failer",
    "stages": [shell_stage("boom", "exit 3")],
}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """One daemon for the module; a long cancel grace so that terminate's 'no grace' shows."""
    return module_daemon_factory(config={"cancel_grace_s": 20.0, "stage_log_max_bytes": 4096},
                                 pipelines=[FORKABLE, TALKER, SLEEPER, FAILER])


def _start(daemon: DaemonProcess, *args: str) -> str:
    done = daemon.cli("run", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["run_id"]


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _finished(daemon: DaemonProcess, run_id: str) -> dict[str, Any]:
    return daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})


def test_fork_reuses_independent_stages_and_reruns_from_the_stage(daemon: DaemonProcess, tmp_path: Path) -> None:
    """rerun --from transform: extract and audit are reused (their side effects do not happen again),
    transform and load run again, and show names the source run and stage."""
    ledger = tmp_path / "ledger.txt"
    source = _start(daemon, "forkable", "-i", f"ledger={ledger}", "-i", "tag=v1")
    assert _finished(daemon, source)["status"] == "succeeded"
    assert sorted(line.split()[0] for line in read_ledger(ledger)) == ["audit", "extract", "load", "transform"]
    ledger.write_text("")

    forked = _json(daemon.cli("rerun", source, "--from", "transform", "--json"))
    info = _finished(daemon, forked["run_id"])
    assert info["status"] == "succeeded"
    assert [line.split()[0] for line in read_ledger(ledger)] == ["transform", "load"]
    assert info["forked_from"] == source and info["from_stage"] == "transform"
    assert {s["path"]: s.get("reused") for s in info["stages"]} == {
        "extract": True, "audit": True, "transform": False, "load": False}
    shown = daemon.cli("show", forked["run_id"])
    assert f"rerun of {source} from stage transform (2 stage results reused)" in shown.stdout


def test_rerun_with_an_override_runs_everything_with_the_new_input(daemon: DaemonProcess, tmp_path: Path) -> None:
    """rerun without --from runs every stage again, with the source's inputs and the override."""
    ledger = tmp_path / "ledger.txt"
    source = _start(daemon, "forkable", "-i", f"ledger={ledger}", "-i", "tag=v1")
    _finished(daemon, source)
    rerun = _json(daemon.cli("rerun", source, "-i", "tag=v2", "--json"))
    info = _finished(daemon, rerun["run_id"])
    assert info["status"] == "succeeded" and info["inputs"] == {"ledger": str(ledger), "tag": "v2"}
    assert sorted(ran(ledger, "transform")) == [1, 1]
    logs = daemon.cli("logs", rerun["run_id"], "transform")
    assert logs.returncode == 0 and "transformed v2" in logs.stdout


def test_fork_from_an_unknown_stage_names_it(daemon: DaemonProcess, tmp_path: Path) -> None:
    """rerun --from a stage the pipeline does not have fails with one line naming the stage."""
    source = _start(daemon, "forkable", "-i", f"ledger={tmp_path / 'l'}", "-i", "tag=x")
    _finished(daemon, source)
    done = daemon.cli("rerun", source, "--from", "nope")
    assert done.returncode == 1
    assert "no stage 'nope'" in done.stderr and "Traceback" not in done.stderr


def test_logs_follow_prints_a_stage_output_as_it_is_written(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`logs RUN --follow` shows the stage's first line while the stage is still running, then the rest and
    the logger stage's message, and ends when the run ends."""
    gate = tmp_path / "gate"
    run_id = _start(daemon, "talker", "-i", f"ledger={tmp_path / 'l'}", "-i", f"gate={gate}")
    follower = subprocess.Popen([sys.executable, "-m", "flowmason_client.cli", "--socket", str(daemon.socket),
                                 "logs", run_id, "--follow"], stdout=subprocess.PIPE, text=True, env=daemon.env)
    try:
        assert follower.stdout is not None
        seen: list[str] = []
        while "first line\n" not in seen:
            line = follower.stdout.readline()
            assert line, f"the follower ended early: {seen}"
            seen.append(line)
        # The stage is blocked on the gate: its first line came live, not at the end.
        assert "second line\n" not in seen
        assert daemon.client().call("runs.show", {"run_id": run_id})["status"] == "running"
        gate.touch()
        rest, _ = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0
    assert "second line\n" in rest
    assert 'info: talk finished {"lines": 2}' in rest
    assert _finished(daemon, run_id)["status"] == "succeeded"


def test_stage_logs_are_bounded_per_stage(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Output past stage_log_max_bytes is not kept, and the log says how much was dropped."""
    noisy = {"id": "noisy", "stages": [shell_stage("spew", "yes x | head -c 10000")]}
    (daemon.pipelines / "noisy.pipeline.json").write_text(json.dumps(noisy))
    wait_until(lambda: "noisy" in daemon.cli("pipelines").stdout, what="the new pipeline to load")
    run_id = _start(daemon, "noisy", "-i", f"ledger={tmp_path / 'l'}")
    assert _finished(daemon, run_id)["status"] == "succeeded"
    result = daemon.client().call("runs.logs", {"run_id": run_id})
    kept = "".join(c["text"] for c in result["logs"] if c["stream"] == "stdout")
    assert kept == "x\n" * 2048
    assert any("5904 more bytes of output were not kept" in c["text"] for c in result["logs"])


def test_terminate_stops_at_once_without_the_grace(daemon: DaemonProcess, tmp_path: Path) -> None:
    """terminate ends a run `cancelled` well within the 20 s cancel grace; --json shows the state after."""
    ledger = tmp_path / "ledger.txt"
    run_id = _start(daemon, "sleeper", "-i", f"ledger={ledger}")
    wait_until(lambda: ran(ledger, "nap"), what="the stage to start")
    started = time.monotonic()
    info = _json(daemon.cli("terminate", run_id, "--json"))
    assert info["status"] == "cancelled"
    assert time.monotonic() - started < 10


def test_delete_removes_a_finished_run_and_refuses_an_active_one(daemon: DaemonProcess, tmp_path: Path) -> None:
    """delete removes a finished run (show then says not found); a running run is refused."""
    ledger = tmp_path / "ledger.txt"
    done_id = _start(daemon, "failer", "-i", f"ledger={ledger}")
    _finished(daemon, done_id)
    assert _json(daemon.cli("delete", done_id, "--json"))["runs"] == [{"run_id": done_id}]
    missing = daemon.cli("show", done_id)
    assert missing.returncode == 1 and done_id in missing.stderr

    busy = _start(daemon, "sleeper", "-i", f"ledger={tmp_path / 'l2'}")
    wait_until(lambda: ran(tmp_path / "l2", "nap"), what="the stage to start")
    refused = daemon.cli("delete", busy)
    assert refused.returncode == 1 and "only finished runs can be deleted" in refused.stderr
    daemon.cli("terminate", busy)


def test_step_runs_one_stage_then_pauses_again(daemon: DaemonProcess, tmp_path: Path) -> None:
    """A run paused before transform: step runs transform and pauses before load; continue finishes it."""
    ledger = tmp_path / "ledger.txt"
    run_id = _start(daemon, "forkable", "-i", f"ledger={ledger}", "-i", "tag=s", "--break-at", "transform")
    info = daemon.wait_for_status(run_id, {"paused"})
    assert list(info["paused_at"]) == ["transform"]
    waiting = info["paused_at"]["transform"]["inputs"]
    # The resolved config: the input value reaches the command as data through the stage's environment.
    assert "echo transformed" in waiting["command"] and "s" in waiting["env"].values()
    assert ran(ledger, "transform") == []

    assert daemon.cli("step", run_id).returncode == 0
    info = wait_until(lambda: (i := daemon.client().call("runs.show", {"run_id": run_id}))["status"] == "paused"
                      and "load" in (i["paused_at"] or {}) and i, what="a pause before load")
    assert ran(ledger, "transform") == [1] and ran(ledger, "load") == []

    assert daemon.cli("continue", run_id).returncode == 0
    assert _finished(daemon, run_id)["status"] == "succeeded"
    assert ran(ledger, "load") == [1]


def test_break_on_a_running_run_pauses_it_before_that_stage(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`flowmason break RUN STAGE` on a running run pauses it before STAGE."""
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    run_id = _start(daemon, "talker", "-i", f"ledger={ledger}", "-i", f"gate={gate}")
    wait_until(lambda: ran(ledger, "talk"), what="talk to start")
    out = daemon.cli("break", run_id, "note")
    assert out.returncode == 0 and "breakpoints: note" in out.stdout
    gate.touch()
    info = daemon.wait_for_status(run_id, {"paused"})
    assert info["paused_at"]["note"]["inputs"]["message"] == "talk finished"
    assert daemon.cli("continue", run_id).returncode == 0
    assert _finished(daemon, run_id)["status"] == "succeeded"


def test_prune_removes_exactly_what_its_dry_run_listed(daemon: DaemonProcess, tmp_path: Path) -> None:
    """prune --before --status failed --dry-run lists runs; prune with the same arguments deletes exactly
    those, and a succeeded run of the same period stays."""
    failed = [_start(daemon, "failer", "-i", f"ledger={tmp_path / 'l'}") for _ in range(3)]
    kept = _start(daemon, "forkable", "-i", f"ledger={tmp_path / 'k'}", "-i", "tag=k")
    for run_id in [*failed, kept]:
        _finished(daemon, run_id)
    before = datetime.fromtimestamp(time.time() + 1).isoformat()
    listed = _json(daemon.cli("prune", "--before", before, "--status", "failed", "--dry-run", "--json"))
    listed_ids = {r["run_id"] for r in listed["runs"]}
    assert set(failed) <= listed_ids and kept not in listed_ids
    assert daemon.cli("show", failed[0]).returncode == 0  # a dry run deletes nothing

    pruned = _json(daemon.cli("prune", "--before", before, "--status", "failed", "--json"))
    assert {r["run_id"] for r in pruned["runs"]} == listed_ids
    remaining = {r["run_id"] for r in _json(daemon.cli("runs", "--limit", "1000", "--json"))}
    assert not (remaining & listed_ids) and kept in remaining


def test_json_and_socket_are_accepted_before_or_after_the_subcommand(daemon: DaemonProcess) -> None:
    """`flowmason --json status` and `flowmason status --json --socket S` print the same JSON shape."""
    first = subprocess.run([sys.executable, "-m", "flowmason_client.cli", "--socket", str(daemon.socket),
                            "--json", "status"], capture_output=True, text=True, env=daemon.env)
    second = subprocess.run([sys.executable, "-m", "flowmason_client.cli", "status", "--json",
                             "--socket", str(daemon.socket)], capture_output=True, text=True, env=daemon.env)
    assert json.loads(first.stdout).keys() == json.loads(second.stdout).keys()


def test_run_follow_prints_the_run_id_first(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`run --follow` prints the new run's id on its first line."""
    done = daemon.cli("run", "forkable", "-i", f"ledger={tmp_path / 'l'}", "-i", "tag=f", "--follow")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("run r") and first.endswith(" started")


def test_runs_limit_out_of_range_is_one_usage_line(daemon: DaemonProcess) -> None:
    """`runs --limit 0` is a usage error of one line, not a validation dump."""
    done = daemon.cli("runs", "--limit", "0")
    assert done.returncode == 2
    assert "outside 1..1000" in done.stderr and "pydantic" not in done.stderr


def test_breakpoint_survives_a_daemon_restart(daemon_factory: Callable[..., DaemonProcess],
                                              write_pipeline: Callable[[dict[str, Any]], Path],
                                              tmp_path: Path) -> None:
    """A run paused before load stays paused across a daemon stop and start (load never ran), shows the
    inputs load will receive, and `continue` after the restart runs load once and finishes the run."""
    write_pipeline(FORKABLE)
    first = daemon_factory(config={"shutdown_grace_s": 2.0}).start()
    ledger = tmp_path / "ledger.txt"
    run_id = _start(first, "forkable", "-i", f"ledger={ledger}", "-i", "tag=r", "--break-at", "load")
    first.wait_for_status(run_id, {"paused"})
    assert first.stop() == 0
    assert first.proc is not None and first.proc.returncode == 0  # it really stopped

    second = daemon_factory(config={"shutdown_grace_s": 2.0}).start()
    info = second.client().call("runs.show", {"run_id": run_id})
    assert info["status"] == "paused"
    assert info["paused_at"]["load"]["inputs"]["command"].endswith("echo loaded")
    shown = second.cli("show", run_id)
    assert "paused before load; it will receive:" in shown.stdout
    assert ran(ledger, "load") == []

    assert second.cli("continue", run_id).returncode == 0
    assert _finished(second, run_id)["status"] == "succeeded"
    assert ran(ledger, "load") == [1] and ran(ledger, "extract") == [1]


def test_runs_pages_with_a_cursor_cover_the_filtered_list_once(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Paging `runs --pipeline P --limit 2` with the printed cursor yields every run of the unpaged list once,
    in order, and --count agrees; --since after them lists none."""
    for _ in range(5):
        _finished(daemon, _start(daemon, "failer", "-i", f"ledger={tmp_path / 'l'}"))
    with daemon.client() as client:
        everything = [r["run_id"] for r in client.call("runs.list", {"pipeline_id": "failer", "limit": 1000})["runs"]]
        pages: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"pipeline_id": "failer", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = client.call("runs.list", params)
            pages += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == everything and len(everything) >= 5
    counted = daemon.cli("runs", "--pipeline", "failer", "--count")
    assert counted.returncode == 0 and counted.stdout.strip() == str(len(everything))
    later = datetime.fromtimestamp(time.time() + 60).isoformat()
    assert daemon.cli("runs", "--pipeline", "failer", "--since", later, "--count").stdout.strip() == "0"
    printed = daemon.cli("runs", "--pipeline", "failer", "--limit", "2")
    assert "next page: flowmason runs --cursor " in printed.stdout


def test_pipelines_show_draws_the_dag_by_level(daemon: DaemonProcess) -> None:
    """`pipelines show forkable` lists each stage at its level with its dependencies."""
    shown = daemon.cli("pipelines", "show", "forkable")
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("[")]
    assert lines == ["[0] extract (shell)", "[0] audit (shell)", "[1] transform (shell)  <- extract",
                     "[2] load (shell)  <- transform"]


def test_events_after_an_id_lists_only_later_events(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`events RUN --after ID` prints exactly the run's events whose id is greater than ID."""
    run_id = _start(daemon, "failer", "-i", f"ledger={tmp_path / 'l'}")
    _finished(daemon, run_id)
    every = [json.loads(line) for line in daemon.cli("events", run_id, "--json").stdout.splitlines()]
    middle = every[len(every) // 2]["id"]
    later = [json.loads(line) for line in daemon.cli("events", run_id, "--json", "--after", str(middle)
                                                     ).stdout.splitlines()]
    assert [e["id"] for e in later] == [e["id"] for e in every if e["id"] > middle]


def test_stop_and_reload_through_the_command(daemon_factory: Callable[..., DaemonProcess],
                                             write_pipeline: Callable[[dict[str, Any]], Path]) -> None:
    """`flowmason reload` loads a pipeline written since the start (hot reload off); `flowmason stop` makes
    the daemon exit 0."""
    first = daemon_factory(config={"hot_reload": False}).start()
    write_pipeline(FAILER)
    reloaded = first.cli("reload")
    assert reloaded.returncode == 0 and "1 loaded" in reloaded.stdout
    assert first.cli("stop").returncode == 0
    assert first.proc is not None and first.proc.wait(timeout=30) == 0


def test_cancel_and_resume_json_report_the_state_after(module_daemon_factory: Callable[..., DaemonProcess],
                                                       tmp_path: Path) -> None:
    """`cancel --json` returns the run `cancelled` (not still running), `resume --json` returns it running."""
    quick = module_daemon_factory(config={"cancel_grace_s": 0.2}, pipelines=[SLEEPER])
    ledger = tmp_path / "ledger.txt"
    run_id = _start(quick, "sleeper", "-i", f"ledger={ledger}")
    wait_until(lambda: ran(ledger, "nap"), what="the stage to start")
    assert _json(quick.cli("cancel", run_id, "--json"))["status"] == "cancelled"
    assert _json(quick.cli("resume", run_id, "--json"))["status"] == "running"
    quick.cli("terminate", run_id)
