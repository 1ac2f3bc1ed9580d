"""The Python clients against a real ControlServer, and socket path resolution."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Callable

import pytest

from api_support import ServerThread, State, wait_until
from flowmason_client import (
    AsyncClient, Client, ConnectionLostError, DaemonUnreachableError, RemoteError, RequestTimeoutError,
    default_socket_path, resolve_socket_path,
)
from flowmason_client.paths import SYSTEM_SOCKET_PATH
from flowmason_client.protocol import ErrorCode, Notification, Response, RunEvent, RunEventsResult


async def test_call_returns_the_result(server: ServerThread) -> None:
    """call() returns the method's result."""
    async with AsyncClient(server.path) as client:
        assert await client.call("echo", {"value": {"a": [1, 2]}}) == {"value": {"a": [1, 2]}}


async def test_typed_helper_parses_the_result(server: ServerThread) -> None:
    """A typed helper returns the protocol's result model."""
    async with AsyncClient(server.path) as client:
        health = await client.health()
    assert health.status == "ok"


async def test_remote_error_carries_code_message_and_data(server: ServerThread) -> None:
    """A JSON-RPC error raises RemoteError with the code, the daemon's error code string and context."""
    async with AsyncClient(server.path) as client:
        with pytest.raises(RemoteError) as caught:
            await client.call("fail_app", {"run_id": "r-9"})
        assert await client.call("health") == {"status": "ok"}  # the connection is still usable
    error = caught.value
    assert error.code == ErrorCode.RUN_NOT_FOUND
    assert error.error_code == "run_not_found"
    assert error.context == {"run_id": "r-9"}
    assert str(error) == "no run 'r-9'"  # one wording for 'not found'; the id is not repeated


async def test_unreachable_daemon_names_the_socket_in_one_line(socket_dir: Path) -> None:
    """With no daemon, the error is one line naming the socket path that was tried."""
    path = socket_dir / "missing.sock"
    with pytest.raises(DaemonUnreachableError) as caught:
        await AsyncClient(path).call("health")
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert caught.value.socket_path == str(path)


async def test_stale_socket_is_reported_as_no_daemon_listening(socket_dir: Path) -> None:
    """A socket file nobody listens on is reported as refused, naming the path."""
    path = socket_dir / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(DaemonUnreachableError, match="refused") as caught:
        await AsyncClient(path).health()
    assert str(path) in str(caught.value)


async def test_stream_yields_notifications_then_the_response(server: ServerThread) -> None:
    """stream() yields each notification, then the final Response."""
    async with AsyncClient(server.path) as client:
        items = [item async for item in client.stream("ticks", {"count": 2})]
    assert [type(item) for item in items] == [Notification, Notification, Response]
    assert [item.params for item in items[:2]] == [{"n": 0}, {"n": 1}]
    assert items[2].result == {"count": 2}


async def test_runs_follow_yields_events_then_the_result(server: ServerThread) -> None:
    """runs_follow() yields RunEvent models, then the RunEventsResult with the run."""
    async with AsyncClient(server.path) as client:
        items = [item async for item in client.runs_follow("r-1")]
    assert [type(item) for item in items] == [RunEvent, RunEvent, RunEventsResult]
    assert [item.kind for item in items[:2]] == ["stage_started", "stage_completed"]
    assert items[2].run is not None and items[2].run.status == "succeeded"


async def test_runs_events_without_follow_returns_the_events(server: ServerThread) -> None:
    """runs_events() returns the recorded events in its result."""
    async with AsyncClient(server.path) as client:
        result = await client.runs_events("r-1", after_id=0)
    assert [event.id for event in result.events] == [1, 2]


async def test_leaving_a_stream_early_keeps_the_client_usable(server: ServerThread) -> None:
    """Breaking out of a stream drops its connection; the next call reconnects."""
    async with AsyncClient(server.path) as client:
        stream = client.stream("ticks", {"count": 5})
        async for _ in stream:
            break
        await stream.aclose()
        assert await client.call("health") == {"status": "ok"}


async def test_fifty_clients_are_served_concurrently(start_server: Callable[..., ServerThread]) -> None:
    """50 clients calling at once are all served, concurrently (the method returns only when all 50 are in)."""
    server = start_server(State(barrier_parties=50))

    async def one(index: int) -> object:
        async with AsyncClient(server.path, timeout=10) as client:
            return (await client.call("barrier"), await client.call("echo", {"value": index}))

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert [echo for _, echo in results] == [{"value": i} for i in range(50)]
    assert all(barrier["arrived"] == 50 for barrier, _ in results)


async def test_client_reconnects_after_an_idle_disconnect(start_server: Callable[..., ServerThread]) -> None:
    """When the daemon closed an idle connection, the next call opens a new one transparently."""
    server = start_server(idle_timeout_s=0.1)
    async with AsyncClient(server.path) as client:
        assert await client.call("health") == {"status": "ok"}
        await asyncio.to_thread(wait_until, lambda: server.connection_count() == 0, "the idle disconnect")
        assert await client.call("health") == {"status": "ok"}


async def test_client_timeout_raises_and_the_next_call_works(server: ServerThread) -> None:
    """A reply slower than the client's timeout raises RequestTimeoutError; the client stays usable."""
    async with AsyncClient(server.path, timeout=0.2) as client:
        with pytest.raises(RequestTimeoutError):
            await client.call("sleepy", {"seconds": 30})
        assert await client.call("health") == {"status": "ok"}


async def test_daemon_stopping_mid_call_raises_connection_lost(start_server: Callable[..., ServerThread]) -> None:
    """A daemon that closes while a call is in flight gives ConnectionLostError naming the socket."""
    server = start_server()
    async with AsyncClient(server.path) as client:
        call = asyncio.create_task(client.call("sleepy", {"seconds": 30}))
        await asyncio.to_thread(wait_until, lambda: server.connection_count() == 1, "the call to arrive")
        await asyncio.to_thread(server.stop)
        with pytest.raises(ConnectionLostError) as caught:
            await call
    assert str(server.path) in str(caught.value)


def test_sync_client_calls_and_streams(server: ServerThread) -> None:
    """The synchronous client offers the same calls and streams on its own loop."""
    with Client(server.path) as client:
        assert client.health().status == "ok"
        assert client.call("echo", {"value": 3}) == {"value": 3}
        items = list(client.runs_follow("r-2"))
    assert [type(item) for item in items] == [RunEvent, RunEvent, RunEventsResult]


def test_sync_client_works_from_a_thread(server: ServerThread) -> None:
    """Client does not depend on the main thread (the CLI may run it anywhere)."""
    results: list[object] = []

    def work() -> None:
        with Client(server.path) as client:
            results.append(client.call("echo", {"value": "t"}))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert results == [{"value": "t"}]


# --- socket path resolution ----------------------------------------------------------------------


def test_env_variable_wins_over_defaults() -> None:
    """FLOWMASON_SOCKET decides the default path when set."""
    env = {"FLOWMASON_SOCKET": "/srv/fm.sock", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(environ=env, euid=1000) == Path("/srv/fm.sock")


def test_root_uses_the_system_socket() -> None:
    """Root talks to the system daemon under /run/flowmason."""
    assert default_socket_path(environ={"XDG_RUNTIME_DIR": "/run/user/0"}, euid=0) == SYSTEM_SOCKET_PATH


def test_plain_user_uses_the_runtime_dir() -> None:
    """A plain user's socket is under $XDG_RUNTIME_DIR/flowmason."""
    path = default_socket_path(environ={"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000)
    assert path == Path("/run/user/1000/flowmason/flowmasond.sock")


def test_user_without_runtime_dir_falls_back_to_the_system_socket() -> None:
    """Without XDG_RUNTIME_DIR the system socket is the default."""
    assert default_socket_path(environ={}, euid=1000) == SYSTEM_SOCKET_PATH


def test_explicit_path_wins_over_everything() -> None:
    """An explicit --socket path is used as given."""
    env = {"FLOWMASON_SOCKET": "/srv/fm.sock"}
    assert resolve_socket_path("/tmp/x.sock", environ=env, euid=0) == Path("/tmp/x.sock")
