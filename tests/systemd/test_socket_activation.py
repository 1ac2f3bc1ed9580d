"""Socket activation: the daemon serves a listening socket passed as fd 3 (LISTEN_FDS/LISTEN_PID).

The test plays systemd: it binds and listens on the control socket path itself, then starts the
daemon through ``activation_shim.py``, which moves the socket to fd 3 and sets LISTEN_PID to the
pid that will exec flowmasond (what systemd does between fork and exec).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from notify_support import HERE
from daemon_support import DaemonProcess

FAST = {"shutdown_grace_s": 2.0, "cancel_grace_s": 1.0}


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[socket.socket]:
    """A listening AF_UNIX stream socket at the daemon's socket path, as flowmasond.socket makes it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "flowmasond.sock"))
    sock.listen(16)
    yield sock
    sock.close()


def start_activated(daemon: DaemonProcess, sock: socket.socket) -> DaemonProcess:
    """Start ``daemon`` with ``sock`` passed the way systemd passes activated sockets."""
    args = [sys.executable, str(HERE / "activation_shim.py"), str(sock.fileno()),
            sys.executable, "-m", "flowmasond.cli", "--state-dir", str(daemon.state_dir),
            "--socket", str(daemon.socket), "--pipelines", str(daemon.pipelines)]
    if daemon.config is not None:
        args += ["--config", str(daemon.config)]
    with open(daemon.log_path, "ab") as log:
        daemon.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=daemon.env,
                                       pass_fds=(sock.fileno(),), start_new_session=True)
    return daemon


def test_daemon_answers_health_on_a_socket_passed_as_fd_3(
        daemon_factory: Callable[..., DaemonProcess], listening: socket.socket) -> None:
    """The daemon adopts the passed socket (it would refuse to bind a path where something listens)."""
    daemon = start_activated(daemon_factory(config=FAST), listening)
    daemon.wait_ready()
    with daemon.client() as client:
        assert client.health().status == "ok"
    assert any(e.get("event") == "control.listening" and e.get("activated") is True for e in daemon.log_events())
    assert daemon.stop() == 0


def test_a_client_that_connected_before_the_daemon_started_gets_its_answer(
        daemon_factory: Callable[..., DaemonProcess], listening: socket.socket) -> None:
    """A connection queued on the activated socket before the daemon runs is served once it starts."""
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.settimeout(30.0)
    early.connect(listening.getsockname())
    early.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "health"}\n')
    daemon = start_activated(daemon_factory(config=FAST), listening)
    with early, early.makefile("rb") as reply:
        answer = json.loads(reply.readline())
    # Served as soon as the socket is adopted, possibly while runs are still being recovered.
    assert answer["id"] == 1 and answer["result"]["status"] in ("starting", "ok"), answer
    assert daemon.stop() == 0


def test_the_activated_socket_file_stays_when_the_daemon_stops(
        daemon_factory: Callable[..., DaemonProcess], listening: socket.socket) -> None:
    """The socket belongs to systemd: after a clean stop its file is still there for the next start."""
    daemon = start_activated(daemon_factory(config=FAST), listening)
    daemon.wait_ready()
    assert daemon.stop() == 0
    assert daemon.socket.is_socket()
