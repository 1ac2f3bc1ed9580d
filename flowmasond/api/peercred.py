"""Who is on the other end of the control socket, and what they may do."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Protocol
from collections.abc import Iterable

from flowmasond.errors import PermissionDeniedError

# struct ucred { pid_t pid; uid_t uid; gid_t gid; } on Linux.
_UCRED = struct.Struct("3i")
# Reported when the kernel cannot tell us (not Linux, or not a Unix socket): never privileged.
UNKNOWN_ID = -1


class _HasGetsockopt(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInfo:
    """The connected process as the kernel saw it at connect time; ``privileged`` may mutate."""

    pid: int
    uid: int
    gid: int
    privileged: bool = False


def peer_credentials(sock: _HasGetsockopt) -> PeerInfo:
    """Read ``SO_PEERCRED`` from a connected Unix socket (ids are -1 when unavailable)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return PeerInfo(pid=UNKNOWN_ID, uid=UNKNOWN_ID, gid=UNKNOWN_ID)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    except OSError:
        return PeerInfo(pid=UNKNOWN_ID, uid=UNKNOWN_ID, gid=UNKNOWN_ID)
    pid, uid, gid = _UCRED.unpack(raw[: _UCRED.size])
    return PeerInfo(pid=pid, uid=uid, gid=gid)


class AccessPolicy:
    """Mutating methods are for root, the daemon's own uid and a configured allow list."""

    def __init__(self, allowed_uids: Iterable[int] = (), *, daemon_uid: int | None = None) -> None:
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
        self.allowed_uids = frozenset(int(uid) for uid in allowed_uids)

    def may_mutate(self, uid: int) -> bool:
        """Whether a peer with this uid may call mutating methods."""
        if uid == UNKNOWN_ID:
            return False
        return uid == 0 or uid == self.daemon_uid or uid in self.allowed_uids

    def classify(self, peer: PeerInfo) -> PeerInfo:
        """The peer with ``privileged`` set by this policy."""
        return PeerInfo(pid=peer.pid, uid=peer.uid, gid=peer.gid, privileged=self.may_mutate(peer.uid))


# Raised by handlers for finer-grained checks; defined with the rest of the hierarchy.
__all__ = ["AccessPolicy", "PeerInfo", "PermissionDeniedError", "peer_credentials"]
