"""The control socket: newline-delimited JSON-RPC 2.0 over a Unix stream socket.

Each connection is served by its own task: a reader that frames lines (bounded: a line longer
than ``max_line_bytes`` gets one -32600 reply and the connection is closed) and a processor that
answers them in order. Every malformed line gets exactly one JSON-RPC error; no input can stop
the server. Idle connections are closed after ``idle_timeout_s``; a peer that stops reading is
dropped after ``write_timeout_s``; neither holds any other connection back.

No one peer may starve the others: a line must arrive in full within ``line_timeout_s`` of its first
byte, each uid holds at most ``max_connections_per_uid`` connections (root and the daemon's own uid
excepted), and the last ``reserved_privileged`` of ``max_connections`` slots only go to privileged
peers (root, the daemon's uid, ``allowed_uids``), so operators always get in.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from flowmason_client.protocol import (
    MAX_LINE_BYTES, ErrorCode, RequestId, encode, make_error, make_notification, make_response,
    rpc_code_for,
)
from flowmasond.api.dispatch import Dispatcher, MethodEntry, StreamResult
from flowmasond.api.framing import RpcError, parse_request, summarize_validation
from flowmasond.api.peercred import AccessPolicy, PeerInfo, peer_credentials
from flowmasond.api.socketfile import bind_socket_file, remove_socket_file
from flowmasond.errors import ConfigurationError, FlowmasonError

log = structlog.get_logger("flowmasond.api")

# Lines read ahead of the one being answered; beyond this the reader stops and the kernel pushes
# back on the peer, so a client pipelining requests cannot grow our memory.
_PIPELINE_DEPTH = 8
# How often a half-closed connection with a stream in flight is checked for a full hang-up:
# a follower that went away must not keep its event stream (and its generator) alive.
_HANGUP_POLL_S = 0.5
# After refusing a connection or an oversized line: how long and how much of the peer's input we
# discard so that it can read the refusal (see _Connection.linger).
_LINGER_S = 2.0
_LINGER_MAX_BYTES = 16 * 1024 * 1024
# Longest exception text put into an internal error's data (the traceback goes to the log).
_MAX_DETAIL_CHARS = 500

_EOF = object()  # the peer finished sending
_SLOW_LINE = object()  # the peer started a line and did not finish it within line_timeout_s
_IDLE = object()  # the peer sent nothing for idle_timeout_s while nothing was in flight
_OVERSIZE = object()  # the peer sent a line longer than max_line_bytes


class _ConnectionGone(Exception):
    """The peer went away or stopped reading; the connection is dropped."""


class ControlServer:
    """Serves a :class:`Dispatcher` on a Unix socket; ``close()`` stops it and removes the file."""

    def __init__(self, dispatcher: Dispatcher, socket_path: str | Path | None = None, *,
                 sock: socket.socket | None = None, allowed_uids: Iterable[int] = (),
                 daemon_uid: int | None = None, max_line_bytes: int = MAX_LINE_BYTES,
                 idle_timeout_s: float | None = 300.0, request_timeout_s: float | None = 60.0,
                 write_timeout_s: float = 10.0, max_connections: int = 256,
                 max_connections_per_uid: int | None = None, reserved_privileged: int = 0,
                 line_timeout_s: float | None = None,
                 socket_mode: int = 0o660, socket_group: int | None = None) -> None:
        if (socket_path is None) == (sock is None):
            raise ConfigurationError("give the control server exactly one of socket_path or sock")
        if max_line_bytes < 64:
            raise ConfigurationError("max_line_bytes is too small for any request", value=max_line_bytes)
        self.dispatcher = dispatcher
        self.policy = AccessPolicy(allowed_uids, daemon_uid=daemon_uid)
        self.max_line_bytes = max_line_bytes
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self.max_connections_per_uid = max_connections_per_uid
        if not 0 <= reserved_privileged < max_connections:
            raise ConfigurationError("reserved_privileged must be below max_connections",
                                     reserved_privileged=reserved_privileged, max_connections=max_connections)
        self.reserved_privileged = reserved_privileged
        self.line_timeout_s = line_timeout_s
        self._per_uid: dict[int, int] = {}
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self._given_sock = sock
        self._path = Path(socket_path) if socket_path is not None else _bound_path(sock)
        self._inode: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()  # every connection task, refused ones included
        self._closing = False

    @property
    def socket_path(self) -> Path | None:
        """The socket's file path (None for an abstract or unnamed activated socket)."""
        return self._path

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind (or adopt the activated socket) and start accepting connections."""
        if self._server is not None:
            return
        if self._given_sock is not None:
            listening = self._given_sock
        else:
            assert self._path is not None
            listening, self._inode = bind_socket_file(self._path, mode=self.socket_mode,
                                                      group=self.socket_group)
        self._closing = False
        self._server = await asyncio.start_unix_server(self._on_connect, sock=listening,
                                                       limit=self.max_line_bytes)
        log.info("control.listening", socket=str(self._path), activated=self._given_sock is not None,
                 allowed_uids=sorted(self.policy.allowed_uids))

    async def close(self) -> None:
        """Stop accepting, close every connection, and remove the socket file if we created it."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._given_sock is None and self._path is not None and self._inode is not None:
            remove_socket_file(self._path, self._inode)
            self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        peer = self.policy.classify(peer_credentials(writer.get_extra_info("socket")))
        connection = _Connection(self, reader, writer, peer)
        refusal = self._refusal(peer)
        if refusal is not None:
            reason, context = refusal
            log.warning("control.connection_refused", reason=reason, peer_uid=peer.uid, peer_pid=peer.pid,
                        **context)
            with suppress(_ConnectionGone):
                await connection.send_error(None, ErrorCode.SERVER_BUSY, f"Server busy: {reason}",
                                            _app_data("server_busy", reason, **context))
                await connection.linger()
            await connection.shutdown()
            return
        self._connections[task] = connection
        self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        try:
            await connection.serve()
        except asyncio.CancelledError:
            pass  # the server is closing
        except Exception:  # noqa: BLE001 - one broken connection must never reach the event loop
            log.exception("control.connection_failed", peer_uid=peer.uid, peer_pid=peer.pid)
        finally:
            self._connections.pop(task, None)
            left = self._per_uid.get(peer.uid, 1) - 1
            if left > 0:
                self._per_uid[peer.uid] = left
            else:
                self._per_uid.pop(peer.uid, None)
            await connection.shutdown()

    def _refusal(self, peer: PeerInfo) -> tuple[str, dict[str, Any]] | None:
        """Why ``peer`` may not have a connection now (reason, context for the reply), or None."""
        if self._closing:
            return "the server is closing", {}
        total = len(self._connections)
        if total >= self.max_connections:
            return "too many connections", {"max_connections": self.max_connections}
        if not peer.privileged and total >= self.max_connections - self.reserved_privileged:
            return ("too many connections (the remaining slots are reserved for root and allowed_uids)",
                    {"max_connections": self.max_connections, "reserved_privileged": self.reserved_privileged})
        per_uid = self.max_connections_per_uid
        exempt = peer.uid == 0 or peer.uid == self.policy.daemon_uid
        if per_uid is not None and not exempt and self._per_uid.get(peer.uid, 0) >= per_uid:
            return (f"too many connections from uid {peer.uid}",
                    {"max_connections_per_uid": per_uid, "uid": peer.uid})
        return None


class _Connection:
    """One client: frames its lines, answers them in order, streams notifications."""

    def __init__(self, server: ControlServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: PeerInfo) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.log = log.bind(peer_uid=peer.uid, peer_pid=peer.pid)
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue(_PIPELINE_DEPTH)
        self.busy = False
        self.last_activity = self.loop.time()
        self.hung_up = asyncio.Event()

    async def serve(self) -> None:
        """Answer lines until the peer is done, idle, oversized or gone."""
        reader_task = asyncio.create_task(self._read_loop())
        try:
            while True:
                item = await self.queue.get()
                if item is _EOF or item is _IDLE:
                    return
                if item is _SLOW_LINE:
                    limit_s = self.server.line_timeout_s
                    self.log.info("control.slow_line_disconnect", line_timeout_s=limit_s)
                    await self.send_error(None, ErrorCode.INVALID_REQUEST,
                                          f"Invalid Request: line not completed within {limit_s} s",
                                          {"line_timeout_s": limit_s})
                    return
                if item is _OVERSIZE:
                    limit = self.server.max_line_bytes
                    await self.send_error(None, ErrorCode.INVALID_REQUEST,
                                          f"Invalid Request: line longer than {limit} bytes",
                                          {"max_line_bytes": limit})
                    await self.linger()
                    return
                self.busy = True
                try:
                    await self._answer(item)
                finally:
                    self.busy = False
                    self.last_activity = self.loop.time()
        except _ConnectionGone:
            return
        finally:
            reader_task.cancel()
            await asyncio.wait({reader_task}, timeout=self.server.write_timeout_s)

    async def linger(self) -> None:
        """Half-close, then discard what the peer is still sending, for a bounded time and size.

        Closing a Unix socket with unread input resets the peer, which then loses the error reply
        we just sent; a client still writing its oversized line would never see why.
        """
        budget = _LINGER_MAX_BYTES
        with suppress(OSError, RuntimeError, TimeoutError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(_LINGER_S):
                while budget > 0:
                    chunk = await self.reader.read(min(budget, 1 << 16))
                    if not chunk:
                        break
                    budget -= len(chunk)

    async def shutdown(self) -> None:
        """Close the transport, flushing what fits in the write timeout, then abort."""
        transport = self.writer.transport
        if not self.writer.is_closing():
            self.writer.close()
        try:
            async with asyncio.timeout(self.server.write_timeout_s):
                await self.writer.wait_closed()
        except (TimeoutError, OSError):
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise

    # --- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        idle = self.server.idle_timeout_s
        line_timeout = self.server.line_timeout_s
        partial_since: float | None = None  # when a started, unfinished line was first seen
        while True:
            timeout: float | None = None
            if idle is not None:
                timeout = idle if self.busy else max(self.last_activity + idle - self.loop.time(), 0.0)
            if line_timeout is not None:
                # Wake up often enough to see a line that started and stalls (a slowloris).
                timeout = line_timeout / 2 if timeout is None else min(timeout, line_timeout / 2)
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # races with a completed read, which would leave this task reading forever.
                async with asyncio.timeout(timeout):
                    line = await self.reader.readuntil(b"\n")
            except TimeoutError:
                if line_timeout is not None and _buffered(self.reader):
                    now = self.loop.time()
                    if partial_since is None:
                        partial_since = now
                    elif now - partial_since >= line_timeout / 2:
                        # Seen unfinished at two wake-ups: it has had between 1 and 1.5 line_timeout.
                        await self.queue.put(_SLOW_LINE)
                        return
                    continue
                partial_since = None
                if idle is None:
                    continue
                # A stream or a slow handler in flight is not idleness; neither is a queued line.
                if self.busy or not self.queue.empty() or self.loop.time() - self.last_activity < idle:
                    continue
                self.log.info("control.idle_disconnect", idle_timeout_s=idle)
                await self.queue.put(_IDLE)
                return
            except (asyncio.LimitOverrunError, ValueError):
                await self.queue.put(_OVERSIZE)
                return
            except asyncio.IncompleteReadError as exc:
                # The peer half-closed; an unterminated last line is still a request.
                if len(exc.partial) > self.server.max_line_bytes:
                    await self.queue.put(_OVERSIZE)
                    return
                if exc.partial.strip():
                    await self.queue.put(exc.partial)
                await self.queue.put(_EOF)
                await self._watch_hangup()
                return
            except ConnectionError:
                self.hung_up.set()
                await self.queue.put(_EOF)
                return
            partial_since = None
            self.last_activity = self.loop.time()
            await self.queue.put(line)

    async def _watch_hangup(self) -> None:
        """After EOF, tell a half-close (still reading replies) from a full close (gone)."""
        while not _peer_hung_up(self.writer):
            await asyncio.sleep(_HANGUP_POLL_S)
        self.hung_up.set()

    # --- answering --------------------------------------------------------------------------

    async def _answer(self, line: bytes) -> None:
        started = self.loop.time()
        try:
            request = parse_request(line.rstrip(b"\n"))
        except RpcError as exc:
            await self.send_error(exc.request_id, exc.code, exc.message, exc.data)
            return
        entry = self.server.dispatcher.get(request.method)
        reply = not request.is_notification
        try:
            if entry is None:
                raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"Method not found: {request.method}",
                               {"method": request.method})
            params = self._check(entry, request.params)
            if entry.stream:
                if reply:
                    await self._stream(request.id, entry, params)
                else:
                    self.log.info("control.stream_notification_ignored", method=entry.name)
                return
            result = await self._call(entry, params)
        except RpcError as exc:
            if reply:
                await self.send_error(request.id, exc.code, exc.message, exc.data)
            return
        finally:
            self.log.debug("control.request", method=request.method, id=request.id,
                           duration_ms=round((self.loop.time() - started) * 1000, 3))
        if reply:
            await self._send_result(request.id, result)

    def _check(self, entry: MethodEntry, params: Any) -> Any:
        """Access first (an unprivileged peer learns nothing from params errors), then params."""
        if entry.mutating and not self.peer.privileged:
            self.log.warning("control.permission_denied", method=entry.name, peer_gid=self.peer.gid)
            raise RpcError(ErrorCode.PERMISSION_DENIED, f"Permission denied: {entry.name} changes state",
                           _app_data("permission_denied",
                                     f"uid {self.peer.uid} may not call {entry.name}",
                                     method=entry.name, uid=self.peer.uid))
        if isinstance(params, list):
            raise RpcError(ErrorCode.INVALID_PARAMS,
                           "Invalid params: this method takes named params (a JSON object)",
                           {"method": entry.name})
        try:
            return entry.params_model.model_validate(params if params is not None else {})
        except ValidationError as exc:
            summary, errors = summarize_validation(exc)
            raise RpcError(ErrorCode.INVALID_PARAMS, f"Invalid params: {summary}",
                           {"method": entry.name, "errors": errors}) from None

    async def _call(self, entry: MethodEntry, params: Any) -> Any:
        timeout = self.server.request_timeout_s
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await entry.handler(params, self.peer)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if deadline.expired():
                self.log.warning("control.request_timeout", method=entry.name, timeout_s=timeout)
                raise RpcError(ErrorCode.REQUEST_TIMEOUT, f"Request timed out after {timeout} s",
                               _app_data("request_timeout", f"{entry.name} did not finish in {timeout} s",
                                         method=entry.name, timeout_s=timeout)) from None
            raise self._failure(entry, exc) from None
        except Exception as exc:  # noqa: BLE001 - a handler bug becomes -32603, never a crash
            raise self._failure(entry, exc) from None

    async def _stream(self, request_id: RequestId, entry: MethodEntry, params: Any) -> None:
        pump = asyncio.create_task(self._pump(entry, params))
        gone = asyncio.create_task(self.hung_up.wait())
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not pump.done():
                pump.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await pump
        if pump.cancelled():
            self.log.info("control.stream_abandoned", method=entry.name)
            raise _ConnectionGone
        exc = pump.exception()
        if isinstance(exc, _ConnectionGone):
            raise exc
        if exc is not None:
            error = self._failure(entry, exc)
            await self.send_error(request_id, error.code, error.message, error.data)
            return
        await self._send_result(request_id, pump.result())

    async def _pump(self, entry: MethodEntry, params: Any) -> Any:
        stream = entry.handler(params, self.peer)
        try:
            async for item in stream:  # type: ignore[union-attr]
                if isinstance(item, StreamResult):
                    return item.value
                await self._send(make_notification(entry.notification, _plain(item)))
            return None
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _failure(self, entry: MethodEntry, exc: BaseException) -> RpcError:
        if isinstance(exc, RpcError):
            return exc
        if isinstance(exc, FlowmasonError):
            self.log.info("control.request_failed", method=entry.name, code=exc.code, error=str(exc))
            return RpcError(rpc_code_for(exc.code), exc.message, exc.to_dict())
        self.log.error("control.internal_error", method=entry.name, exc_info=exc)
        detail = f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL_CHARS]
        return RpcError(ErrorCode.INTERNAL_ERROR, "Internal error",
                        _app_data("internal_error", detail, method=entry.name))

    # --- writing ----------------------------------------------------------------------------

    async def _send_result(self, request_id: RequestId, result: Any) -> None:
        try:
            data = encode(make_response(request_id, _plain(result)))
        except (TypeError, ValueError, RecursionError) as exc:
            self.log.error("control.result_not_serializable", exc_info=exc)
            await self.send_error(request_id, ErrorCode.INTERNAL_ERROR, "Internal error",
                                  _app_data("internal_error", f"result is not JSON: {exc}"[:_MAX_DETAIL_CHARS]))
            return
        await self._write(data)

    async def send_error(self, request_id: RequestId, code: int, message: str, data: Any = None) -> None:
        """Send one error reply; data that cannot be encoded is dropped rather than the reply."""
        try:
            line = encode(make_error(request_id, code, message, data))
        except (TypeError, ValueError, RecursionError):
            line = encode(make_error(request_id, code, message))
        await self._write(line)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._write(encode(message))

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise _ConnectionGone
        try:
            self.writer.write(data)
            if not self.writer.transport.get_write_buffer_size() and not self.writer.is_closing():
                return  # sent at once (the usual case): nothing to drain, no timer to arm
            async with asyncio.timeout(self.server.write_timeout_s):
                await self.writer.drain()
        except TimeoutError:
            self.log.warning("control.slow_client_dropped", write_timeout_s=self.server.write_timeout_s)
            self.writer.transport.abort()
            raise _ConnectionGone from None
        except (ConnectionError, RuntimeError) as exc:
            raise _ConnectionGone from exc


def _plain(value: Any) -> Any:
    """Pydantic models as JSON-mode dicts; everything else as given."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _app_data(code: str, message: str, **context: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "context": context}


def _peer_hung_up(writer: asyncio.StreamWriter) -> bool:
    """True once the peer closed its end entirely (POLLHUP), not just its sending half."""
    if writer.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    fileno = sock.fileno() if sock is not None else -1
    if fileno < 0:
        return True
    poller = select.poll()
    poller.register(fileno, select.POLLHUP)
    return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
               for _, events in poller.poll(0))


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes received but not yet framed into a line (the start of an unfinished line)."""
    # StreamReader has no public peek; _buffer has been its bytearray since Python 3.4.
    return len(getattr(reader, "_buffer", b""))


def _bound_path(sock: socket.socket | None) -> Path | None:
    if sock is None:
        return None
    name = sock.getsockname()
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    # An abstract socket's name starts with NUL and has no file.
    return Path(name) if name and not name.startswith("\0") else None
