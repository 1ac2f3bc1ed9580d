"""One uid cannot starve the control socket: 1,000 idle and half-sent connections from uid 65534
while uid 65533 and root are served (real daemon, real processes under other uids)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess, fork_as, world_reachable_dir

HAMMER_UID = 65534  # nobody
OTHER_UID = 65533
CONNECTIONS = 1000
PER_UID = 32  # the default limits.max_connections_per_uid
HALF_LINE = b'{"jsonrpc": "2.0", "id": 1, "method": "hea'

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run peers under other uids")


def read_message(fd: int, timeout: float = 60.0) -> Any:
    """One JSON line from a child (or its error), within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    with os.fdopen(os.dup(fd), "rb", buffering=0) as stream:
        os.set_blocking(fd, False)
        while not data.endswith(b"\n"):
            if time.monotonic() > deadline:
                raise AssertionError("child did not answer in time")
            try:
                chunk = stream.read(4096)
            except BlockingIOError:
                chunk = None
            if chunk:
                data += chunk
            elif chunk == b"":
                raise AssertionError(f"child exited without answering: {data!r}")
            else:
                time.sleep(0.01)
    message = json.loads(data)
    assert "child_error" not in message, message
    return message


def call(socket_path: Path, method: str) -> dict[str, Any]:
    """One request on a fresh connection; the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other uids can reach."""
    with world_reachable_dir("fm-fair-") as path:
        yield path


def test_one_uid_with_1000_connections_does_not_starve_the_others(
        daemon_factory: Callable[..., DaemonProcess], open_dir: Path) -> None:
    """uid 65534 holds 1,000 connections (half of them mid-line): it gets 32, the rest are refused
    as busy, its unfinished lines are cut after line_timeout_s, and uid 65533 and root are served."""
    daemon = daemon_factory(config={"socket_mode": 0o666, "limits": {"line_timeout_s": 1.0}})
    daemon.socket = open_dir / "fair.sock"
    daemon.start()
    go_read, go_write = os.pipe()

    def hammer(out: int) -> None:
        os.close(go_write)
        connections = []
        for index in range(CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket))
            if index % 2:
                sock.sendall(HALF_LINE)
            connections.append(sock)
        os.write(out, b'{"ready": true}\n')
        os.read(go_read, 1)  # hold every connection until the parent has checked the others
        outcome: Counter[str] = Counter()
        for sock in connections:
            sock.setblocking(False)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                outcome["open"] += 1
                continue
            if b"server_busy" in data:
                outcome["busy"] += 1
            elif b"line not completed" in data:
                outcome["line_timeout"] += 1
            else:
                outcome["other"] += 1
        os.write(out, json.dumps(outcome).encode() + b"\n")

    hammer_pid, hammer_out = fork_as(HAMMER_UID, hammer)
    try:
        assert read_message(hammer_out) == {"ready": True}

        def other_uid(out: int) -> None:
            started = time.monotonic()
            replies = [call(daemon.socket, "health"), call(daemon.socket, "runs.list")]
            os.write(out, json.dumps({"replies": replies, "s": time.monotonic() - started}).encode() + b"\n")

        other_pid, other_out = fork_as(OTHER_UID, other_uid)
        served = read_message(other_out)
        os.waitpid(other_pid, 0)
        assert served["replies"][0]["result"]["status"] == "ok", served
        assert "runs" in served["replies"][1]["result"], served
        assert served["s"] < 5.0
        assert call(daemon.socket, "health")["result"]["status"] == "ok"  # root

        def cut_lines() -> int:
            return sum(1 for e in daemon.log_events()
                       if e.get("event") == "control.slow_line_disconnect" and e.get("peer_uid") == HAMMER_UID)

        deadline = time.monotonic() + 20
        while cut_lines() < PER_UID // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.write(go_write, b"x")
        outcome = read_message(hammer_out)
    finally:
        os.close(go_write)
        os.waitpid(hammer_pid, 0)

    assert outcome.get("busy") == CONNECTIONS - PER_UID, outcome
    # The first 32 were accepted: the odd ones had sent half a line and were cut, the rest stay open.
    assert (outcome.get("line_timeout"), outcome.get("open")) == (PER_UID // 2, PER_UID // 2), outcome
    assert "other" not in outcome
    refusals = [e for e in daemon.log_events() if e.get("event") == "control.connection_refused"]
    assert refusals and all(e["peer_uid"] == HAMMER_UID and e.get("max_connections_per_uid") == PER_UID
                            for e in refusals)


def test_reserved_slots_keep_root_in_when_unprivileged_peers_fill_the_socket(
        daemon_factory: Callable[..., DaemonProcess], open_dir: Path) -> None:
    """With every unprivileged slot taken (by several uids), another unprivileged uid is refused
    and root still gets in."""
    limits = {"max_connections": 12, "reserved_privileged_connections": 4, "max_connections_per_uid": 4}
    daemon = daemon_factory(config={"socket_mode": 0o666, "limits": limits})
    daemon.socket = open_dir / "reserved.sock"
    daemon.start()
    holders = []
    release_read, release_write = os.pipe()

    def hold(out: int) -> None:
        os.close(release_write)  # so that the parent's close is our EOF
        held = []
        for _ in range(4):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket))
            held.append(sock)
        # Prove each of ours was accepted: a request on each gets a real answer.
        for sock in held:
            sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "health"}\n')
            assert b'"status"' in sock.recv(65536)
        os.write(out, b'{"held": 4}\n')
        os.read(release_read, 1)

    try:
        for uid in (65530, 65531):  # 8 connections: every unprivileged slot (12 - 4)
            pid, out = fork_as(uid, hold)
            holders.append(pid)
            assert read_message(out) == {"held": 4}

        def refused(out: int) -> None:
            os.write(out, json.dumps(call(daemon.socket, "health")).encode() + b"\n")

        pid, out = fork_as(OTHER_UID, refused)
        reply = read_message(out)
        os.waitpid(pid, 0)
        assert reply["error"]["data"]["code"] == "server_busy", reply
        assert reply["error"]["data"]["context"]["reserved_privileged"] == 4
        assert call(daemon.socket, "health")["result"]["status"] == "ok"  # root uses a reserved slot
    finally:
        os.close(release_write)
        for pid in holders:
            os.waitpid(pid, 0)
