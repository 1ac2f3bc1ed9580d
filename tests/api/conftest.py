"""Fixtures for the control-socket tests: servers on real Unix sockets in a short temp dir."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from api_support import RawConnection, ServerThread, State


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short, world-traversable directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fm-api-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_server(socket_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    """Factory: start a server with the given ControlServer keyword arguments; stopped at teardown."""
    started: list[ServerThread] = []

    def start(state: State | None = None, path: Path | None = None, **kwargs: Any) -> ServerThread:
        kwargs.setdefault("idle_timeout_s", 30.0)
        if "sock" not in kwargs and path is None:
            path = socket_dir / "flowmasond.sock"
        server = ServerThread(path, state or State(), **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerThread]) -> ServerThread:
    """A server with default limits."""
    return start_server()


@pytest.fixture
def raw(server: ServerThread) -> Iterator[Callable[[], RawConnection]]:
    """Factory of raw connections to the default server."""
    opened: list[RawConnection] = []

    def connect() -> RawConnection:
        conn = RawConnection(server.path or "")
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
