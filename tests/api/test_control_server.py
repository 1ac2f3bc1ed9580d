"""The control server on a real Unix socket: framing, every JSON-RPC error path, limits, lifecycle."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Callable

import pytest
from structlog.testing import capture_logs

from api_support import (
    RawConnection, ServerThread, State, assert_error, assert_healthy, make_dispatcher, wait_until,
)
from flowmason_client.protocol import MAX_JSON_DEPTH, ErrorCode, RunStartParams
from flowmasond.api.dispatch import Dispatcher
from flowmasond.api.peercred import peer_credentials
from flowmasond.api.server import ControlServer
from flowmasond.errors import ConfigurationError

Raw = Callable[[], RawConnection]


# --- the socket file ---------------------------------------------------------------------------


def test_socket_file_is_a_socket_with_mode_0660(server: ServerThread) -> None:
    """The socket is created owner+group read/write and nothing for others."""
    info = os.stat(server.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660


def test_socket_group_is_applied(start_server: Callable[..., ServerThread]) -> None:
    """A configured group owns the socket file, so its members can connect."""
    server = start_server(socket_group=65534)
    assert os.stat(server.path).st_gid == 65534


def test_close_removes_the_socket_file(start_server: Callable[..., ServerThread]) -> None:
    """After close() no socket file is left behind."""
    server = start_server()
    server.stop()
    assert not server.path.exists()


def test_close_leaves_a_successors_socket_alone(start_server: Callable[..., ServerThread]) -> None:
    """A server only unlinks the socket file it created, not one that replaced it."""
    server = start_server()
    server.path.unlink()
    successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    successor.bind(str(server.path))
    try:
        server.stop()
        assert stat.S_ISSOCK(os.stat(server.path).st_mode)
    finally:
        successor.close()


def test_stale_socket_file_is_replaced(start_server: Callable[..., ServerThread], socket_dir: Path) -> None:
    """A socket file nobody listens on (a crashed daemon's) is replaced."""
    path = socket_dir / "flowmasond.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    server = start_server(path=path)
    assert_healthy(server.path)


def test_live_socket_is_not_replaced(server: ServerThread) -> None:
    """Starting on the socket of a live server fails with an error naming the path; the first keeps serving."""
    second = ServerThread(server.path, State())
    second._thread.start()
    try:
        with pytest.raises(ConfigurationError) as caught:
            second.run(second._start())
        assert "already listening" in str(caught.value)
        assert str(server.path) in str(caught.value)
    finally:
        second.stop()
    assert_healthy(server.path)


def test_non_socket_file_is_not_replaced(socket_dir: Path) -> None:
    """A regular file at the socket path is an error and is left untouched."""
    path = socket_dir / "flowmasond.sock"
    path.write_text("precious")
    second = ServerThread(path, State())
    second._thread.start()
    try:
        with pytest.raises(ConfigurationError, match="not a socket"):
            second.run(second._start())
    finally:
        second.stop()
    assert path.read_text() == "precious"


def test_overlong_socket_path_is_a_clear_error(socket_dir: Path) -> None:
    """A path longer than a Unix socket address allows is refused by name, not with a cryptic OSError."""
    path = socket_dir / ("x" * 120) / "flowmasond.sock"
    second = ServerThread(path, State())
    second._thread.start()
    try:
        with pytest.raises(ConfigurationError, match="longer than"):
            second.run(second._start())
    finally:
        second.stop()


def test_activated_socket_is_served_and_left_in_place(start_server: Callable[..., ServerThread],
                                                      socket_dir: Path) -> None:
    """An already-listening socket (systemd activation) is served, and close() does not unlink it."""
    path = socket_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    server = start_server(sock=listener)
    assert server.server is not None and server.server.socket_path == path
    assert_healthy(path)
    server.stop()
    assert path.exists()


# --- well-formed traffic -------------------------------------------------------------------------


def test_request_gets_its_result(raw: Raw) -> None:
    """A valid request is answered with its result and its id."""
    reply = raw().request("echo", {"value": [1, "two", None]}, request_id="abc")
    assert reply == {"jsonrpc": "2.0", "id": "abc", "result": {"value": [1, "two", None]}}


def test_null_id_request_is_answered(raw: Raw) -> None:
    """An explicit null id is a request (not a notification) and gets a reply."""
    reply = raw().request("health", request_id=None)
    assert reply == {"jsonrpc": "2.0", "id": None, "result": {"status": "ok"}}


def test_pipelined_requests_are_answered_in_order(raw: Raw) -> None:
    """Several requests sent at once get their replies in the order sent."""
    conn = raw()
    conn.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "echo", "params": {"value": i}})
                       .encode() + b"\n" for i in range(20)))
    replies = [conn.read_line() for _ in range(20)]
    assert [r["id"] for r in replies] == list(range(20))
    assert [r["result"]["value"] for r in replies] == list(range(20))


def test_notification_is_executed_without_reply(start_server: Callable[..., ServerThread]) -> None:
    """A request without an id runs but gets no reply: the next reply belongs to the next request."""
    state = State()
    server = start_server(state)
    conn = RawConnection(server.path)
    try:
        conn.send(b'{"jsonrpc":"2.0","method":"bump"}\n')
        reply = conn.request("echo", {"value": "after"}, request_id=2)
        assert reply["id"] == 2
        assert state.bumps == 1
    finally:
        conn.close()


def test_unterminated_last_line_is_answered_after_half_close(raw: Raw) -> None:
    """A client that writes a request without a newline and shuts down writing still gets its reply."""
    conn = raw()
    conn.send(b'{"jsonrpc":"2.0","id":5,"method":"health"}')
    conn.sock.shutdown(socket.SHUT_WR)
    assert conn.read_line() == {"jsonrpc": "2.0", "id": 5, "result": {"status": "ok"}}
    assert conn.read_line() is None


def test_line_of_exactly_max_bytes_is_accepted(start_server: Callable[..., ServerThread]) -> None:
    """The limit is inclusive: a line of exactly max_line_bytes (newline excluded) is served."""
    server = start_server(max_line_bytes=4096)
    request = b'{"jsonrpc":"2.0","id":1,"method":"health"}'
    conn = RawConnection(server.path)
    try:
        conn.send(request + b" " * (4096 - len(request)) + b"\n")
        assert conn.read_line() == {"jsonrpc": "2.0", "id": 1, "result": {"status": "ok"}}
    finally:
        conn.close()


# --- every error path ----------------------------------------------------------------------------


def test_invalid_utf8_gets_parse_error(raw: Raw) -> None:
    """Bytes that are not UTF-8 get -32700 and the connection keeps working."""
    conn = raw()
    conn.send(b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}\n')
    assert_error(conn.read_line(), ErrorCode.PARSE_ERROR)
    assert_healthy("", conn)


@pytest.mark.parametrize("line", [b"{", b'{"jsonrpc": "2.0",}', b"", b"   ", b"nul", b"NaN", b"-Infinity",
                                  b'{"a": 1} trailing', b"1" * 5000, b"1e999"])
def test_bad_json_gets_parse_error(raw: Raw, line: bytes) -> None:
    """Text that is not strict JSON (NaN, out-of-range numbers included) gets -32700."""
    conn = raw()
    conn.send(line + b"\n")
    assert_error(conn.read_line(), ErrorCode.PARSE_ERROR)
    assert_healthy("", conn)


@pytest.mark.parametrize("line", [b"42", b'"health"', b"null", b"true", b"1.5"])
def test_non_object_gets_invalid_request(raw: Raw, line: bytes) -> None:
    """Valid JSON that is not an object gets -32600."""
    conn = raw()
    conn.send(line + b"\n")
    assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
    assert_healthy("", conn)


@pytest.mark.parametrize("line", [b"[]", b'[{"jsonrpc":"2.0","id":1,"method":"health"}]'])
def test_batch_gets_invalid_request(raw: Raw, line: bytes) -> None:
    """Batches are not supported and say so with -32600 (one reply, not one per element)."""
    conn = raw()
    conn.send(line + b"\n")
    error = assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
    assert "batch" in error["message"]
    assert_healthy("", conn)


@pytest.mark.parametrize("message", [
    {"jsonrpc": "1.0", "id": 1, "method": "health"},
    {"id": 1, "method": "health"},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "id": 1, "method": ""},
    {"jsonrpc": "2.0", "id": 1, "method": 7},
    {"jsonrpc": "2.0", "id": 1, "method": "health", "params": "x"},
    {"jsonrpc": "2.0", "id": 1, "method": "health", "extra": True},
    {"jsonrpc": 2.0, "id": 1, "method": "health"},
])
def test_wrong_envelope_gets_invalid_request_with_its_id(raw: Raw, message: dict) -> None:
    """A malformed envelope gets -32600, echoing the id when it is a valid one."""
    conn = raw()
    conn.send(json.dumps(message).encode() + b"\n")
    assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST, request_id=1)
    assert_healthy("", conn)


@pytest.mark.parametrize("bad_id", [1.5, True, [1], {"a": 1}])
def test_invalid_id_gets_invalid_request_with_null_id(raw: Raw, bad_id: object) -> None:
    """An id of a type JSON-RPC does not allow gets -32600 with a null id."""
    conn = raw()
    conn.send(json.dumps({"jsonrpc": "2.0", "id": bad_id, "method": "health"}).encode() + b"\n")
    assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
    assert_healthy("", conn)


def test_deep_nesting_beyond_the_parser_gets_invalid_request(raw: Raw) -> None:
    """Nesting deep enough to exhaust the JSON parser's recursion gets -32600, not a crash."""
    conn = raw()
    conn.send(b"[" * 200_000 + b"\n")
    assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
    assert_healthy("", conn)


def test_deep_nesting_in_params_gets_invalid_request(raw: Raw) -> None:
    """Params nested deeper than MAX_JSON_DEPTH are refused before any handler sees them."""
    value: object = "leaf"
    for _ in range(MAX_JSON_DEPTH + 5):
        value = [value]
    conn = raw()
    reply = conn.request("echo", {"value": value}, request_id=3)
    assert_error(reply, ErrorCode.INVALID_REQUEST, request_id=3)
    assert_healthy("", conn)


def test_unknown_method_gets_method_not_found(raw: Raw) -> None:
    """An unregistered method gets -32601 naming it."""
    conn = raw()
    error = assert_error(conn.request("no.such.method", request_id=4), ErrorCode.METHOD_NOT_FOUND, 4)
    assert error["data"] == {"method": "no.such.method"}
    assert_healthy("", conn)


def test_bad_params_get_invalid_params_naming_the_field(raw: Raw) -> None:
    """Params failing the method's model get -32602 with pydantic's summary naming each field."""
    conn = raw()
    reply = conn.request("fail_app", {"run_idd": "x"}, request_id=5)
    error = assert_error(reply, ErrorCode.INVALID_PARAMS, 5)
    assert "run_id" in error["message"] and "run_idd" in error["message"]
    assert {e["loc"] for e in error["data"]["errors"]} == {"run_id", "run_idd"}
    assert_healthy("", conn)


def test_wrong_param_type_is_not_coerced(raw: Raw) -> None:
    """Params are strict: a string where a number is declared is refused, not converted."""
    conn = raw()
    reply = conn.request("sleepy", {"seconds": "0"}, request_id=6)
    assert_error(reply, ErrorCode.INVALID_PARAMS, 6)
    assert_healthy("", conn)


def test_positional_params_get_invalid_params(raw: Raw) -> None:
    """Params given as an array get -32602: every method takes named params."""
    conn = raw()
    assert_error(conn.request("echo", [1, 2], request_id=7), ErrorCode.INVALID_PARAMS, 7)
    assert_healthy("", conn)


def test_flowmason_error_becomes_its_app_error(raw: Raw) -> None:
    """A FlowmasonError from a handler gets its mapped code and its to_dict() as data."""
    conn = raw()
    error = assert_error(conn.request("fail_app", {"run_id": "r-42"}, request_id=8),
                         ErrorCode.RUN_NOT_FOUND, 8)
    assert error["data"] == {"code": "run_not_found", "message": "no run 'r-42'",
                             "context": {"run_id": "r-42"}}
    assert_healthy("", conn)


def test_unexpected_exception_is_internal_error_and_logged(raw: Raw) -> None:
    """Any other exception gets -32603, is logged with its traceback, and the server keeps serving."""
    conn = raw()
    with capture_logs() as logs:
        error = assert_error(conn.request("crash", request_id=9), ErrorCode.INTERNAL_ERROR, 9)
    assert error["data"]["code"] == "internal_error"
    assert "kaboom" in error["data"]["message"]
    [entry] = [e for e in logs if e["event"] == "control.internal_error"]
    assert entry["method"] == "crash" and isinstance(entry["exc_info"], RuntimeError)
    assert_healthy("", conn)


def test_unserializable_result_is_internal_error(raw: Raw) -> None:
    """A handler returning something that is not JSON gets -32603 instead of a broken line."""
    conn = raw()
    assert_error(conn.request("unserializable", request_id=10), ErrorCode.INTERNAL_ERROR, 10)
    assert_healthy("", conn)


def test_request_running_past_its_timeout_gets_timeout_error(start_server: Callable[..., ServerThread]) -> None:
    """A handler slower than request_timeout_s is cancelled and answered with -32011."""
    server = start_server(request_timeout_s=0.2)
    conn = RawConnection(server.path)
    try:
        error = assert_error(conn.request("sleepy", {"seconds": 30}, request_id=11),
                             ErrorCode.REQUEST_TIMEOUT, 11)
        assert error["data"]["code"] == "request_timeout"
        assert_healthy("", conn)
    finally:
        conn.close()


def test_oversized_line_gets_one_error_then_close(start_server: Callable[..., ServerThread]) -> None:
    """A line longer than max_line_bytes gets one -32600 reply, then the connection is closed."""
    server = start_server(max_line_bytes=4096)
    conn = RawConnection(server.path)
    try:
        conn.send(b'{"jsonrpc":"2.0","id":1,"method":"echo","params":{"value":"' + b"x" * 100_000 + b'"}}\n')
        error = assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
        assert error["data"] == {"max_line_bytes": 4096}
        assert conn.read_line() is None
    finally:
        conn.close()
    assert_healthy(server.path)


def test_oversized_line_without_newline_is_not_buffered(start_server: Callable[..., ServerThread]) -> None:
    """An endless line with no newline is cut off at the limit rather than buffered."""
    server = start_server(max_line_bytes=4096)
    conn = RawConnection(server.path)
    try:
        conn.send(b"x" * 1_000_000)
        assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
        assert conn.read_line() is None
    finally:
        conn.close()
    assert_healthy(server.path)


# --- idle and slow clients, connection limits ----------------------------------------------------


def test_idle_client_is_disconnected(start_server: Callable[..., ServerThread]) -> None:
    """A client that sends nothing is disconnected after the idle timeout."""
    server = start_server(idle_timeout_s=0.2)
    conn = RawConnection(server.path)
    try:
        assert conn.read_line() is None
    finally:
        conn.close()
    wait_until(lambda: server.connection_count() == 0, "the idle connection to be dropped")


def test_client_dripping_a_line_is_disconnected_as_idle(start_server: Callable[..., ServerThread]) -> None:
    """A partial line never completed counts as idle: the connection is closed."""
    server = start_server(idle_timeout_s=0.2)
    conn = RawConnection(server.path)
    try:
        conn.send(b'{"jsonrpc":"2.0",')
        assert conn.read_line() is None
    finally:
        conn.close()


def test_request_in_flight_is_not_cut_by_idle_timeout(start_server: Callable[..., ServerThread]) -> None:
    """A client waiting on a slow reply is not idle: the reply arrives, later than the idle timeout."""
    server = start_server(idle_timeout_s=0.1)
    conn = RawConnection(server.path)
    try:
        reply = conn.request("sleepy", {"seconds": 0.4}, request_id=1)
        assert reply["result"] == {"slept": 0.4}
    finally:
        conn.close()


def test_client_that_stops_reading_is_dropped_without_blocking_others(
        start_server: Callable[..., ServerThread]) -> None:
    """A peer that never reads its replies is dropped after the write timeout; others are served meanwhile."""
    server = start_server(write_timeout_s=0.3)
    stuck = RawConnection(server.path)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        with capture_logs() as logs:
            request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "big", "params": {"size": 4_000_000}})
            stuck.send(request.encode() + b"\n")
            assert_healthy(server.path)
            wait_until(lambda: any(e["event"] == "control.slow_client_dropped" for e in logs),
                       "the slow client to be dropped")
        wait_until(lambda: server.connection_count() == 0, "the slow connection to close")
    finally:
        stuck.close()


def test_connections_beyond_the_limit_get_server_busy(start_server: Callable[..., ServerThread]) -> None:
    """Past max_connections a new peer gets one -32012 reply and is closed; open ones keep working."""
    server = start_server(max_connections=2)
    first, second = RawConnection(server.path), RawConnection(server.path)
    third = RawConnection(server.path)
    try:
        assert_healthy("", first)
        assert_healthy("", second)
        error = assert_error(third.read_line(), ErrorCode.SERVER_BUSY)
        assert error["data"]["code"] == "server_busy"
        assert third.read_line() is None
        assert_healthy("", first)
    finally:
        for conn in (first, second, third):
            conn.close()


# --- streams ----------------------------------------------------------------------------------


def test_stream_sends_notifications_then_its_result(raw: Raw) -> None:
    """A stream method sends runs.event notifications on the connection, then its reply."""
    conn = raw()
    conn.send(b'{"jsonrpc":"2.0","id":1,"method":"ticks","params":{"count":3}}\n')
    messages = [conn.read_line() for _ in range(4)]
    assert messages[:3] == [{"jsonrpc": "2.0", "method": "runs.event", "params": {"n": n}} for n in range(3)]
    assert messages[3] == {"jsonrpc": "2.0", "id": 1, "result": {"count": 3}}
    assert_healthy("", conn)


def test_stream_failing_midway_sends_its_error_after_the_notifications(raw: Raw) -> None:
    """A stream that raises after some events ends with the mapped error reply."""
    conn = raw()
    conn.send(b'{"jsonrpc":"2.0","id":2,"method":"ticks_then_fail","params":{"count":2}}\n')
    assert conn.read_line()["method"] == "runs.event"
    assert conn.read_line()["method"] == "runs.event"
    error = assert_error(conn.read_line(), ErrorCode.INVALID_STATE, 2)
    assert error["data"]["context"] == {"run_id": "r-1", "status": "succeeded"}
    assert_healthy("", conn)


def test_stream_is_closed_when_the_client_hangs_up(start_server: Callable[..., ServerThread]) -> None:
    """A follower that disconnects ends its stream: the generator is closed, not left waiting."""
    state = State()
    server = start_server(state)
    conn = RawConnection(server.path)
    conn.send(b'{"jsonrpc":"2.0","id":1,"method":"hold"}\n')
    assert conn.read_line() == {"jsonrpc": "2.0", "method": "runs.event", "params": {"held": True}}
    assert state.hold_started.wait(10)
    conn.close()
    assert state.hold_closed.wait(10)
    wait_until(lambda: server.connection_count() == 0, "the stream's connection to close")


def test_stream_survives_a_half_close(start_server: Callable[..., ServerThread]) -> None:
    """A client that shuts down writing but keeps reading still receives the whole stream."""
    server = start_server()
    conn = RawConnection(server.path)
    try:
        conn.send(b'{"jsonrpc":"2.0","id":1,"method":"ticks","params":{"count":2,"delay_s":0.1}}\n')
        conn.sock.shutdown(socket.SHUT_WR)
        assert [conn.read_line()["params"] for _ in range(2)] == [{"n": 0}, {"n": 1}]
        assert conn.read_line()["result"] == {"count": 2}
        assert conn.read_line() is None
    finally:
        conn.close()


def test_server_close_ends_open_connections(start_server: Callable[..., ServerThread]) -> None:
    """close() ends connections in the middle of a stream, and the stream's generator is closed."""
    state = State()
    server = start_server(state)
    conn = RawConnection(server.path)
    try:
        conn.send(b'{"jsonrpc":"2.0","id":1,"method":"hold"}\n')
        assert conn.read_line()["params"] == {"held": True}
        assert state.hold_started.wait(10)
        server.stop()
        assert state.hold_closed.is_set()
        assert conn.read_line() is None
    finally:
        conn.close()


# --- dispatcher and credentials ------------------------------------------------------------------


def test_dispatcher_refuses_protocol_method_with_wrong_access_level() -> None:
    """Registering runs.start as a read method is refused: it would open a mutating call to every peer."""
    async def handler(params: RunStartParams, peer: object) -> dict:
        return {}

    with pytest.raises(ConfigurationError, match="access level"):
        Dispatcher().register("runs.start", handler, RunStartParams, mutating=False)


def test_dispatcher_refuses_a_second_registration() -> None:
    """A method name can be registered once."""
    dispatcher = make_dispatcher(State())
    with pytest.raises(ConfigurationError, match="twice"):
        dispatcher.register("echo", dispatcher.get("echo").handler, mutating=False)


def test_control_server_needs_exactly_one_socket_source(socket_dir: Path) -> None:
    """A server is given a path or an activated socket, not both and not neither."""
    with pytest.raises(ConfigurationError):
        ControlServer(Dispatcher())


def test_peer_credentials_name_the_connected_process() -> None:
    """SO_PEERCRED on a connected Unix socket reports the peer's pid, uid and gid."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        peer = peer_credentials(left)
        assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())
    finally:
        left.close()
        right.close()
