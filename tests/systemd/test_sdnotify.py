"""flowmasond.sdnotify follows systemd's environment rules and never blocks its caller."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

from flowmasond.sdnotify import (
    NOTIFY_VARIABLES, Notifier, is_unix_stream_listener, listen_fds, scrub_environment, watchdog_interval_s,
)


def test_notifier_sends_to_an_abstract_socket_named_with_at() -> None:
    """``@name`` addresses the abstract namespace, as sd_notify(3) specifies."""
    name = f"flowmason-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        assert Notifier("@" + name).watchdog()
        assert receiver.recv(100) == b"WATCHDOG=1"


def test_notifier_ignores_a_relative_notify_socket() -> None:
    """A NOTIFY_SOCKET that is neither absolute nor abstract is not used."""
    notifier = Notifier("relative/notify.sock")
    assert not notifier.enabled
    assert not notifier.ready()


def test_send_drops_the_message_instead_of_blocking_when_the_receiver_is_full(tmp_path: Path) -> None:
    """With nobody reading, sends fail fast once the receive queue is full; the caller never blocks."""
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        notifier = Notifier(str(path))
        results: list[bool] = []
        sender = threading.Thread(target=lambda: results.extend(notifier.watchdog() for _ in range(200)))
        sender.start()
        sender.join(timeout=10)
        blocked = sender.is_alive()
        receiver.close()  # unblocks a stuck sender so the test can end either way
        sender.join(timeout=10)
        notifier.close()
    assert not blocked
    assert results[0] is True and False in results


def test_status_is_one_line(tmp_path: Path) -> None:
    """A STATUS= text with newlines is sent as one line (a newline would start a new field)."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        Notifier(str(path)).status("2 runs active\nREADY=1")
        assert receiver.recv(1000) == b"STATUS=2 runs active READY=1"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=30000000 with our WATCHDOG_PID means a ping every 15 s."""
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(env) == 15.0


def test_watchdog_is_off_when_watchdog_pid_names_another_process() -> None:
    """A WATCHDOG_PID that is not ours (inherited from a parent) disables the watchdog."""
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=4242) is None


def test_watchdog_is_off_for_zero_or_garbage_usec() -> None:
    """WATCHDOG_USEC must be a positive integer."""
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None


def test_listen_fds_needs_listen_pid() -> None:
    """Without LISTEN_PID the descriptors are not ours, as in sd_listen_fds(3)."""
    assert listen_fds({"LISTEN_FDS": "1"}) == []


def test_listen_fds_ignores_another_process_s_sockets() -> None:
    """A LISTEN_PID naming another process means the sockets were meant for it."""
    assert listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "1"}, pid=4242) == []


def test_only_a_listening_unix_stream_socket_is_accepted_for_activation(tmp_path: Path) -> None:
    """A datagram socket, a connected-but-not-listening socket or a plain file is refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram, open(tmp_path / "f", "w") as plain:
        stream.bind(str(tmp_path / "s.sock"))
        assert not is_unix_stream_listener(stream.fileno())
        stream.listen(1)
        assert is_unix_stream_listener(stream.fileno())
        assert not is_unix_stream_listener(dgram.fileno())
        assert not is_unix_stream_listener(plain.fileno())


def test_scrub_environment_removes_every_systemd_variable() -> None:
    """After scrubbing, no notify, watchdog or activation variable is left for child processes."""
    env = {name: "x" for name in NOTIFY_VARIABLES} | {"PATH": "/bin"}
    scrub_environment(env)
    assert env == {"PATH": "/bin"}
