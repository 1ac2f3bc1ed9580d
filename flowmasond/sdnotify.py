"""sd_notify without dependencies: READY, STATUS, WATCHDOG, RELOADING, STOPPING to systemd.

The environment rules are systemd's own (sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3)):
``$NOTIFY_SOCKET`` is an absolute path or ``@abstract``; the watchdog applies when
``$WATCHDOG_USEC`` is a positive integer and ``$WATCHDOG_PID`` is unset or ours; passed sockets
count only when ``$LISTEN_PID`` is set and equals our pid. Once read, the daemon removes these
variables (:func:`scrub_environment`) so that shell stages never inherit them: a stage must not
be able to report READY or STOPPING on our behalf, nor believe it was socket-activated.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import MutableMapping

# Everything systemd hands the service for these protocols; removed once read.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                    "LISTEN_FDNAMES")
# sd_listen_fds(3): passed descriptors start here.
LISTEN_FDS_START = 3
# One STATUS= line; systemd shows it in `systemctl status`, longer text only clutters it.
_MAX_STATUS_CHARS = 200


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET`` (a no-op when not started by systemd).

    Sending never blocks and never raises: a full receive queue (systemd busy, or a test that
    stopped reading) drops the message rather than stall the event loop that sends it.
    """

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address: str | None = None
        if address and (address.startswith("/") or (address.startswith("@") and len(address) > 1)):
            # A leading '@' names a socket in the abstract namespace.
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one notification (fields like ``READY=1``); True when it was delivered."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        """READY=1: start-up (or a reload) finished; with a STATUS= line when given."""
        return self.send("READY=1", _status_field(status)) if status else self.send("READY=1")

    def status(self, text: str) -> bool:
        """STATUS=: the one-line summary `systemctl status` shows."""
        return self.send(_status_field(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the daemon is alive and healthy."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """RELOADING=1: a reload began; READY=1 must follow when it is done."""
        # MONOTONIC_USEC lets systemd (Type=notify-reload) match the reload to this signal.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str = "") -> bool:
        """STOPPING=1: a graceful stop began."""
        return self.send("STOPPING=1", _status_field(status)) if status else self.send("STOPPING=1")

    def close(self) -> None:
        """Close the datagram socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` when the watchdog is meant for this process, else None."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID")
    if owner is not None and owner != str(os.getpid() if pid is None else pid):
        return None
    if not usec.isdigit() or int(usec) == 0:
        return None
    # Pinging at half the timeout leaves one full interval of slack for a late ping.
    return int(usec) / 1_000_000 / 2


def listen_fds(environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> list[int]:
    """File descriptors passed by socket activation (``LISTEN_FDS``), starting at 3.

    Like sd_listen_fds(3), a missing or foreign ``$LISTEN_PID`` means the descriptors are not
    ours (they were inherited from a parent that was activated); the descriptors returned are
    marked close-on-exec so that stage processes do not inherit them.
    """
    env = os.environ if environ is None else environ
    owner = env.get("LISTEN_PID")
    count = env.get("LISTEN_FDS", "")
    if owner is None or owner != str(os.getpid() if pid is None else pid):
        return []
    if not count.isdigit() or int(count) == 0:
        return []
    fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))
    for fd in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError:
            return []  # not open: the environment lies; adopt nothing
    return fds


def is_unix_stream_listener(fd: int) -> bool:
    """Whether ``fd`` is a listening AF_UNIX stream socket (sd_is_socket_unix(3) in spirit)."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return (probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM
                and bool(probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)))
    except OSError:
        return False
    finally:
        probe.close()


def scrub_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove the notify, watchdog and activation variables (read them first)."""
    env = os.environ if environ is None else environ
    for name in NOTIFY_VARIABLES:
        env.pop(name, None)


def _status_field(text: str) -> str:
    # A newline would start a new field that systemd would parse as an assignment.
    line = " ".join(text.split())
    return "STATUS=" + line[:_MAX_STATUS_CHARS]
