"""Helpers for the systemd tests: a fake ``NOTIFY_SOCKET`` that the test owns, and its env.

The listener plays systemd's part: a datagram socket bound in tmp_path, read by a thread that
keeps every message in arrival order (the kernel queues datagrams from all senders in the order
they were sent, so the order observed here is the order of events in the daemon).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from daemon_support import REPO

HERE = Path(__file__).resolve().parent


class NotifyListener:
    """A bound AF_UNIX datagram socket that records each datagram as its list of fields."""

    def __init__(self, path: Path, on_ready: Callable[[], object] | None = None) -> None:
        self.path = path
        self.on_ready = on_ready
        self.messages: list[list[str]] = []
        self.ready_checks: list[object] = []  # what on_ready returned, once per READY=1
        self._cond = threading.Condition()
        self._closed = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = data.decode("utf-8", "replace").split("\n")
            # Check at once, before recording: this is as close to "at READY time" as we can get.
            if "READY=1" in fields and self.on_ready is not None:
                self.ready_checks.append(self.on_ready())
            with self._cond:
                self.messages.append(fields)
                self._cond.notify_all()

    def fields(self) -> list[str]:
        """Every field received so far, in order (``READY=1``, ``STATUS=...``, ...)."""
        with self._cond:
            return [field for message in self.messages for field in message]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 20.0) -> list[str]:
        """Wait until ``predicate(fields)`` holds; returns the fields at that moment."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                fields = [field for message in self.messages for field in message]
                if predicate(fields):
                    return fields
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"notification not received within {timeout}s; got {fields[-20:]}")
                self._cond.wait(remaining)

    def wait_for_field(self, field: str, *, after: int = 0, timeout: float = 20.0) -> int:
        """Wait until ``field`` arrives at an index >= ``after``; returns that index."""
        fields = self.wait_for(lambda fs: field in fs[after:], timeout)
        return fields.index(field, after)

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=5)
        self._sock.close()


def can_connect(path: Path) -> bool:
    """Whether a Unix stream socket at ``path`` accepts a connection right now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


def systemd_env(listener: NotifyListener, *, watchdog_usec: int | None = None) -> dict[str, str]:
    """The environment systemd gives a Type=notify service, plus this folder on PYTHONPATH."""
    env = {"NOTIFY_SOCKET": str(listener.path),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env
