"""Errors the client raises: the daemon unreachable, a JSON-RPC error reply, a broken exchange."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ClientError(Exception):
    """An error talking to flowmasond."""


class DaemonUnreachableError(ClientError):
    """No daemon answered on the socket; the message is one line naming the path tried."""

    def __init__(self, socket_path: str | Path, reason: str = "cannot connect") -> None:
        self.socket_path = str(socket_path)
        self.reason = reason
        super().__init__(f"flowmasond is not reachable at {self.socket_path}: {reason}")


class ConnectionLostError(DaemonUnreachableError):
    """The daemon closed the connection before it replied (it stopped, or refused the line)."""

    def __init__(self, socket_path: str | Path, reason: str = "connection closed before the reply") -> None:
        super().__init__(socket_path, reason)


class ProtocolError(ClientError):
    """The daemon sent something that is not a valid reply to the request."""


class RequestTimeoutError(ClientError):
    """No reply within the client's timeout; the connection was dropped."""


class RemoteError(ClientError):
    """The daemon answered with a JSON-RPC error.

    ``code`` is the JSON-RPC code (see ``protocol.ErrorCode``); for application errors ``data``
    is ``{code, message, context}`` with the daemon's own error code string.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(self.describe())

    @property
    def error_code(self) -> str | None:
        """The daemon's error code string (``run_not_found``...), when the reply carried one."""
        if isinstance(self.data, dict) and isinstance(self.data.get("code"), str):
            return self.data["code"]
        return None

    @property
    def context(self) -> dict[str, Any]:
        """The error's context (stage, run, file...), empty when there is none."""
        if isinstance(self.data, dict) and isinstance(self.data.get("context"), dict):
            return self.data["context"]
        return {}

    def describe(self) -> str:
        """One human line: the most specific message available, with its context."""
        message = self.message
        if isinstance(self.data, dict) and isinstance(self.data.get("message"), str):
            message = self.data["message"]
        # Context the message already names is left out; other values print as JSON, never as a
        # Python repr, and long ones are cut.
        parts = []
        for key, value in self.context.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, str) and (repr(value) in message or value in message):
                continue
            parts.append(f"{key}={text if len(text) <= 120 else text[:117] + '...'}")
        return f"{message} ({', '.join(parts)})" if parts else message
