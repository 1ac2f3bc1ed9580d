"""Test support for the control socket: a real ControlServer served from a background thread,
the test methods it dispatches to, and a raw line-level connection.

The server runs on its own event loop so that tests can talk to it with blocking sockets, a
forked child, the sync client or the async client alike.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from flowmason_client.protocol import EmptyParams, Params, RunEventsParams, RunRefParams
from flowmasond.api.dispatch import Dispatcher, StreamResult
from flowmasond.api.peercred import PeerInfo
from flowmasond.api.server import ControlServer
from flowmasond.errors import InvalidStateError, RunNotFoundError

WAIT_S = 10.0  # upper bound for anything a test waits on; never reached when the code works


class EchoParams(Params):
    value: Any = None


class CountParams(Params):
    count: int = 3
    delay_s: float = 0.0


class SleepParams(Params):
    seconds: float


class SizeParams(Params):
    size: int


class State:
    """What the test methods observed, readable from the test thread."""

    def __init__(self, barrier_parties: int = 50) -> None:
        self.bumps = 0
        self.peers: list[PeerInfo] = []
        self.hold_started = threading.Event()
        self.hold_closed = threading.Event()
        self.barrier_parties = barrier_parties
        self.barrier_count = 0
        self.barrier_open: asyncio.Event | None = None


def make_dispatcher(state: State) -> Dispatcher:
    """The server framework's test surface: one method per behaviour under test."""
    d = Dispatcher()

    async def health(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        return {"status": "ok"}

    async def echo(params: EchoParams, peer: PeerInfo) -> dict[str, Any]:
        return {"value": params.value}

    async def whoami(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        return {"uid": peer.uid, "pid": peer.pid, "gid": peer.gid, "privileged": peer.privileged}

    async def bump(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        state.bumps += 1
        state.peers.append(peer)
        return {"count": state.bumps}

    async def fail_app(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        raise RunNotFoundError(run_id=params.run_id)

    async def crash(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        raise RuntimeError("kaboom")

    async def unserializable(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        return {"value": object()}

    async def sleepy(params: SleepParams, peer: PeerInfo) -> dict[str, Any]:
        await asyncio.sleep(params.seconds)
        return {"slept": params.seconds}

    async def big(params: SizeParams, peer: PeerInfo) -> dict[str, Any]:
        return {"data": "x" * params.size}

    async def barrier(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        # Returns only once `barrier_parties` calls are in flight together: proves concurrency.
        if state.barrier_open is None:
            state.barrier_open = asyncio.Event()
        state.barrier_count += 1
        if state.barrier_count >= state.barrier_parties:
            state.barrier_open.set()
        await state.barrier_open.wait()
        return {"arrived": state.barrier_count}

    async def ticks(params: CountParams, peer: PeerInfo) -> AsyncIterator[Any]:
        for n in range(params.count):
            if params.delay_s:
                await asyncio.sleep(params.delay_s)
            yield {"n": n}
        yield StreamResult({"count": params.count})

    async def ticks_then_fail(params: CountParams, peer: PeerInfo) -> AsyncIterator[Any]:
        for n in range(params.count):
            yield {"n": n}
        raise InvalidStateError("run is not resumable", run_id="r-1", status="succeeded")

    async def hold(params: EmptyParams, peer: PeerInfo) -> AsyncIterator[Any]:
        try:
            yield {"held": True}
            state.hold_started.set()
            await asyncio.Event().wait()  # never set: only the client's departure ends this
            yield StreamResult(None)
        finally:
            state.hold_closed.set()

    async def run_events(params: RunEventsParams, peer: PeerInfo) -> AsyncIterator[Any]:
        events = [{"id": 1, "run_id": params.run_id, "kind": "stage_started", "stage_id": "a"},
                  {"id": 2, "run_id": params.run_id, "kind": "stage_completed", "stage_id": "a"}]
        if params.follow:
            for event in events:
                yield event
            events = []
        yield StreamResult({"events": events, "last_id": 2,
                            "run": {"run_id": params.run_id, "status": "succeeded"}})

    d.register("health", health, mutating=False)
    d.register("echo", echo, EchoParams, mutating=False)
    d.register("whoami", whoami, mutating=False)
    d.register("bump", bump, mutating=True)
    d.register("fail_app", fail_app, RunRefParams, mutating=False)
    d.register("crash", crash, mutating=False)
    d.register("unserializable", unserializable, mutating=False)
    d.register("sleepy", sleepy, SleepParams, mutating=False)
    d.register("big", big, SizeParams, mutating=False)
    d.register("barrier", barrier, mutating=False)
    d.register("ticks", ticks, CountParams, mutating=False, stream=True)
    d.register("ticks_then_fail", ticks_then_fail, CountParams, mutating=False, stream=True)
    d.register("hold", hold, mutating=False, stream=True)
    d.register("runs.events", run_events, RunEventsParams, mutating=False, stream=True)
    return d


class ServerThread:
    """A ControlServer on its own loop in a daemon thread."""

    def __init__(self, path: Path | None, state: State,
                 dispatcher_factory: Callable[[State], Dispatcher] = make_dispatcher, **kwargs: Any) -> None:
        self.path = path
        self.state = state
        self.dispatcher_factory = dispatcher_factory
        self.kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.server: ControlServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ServerThread:
        """Start the loop thread and the server on it."""
        self._thread.start()
        self.server = self.run(self._start())
        return self

    async def _start(self) -> ControlServer:
        server = ControlServer(self.dispatcher_factory(self.state), self.path, **self.kwargs)
        await server.start()
        return server

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT_S)

    def stop(self) -> None:
        """Close the server and its loop (idempotent)."""
        if self.loop.is_closed():
            return
        if self.server is not None:
            self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT_S)
        self.loop.close()

    def connection_count(self) -> int:
        assert self.server is not None
        return self.server.connection_count


class RawConnection:
    """A blocking socket speaking raw lines, for inputs no well-behaved client would send."""

    def __init__(self, path: Path | str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT_S)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> dict[str, Any] | None:
        """The next reply line decoded, or None when the server closed the connection."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def request(self, method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode() + b"\n")
        reply = self.read_line()
        assert reply is not None, f"connection closed instead of answering {method}"
        return reply

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll for a state change (not a timing assertion): fails only if it never happens."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def assert_error(reply: dict[str, Any] | None, code: int, request_id: Any = None) -> dict[str, Any]:
    """A well-formed JSON-RPC error reply with this code and id; returns its error object."""
    assert reply is not None, "expected an error reply, the connection was closed"
    assert set(reply) == {"jsonrpc", "id", "error"}, reply
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] == request_id
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply["error"]


def assert_healthy(path: Path | str, conn: RawConnection | None = None) -> None:
    """The server answers `health` (on ``conn`` if given, else on a new connection)."""
    fresh = conn is None
    conn = conn or RawConnection(path)
    try:
        reply = conn.request("health", request_id="probe")
        assert reply == {"jsonrpc": "2.0", "id": "probe", "result": {"status": "ok"}}
    finally:
        if fresh:
            conn.close()
