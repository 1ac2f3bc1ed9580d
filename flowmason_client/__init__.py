"""flowmason_client: talk to flowmasond over its control socket.

The protocol models live in :mod:`flowmason_client.protocol` and are shared with the daemon; this
package never imports ``flowmasond``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowmason_client.client import AsyncClient, Client
    from flowmason_client.errors import (
        ClientError, ConnectionLostError, DaemonUnreachableError, ProtocolError, RemoteError,
        RequestTimeoutError,
    )
    from flowmason_client.paths import default_socket_path, resolve_socket_path
    from flowmason_client.protocol import PROTOCOL_VERSION, ErrorCode

# Names are imported on first access (PEP 562), so that importing one submodule (``inputs`` for
# ``flowmasond run-once``) does not load the client and its protocol models.
_LAZY = {
    "AsyncClient": "client", "Client": "client",
    "ClientError": "errors", "ConnectionLostError": "errors", "DaemonUnreachableError": "errors",
    "ProtocolError": "errors", "RemoteError": "errors", "RequestTimeoutError": "errors",
    "default_socket_path": "paths", "resolve_socket_path": "paths",
    "PROTOCOL_VERSION": "protocol", "ErrorCode": "protocol",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
