"""Errors from the real daemon over its socket: stable JSON-RPC codes, with the context to act on."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any, Callable

import pytest

from daemon_acceptance_support import ran, read_ledger, shell_stage, wait_until
from daemon_support import DaemonProcess
from flowmason_client.errors import RemoteError

TYPED = {
    "id": "typed",
    "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    "stages": [{"id": "say", "component_type": "logger", "config": {"message": "n is {{input.n}}"}}],
}
CHANGING = ("refused", "pinned", "accepted")  # one pipeline per test of a resume after a change


def changing(pipeline_id: str, version: int) -> dict[str, Any]:
    """`a` then `b`: version 1 of `b` fails, version 2 succeeds; each writes its version into the ledger."""
    b_command = "echo v1 >> \"$LEDGER\"; exit 1" if version == 1 else "echo v2 >> \"$LEDGER\""
    return {"id": pipeline_id, "stages": [shell_stage("a", "true"), shell_stage("b", b_command, depends_on=["a"])]}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """One daemon for the module (hot reload off: the tests reload with SIGHUP when they choose)."""
    return module_daemon_factory(config={"hot_reload": False},
                                 pipelines=[TYPED, *(changing(pid, 1) for pid in CHANGING)])


def remote_error(daemon: DaemonProcess, method: str, params: dict[str, Any]) -> RemoteError:
    with daemon.client() as client, pytest.raises(RemoteError) as caught:
        client.call(method, params)
    return caught.value


def finished_run(daemon: DaemonProcess, pipeline_id: str, inputs: dict[str, Any]) -> str:
    with daemon.client() as client:
        run_id = client.runs_start(pipeline_id, inputs).run_id
    daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})
    return run_id


def change_pipeline(daemon: DaemonProcess, pipeline_id: str) -> None:
    """Rewrite the pipeline file to version 2 and reload the catalog (SIGHUP) until the daemon has it."""
    with daemon.client() as client:
        before = client.pipelines_show(pipeline_id).model_dump()["definition_hash"]
    path = daemon.pipelines / f"{pipeline_id}.pipeline.json"
    path.write_text(json.dumps(changing(pipeline_id, 2)))
    daemon.signal(signal.SIGHUP)

    def reloaded() -> bool:
        with daemon.client() as client:
            return client.pipelines_show(pipeline_id).model_dump()["definition_hash"] != before

    wait_until(reloaded, what=f"the daemon to reload {pipeline_id}")


def test_unknown_pipeline_is_pipeline_not_found(daemon: DaemonProcess) -> None:
    """`runs.start` of a pipeline the daemon does not know is -32003 `pipeline_not_found`."""
    error = remote_error(daemon, "runs.start", {"pipeline_id": "no-such-pipeline"})
    assert (error.code, error.error_code) == (-32003, "pipeline_not_found")


def test_inputs_not_matching_the_input_schema_are_invalid_params(daemon: DaemonProcess) -> None:
    """`runs.start` with inputs failing the pipeline's input_schema is -32602 naming the bad field; no run is made."""
    error = remote_error(daemon, "runs.start", {"pipeline_id": "typed", "inputs": {"n": "three"}})
    assert error.code == -32602
    assert "$.n" in error.message
    with daemon.client() as client:
        assert client.runs_list(pipeline_id="typed").runs == []


@pytest.mark.parametrize("method", ["runs.show", "runs.cancel", "runs.resume", "runs.events"])
def test_unknown_run_id_is_run_not_found(daemon: DaemonProcess, method: str) -> None:
    """Every method naming a run answers -32002 `run_not_found` for an id the journal does not hold."""
    error = remote_error(daemon, method, {"run_id": "r-does-not-exist"})
    assert (error.code, error.error_code) == (-32002, "run_not_found")
    assert error.context["run_id"] == "r-does-not-exist"


def test_resume_of_a_succeeded_run_is_invalid_state(daemon: DaemonProcess) -> None:
    """`runs.resume` of a succeeded run is -32004 `invalid_state` naming the run's status."""
    run_id = finished_run(daemon, "typed", {"n": 1})
    error = remote_error(daemon, "runs.resume", {"run_id": run_id})
    assert (error.code, error.error_code, error.context["status"]) == (-32004, "invalid_state", "succeeded")


def test_cancel_of_a_finished_run_is_invalid_state(daemon: DaemonProcess) -> None:
    """`runs.cancel` of a run that already finished is -32004 `invalid_state` naming its status."""
    run_id = finished_run(daemon, "typed", {"n": 2})
    error = remote_error(daemon, "runs.cancel", {"run_id": run_id})
    assert (error.code, error.error_code, error.context["status"]) == (-32004, "invalid_state", "succeeded")


def test_resume_after_the_pipeline_changed_is_refused_with_a_stage_diff(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Resuming a run whose pipeline file changed is -32006 with the per-stage diff; the command says how to choose."""
    run_id = finished_run(daemon, "refused", {"ledger": str(tmp_path / "ledger.txt")})
    change_pipeline(daemon, "refused")
    error = remote_error(daemon, "runs.resume", {"run_id": run_id})
    assert (error.code, error.error_code) == (-32006, "definition_changed")
    assert error.context["diff"] == [{"stage": "b", "change": "modified", "fields": ["config"]}]
    refused = daemon.cli("resume", run_id)
    assert refused.returncode == 1
    assert "--pinned" in refused.stderr and "--accept-changed" in refused.stderr
    with daemon.client() as client:
        assert client.runs_show(run_id).status == "failed"


def test_resume_pinned_continues_with_the_definition_the_run_started_with(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    """`resume --pinned` after a change runs the pinned version of the failed stage (which fails again)."""
    ledger = tmp_path / "ledger.txt"
    run_id = finished_run(daemon, "pinned", {"ledger": str(ledger)})
    change_pipeline(daemon, "pinned")
    resumed = daemon.cli("resume", run_id, "--pinned", "--follow")
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    assert [line for line in read_ledger(ledger) if line.startswith("v")] == ["v1", "v1"]
    assert ran(ledger, "a") == [1]


def test_resume_accept_changed_continues_with_the_current_definition(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`resume --accept-changed` after a change runs the new version of the failed stage and succeeds."""
    ledger = tmp_path / "ledger.txt"
    run_id = finished_run(daemon, "accepted", {"ledger": str(ledger)})
    change_pipeline(daemon, "accepted")
    resumed = daemon.cli("resume", run_id, "--accept-changed", "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [line for line in read_ledger(ledger) if line.startswith("v")] == ["v1", "v2"]
    assert ran(ledger, "a") == [1]
