"""Access control from SO_PEERCRED: a forked child that setuid()s to nobody talks to a real server."""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Callable

import pytest
from structlog.testing import capture_logs

from api_support import RawConnection, ServerThread, State, assert_error
from flowmason_client.protocol import ErrorCode
from flowmasond.api.peercred import AccessPolicy

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fork a child that setuid()s to 65534")


def call_as_nobody(path: str, requests: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """Fork a child that drops to uid/gid 65534, sends ``requests`` and returns (child pid, replies)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only raw socket calls, then _exit, never back into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(path)
            replies = sock.makefile("rb")
            out = b""
            for request in requests:
                sock.sendall(json.dumps(request).encode() + b"\n")
                out += replies.readline()
            os.write(write_end, out)
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent through the pipe
            os.write(write_end, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    return pid, [json.loads(line) for line in output.splitlines()]


def request(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


@needs_root
def test_other_uid_is_refused_a_mutating_method_and_it_is_logged(
        start_server: Callable[..., ServerThread]) -> None:
    """A peer with another uid gets -32001 for a mutating method, nothing runs, and the refusal is logged."""
    state = State()
    server = start_server(state, socket_group=NOBODY)
    with capture_logs() as logs:
        pid, [reply] = call_as_nobody(str(server.path), [request("bump")])
    error = assert_error(reply, ErrorCode.PERMISSION_DENIED, 1)
    assert error["data"]["code"] == "permission_denied"
    assert error["data"]["context"] == {"method": "bump", "uid": NOBODY}
    assert state.bumps == 0
    [entry] = [e for e in logs if e["event"] == "control.permission_denied"]
    assert (entry["peer_uid"], entry["peer_pid"], entry["method"]) == (NOBODY, pid, "bump")


@needs_root
def test_other_uid_may_call_read_methods(start_server: Callable[..., ServerThread]) -> None:
    """A peer with another uid can still read, and is seen by the server with its own credentials."""
    server = start_server(socket_group=NOBODY)
    pid, [reply] = call_as_nobody(str(server.path), [request("whoami")])
    assert reply["result"] == {"uid": NOBODY, "gid": NOBODY, "pid": pid, "privileged": False}


@needs_root
def test_permission_is_checked_before_params(start_server: Callable[..., ServerThread]) -> None:
    """An unprivileged peer gets the permission error even with bad params: it learns nothing about them."""
    server = start_server(socket_group=NOBODY)
    _, [reply] = call_as_nobody(str(server.path), [request("bump", {"bogus": 1})])
    assert_error(reply, ErrorCode.PERMISSION_DENIED, 1)


@needs_root
def test_allowed_uid_may_call_mutating_methods(start_server: Callable[..., ServerThread]) -> None:
    """A uid on the allow list may call mutating methods."""
    state = State()
    server = start_server(state, socket_group=NOBODY, allowed_uids={NOBODY})
    _, [reply] = call_as_nobody(str(server.path), [request("bump")])
    assert reply["result"] == {"count": 1}
    assert state.peers[0].uid == NOBODY


def test_root_peer_may_call_mutating_methods(start_server: Callable[..., ServerThread]) -> None:
    """The daemon's own uid (here the test's) may call mutating methods."""
    state = State()
    server = start_server(state)
    conn = RawConnection(server.path)
    try:
        assert conn.request("bump")["result"] == {"count": 1}
    finally:
        conn.close()


def test_policy_allows_root_daemon_uid_and_the_allow_list_only() -> None:
    """Mutation is for uid 0, the daemon's uid and listed uids; an unknown peer (-1) never mutates."""
    policy = AccessPolicy({2000}, daemon_uid=1000)
    assert [policy.may_mutate(uid) for uid in (0, 1000, 2000, 1001, -1)] == [True, True, True, False, False]
