"""flowmason_client: talk to flowmasond over its control socket.

The protocol models live in :mod:`flowmason_client.protocol` and are shared with the daemon; this
package never imports ``flowmasond``.
"""

from __future__ import annotations

from flowmason_client.client import AsyncClient, Client
from flowmason_client.errors import (
    ClientError, ConnectionLostError, DaemonUnreachableError, ProtocolError, RemoteError,
    RequestTimeoutError,
)
from flowmason_client.paths import default_socket_path, resolve_socket_path
from flowmason_client.protocol import PROTOCOL_VERSION, ErrorCode

__all__ = [
    "PROTOCOL_VERSION",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionLostError",
    "DaemonUnreachableError",
    "ErrorCode",
    "ProtocolError",
    "RemoteError",
    "RequestTimeoutError",
    "default_socket_path",
    "resolve_socket_path",
]
