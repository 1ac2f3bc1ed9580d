"""A node's id: configured, or made once (hostname + 6 hex digits) and kept in the state dir."""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from flowmasond.errors import ConfigurationError

NODE_ID_FILE = "node_id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


def resolve_node_id(state_dir: Path, configured: str | None = None) -> str:
    """``configured`` if given, else the id kept in ``<state_dir>/node_id`` (created on first use).

    Kept in the state dir so that a restarted node is the same node (its old leases are expired
    at once instead of after ``lease_seconds``).
    """
    if configured:
        return configured
    path = state_dir / NODE_ID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the node id: {exc}", file=str(path)) from exc
    if text:
        if not _VALID.match(text):
            raise ConfigurationError("the node id file holds an invalid id", file=str(path), node_id=text)
        return text
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:180] or "node"
    node_id = f"{host}-{secrets.token_hex(3)}"
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{NODE_ID_FILE}.{os.getpid()}")
    tmp.write_text(node_id + "\n", encoding="ascii")
    os.replace(tmp, path)
    return node_id
