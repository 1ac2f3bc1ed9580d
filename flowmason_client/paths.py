"""Where the daemon's control socket lives, decided in one place for the daemon and its clients."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping

SOCKET_ENV = "FLOWMASON_SOCKET"
SOCKET_NAME = "flowmasond.sock"
# The system daemon's socket (systemd's RuntimeDirectory=flowmason).
SYSTEM_SOCKET_PATH = Path("/run/flowmason") / SOCKET_NAME


def default_socket_path(*, environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The socket path when none is given explicitly.

    In order: ``$FLOWMASON_SOCKET`` when set and not empty; ``/run/flowmason/flowmasond.sock``
    for root (the system daemon); ``$XDG_RUNTIME_DIR/flowmason/flowmasond.sock`` for a plain
    user with a runtime dir; otherwise ``/run/flowmason/flowmasond.sock``. The daemon binds
    here and the command connects here, so both sides agree without configuration.
    ``environ`` and ``euid`` default to the current process's.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(SOCKET_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_SOCKET_PATH
    runtime_dir = env.get("XDG_RUNTIME_DIR", "").strip()
    if runtime_dir:
        return Path(runtime_dir) / "flowmason" / SOCKET_NAME
    return SYSTEM_SOCKET_PATH


def resolve_socket_path(explicit: str | os.PathLike[str] | None = None, *,
                        environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The socket a client should connect to: ``explicit`` (a ``--socket`` flag) over the default.

    One client-only convenience on top of :func:`default_socket_path`: a plain user whose own
    daemon socket does not exist, but the system daemon's does, talks to the system daemon
    (access is then decided by the socket's group and the daemon's uid allow list).
    """
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser()
    env = os.environ if environ is None else environ
    path = default_socket_path(environ=env, euid=euid)
    if (not env.get(SOCKET_ENV, "").strip() and path != SYSTEM_SOCKET_PATH
            and not path.exists() and SYSTEM_SOCKET_PATH.exists()):
        return SYSTEM_SOCKET_PATH
    return path
