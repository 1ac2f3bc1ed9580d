"""SO_PEERCRED access control with a real second uid: a forked child that setuid()s to nobody (65534)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from daemon_acceptance_support import GATED, exchange, ran, wait_until
from daemon_support import DaemonProcess, in_child_as, world_reachable_dir

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork a peer and setuid() it to 65534")


def as_nobody(socket_path: Path, requests: list[dict[str, Any]]) -> tuple[int, list[Any]]:
    """Send each request on its own connection as uid 65534; (child pid, the one reply to each)."""
    def work() -> list[Any]:
        replies = []
        for request in requests:
            lines, _ = exchange(socket_path, json.dumps(request).encode() + b"\n")
            if len(lines) != 1:
                raise AssertionError(f"expected one reply line, got {lines!r}")
            replies.append(json.loads(lines[0]))
        return replies

    return in_child_as(NOBODY, work)


def request(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
    if params is not None:
        message["params"] = params
    return message


@pytest.fixture(scope="module")
def open_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach."""
    with world_reachable_dir("fm-peer-") as path:
        yield path


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess], open_dir: Path) -> DaemonProcess:
    """A daemon whose socket any uid can connect to (mode 0666), with no allow list."""
    return module_daemon_factory(config={"socket_mode": 0o666, "cancel_grace_s": 0.2}, pipelines=[GATED],
                                 socket=open_dir / "closed.sock")


def test_other_uid_cannot_start_a_run(daemon: DaemonProcess) -> None:
    """`runs.start` from uid 65534 gets permission denied (-32001) and creates no run."""
    _, (reply,) = as_nobody(daemon.socket, [request("runs.start", {"pipeline_id": "gated"})])
    assert reply["error"]["code"] == -32001
    assert reply["error"]["data"]["context"]["uid"] == NOBODY
    with daemon.client() as client:
        assert client.runs_list(pipeline_id="gated").runs == []


def test_other_uid_cannot_cancel_a_run(daemon: DaemonProcess, tmp_path: Path) -> None:
    """`runs.cancel` from uid 65534 gets permission denied (-32001) and the run keeps running."""
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    with daemon.client() as client:
        run_id = client.runs_start("gated", {"ledger": str(ledger), "gate": str(gate)}).run_id
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")
    _, (reply,) = as_nobody(daemon.socket, [request("runs.cancel", {"run_id": run_id})])
    assert reply["error"]["code"] == -32001
    gate.touch()
    assert daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled"})["status"] == "succeeded"


def test_other_uid_can_read(daemon: DaemonProcess) -> None:
    """uid 65534 may call read methods: `health` and `runs.list` answer with results."""
    _, (health, runs) = as_nobody(daemon.socket, [request("health"), request("runs.list")])
    assert health["result"]["status"] == "ok"
    assert isinstance(runs["result"]["runs"], list)


def test_refusal_is_logged_with_the_peer_uid_and_pid(daemon: DaemonProcess) -> None:
    """The daemon logs each refusal with the method, the peer's uid and the peer's pid."""
    pid, _ = as_nobody(daemon.socket, [request("runs.resume", {"run_id": "r-anything"})])

    def refusal() -> list[dict[str, Any]]:
        return [e for e in daemon.log_events() if e.get("event") == "control.permission_denied"
                and e.get("peer_pid") == pid]

    (event,) = wait_until(refusal, what="the refusal in the daemon log")
    assert (event["peer_uid"], event["method"]) == (NOBODY, "runs.resume")


def test_allowed_uid_may_start_runs(module_daemon_factory: Callable[..., DaemonProcess], open_dir: Path) -> None:
    """With `allowed_uids = [65534]` in the configuration uid 65534 may start runs."""
    daemon = module_daemon_factory(config={"socket_mode": 0o666, "allowed_uids": [NOBODY]},
                                   pipelines=[{"id": "hello", "stages": [{"id": "say", "component_type": "logger",
                                                                         "config": {"message": "hi"}}]}],
                                   socket=open_dir / "allowed.sock")
    _, (reply,) = as_nobody(daemon.socket, [request("runs.start", {"pipeline_id": "hello"})])
    assert "error" not in reply, reply
    assert daemon.wait_for_status(reply["result"]["run_id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_default_socket_is_closed_to_other_users(module_daemon_factory: Callable[..., DaemonProcess],
                                                 open_dir: Path) -> None:
    """With the default mode the socket file is 0660, so uid 65534 (not in its group) cannot even connect."""
    daemon = module_daemon_factory(socket=open_dir / "default.sock")
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660

    def connect() -> str:
        try:
            exchange(daemon.socket, b"")
        except PermissionError:
            return "refused"
        return "connected"

    assert in_child_as(NOBODY, connect)[1] == "refused"
