"""Creating and removing the control socket's file safely."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from flowmasond.errors import ConfigurationError

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_PATH_BYTES = 107
# Applied while binding so the file is never, even for an instant, wider than owner+group rw.
_BIND_UMASK = 0o117
# A listening daemon accepts (or queues) a connect at once; only a wedged one would take longer.
_PROBE_TIMEOUT_S = 1.0


def bind_socket_file(path: Path, *, mode: int = 0o660, group: int | None = None,
                     backlog: int = 128) -> tuple[socket.socket, int]:
    """Bind and listen on ``path``; returns the socket and the file's inode (to remove only ours).

    A stale socket file (nothing listening) is replaced; a live one, or a file that is not a
    socket, is an error naming the path.
    """
    if len(os.fsencode(path)) > _MAX_PATH_BYTES:
        raise ConfigurationError(
            f"socket path is longer than the {_MAX_PATH_BYTES} bytes a Unix socket address allows",
            socket=str(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # umask is process-wide; the window is one bind() call at start-up, before the daemon
        # creates other files from other threads.
        old_umask = os.umask(_BIND_UMASK)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        if group is not None:
            os.chown(path, -1, group)
        sock.listen(backlog)
        sock.setblocking(False)
        return sock, os.stat(path).st_ino
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot create the control socket: {exc.strerror or exc}",
                                 socket=str(path)) from exc


def _clear_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigurationError("the control socket path exists and is not a socket; refusing to replace it",
                                 socket=str(path))
    try:
        listening = is_listening(path)
    except PermissionError as exc:
        raise ConfigurationError("the control socket path exists and cannot be probed (permission denied)",
                                 socket=str(path)) from exc
    if listening:
        raise ConfigurationError("another flowmasond is already listening on this socket", socket=str(path))
    path.unlink(missing_ok=True)


def is_listening(path: Path) -> bool:
    """Whether some process accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except PermissionError:
        raise
    except OSError:
        # EAGAIN (a full backlog) means alive; anything else we cannot judge, and replacing a live
        # daemon's socket is the worse mistake.
        return True
    else:
        return True
    finally:
        probe.close()


def remove_socket_file(path: Path, inode: int | None) -> None:
    """Unlink ``path`` if it is still the socket we created (a successor's is left alone)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(info.st_mode) and (inode is None or info.st_ino == inode):
        path.unlink(missing_ok=True)
