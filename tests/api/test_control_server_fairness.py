"""Control-server fairness on a real socket: unfinished lines time out, per-uid limits, reserved slots.

The tests with another uid run as root in tests/hostile/test_socket_fairness.py; the per-uid and
reserved-slot rules are checked here when the suite runs as a plain user (root is exempt from them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from api_support import RawConnection, ServerThread, assert_error, assert_healthy
from flowmason_client.protocol import ErrorCode

not_root = pytest.mark.skipif(os.geteuid() == 0, reason="root is exempt from per-uid limits and always privileged")


def test_a_line_that_never_completes_is_cut_after_line_timeout(start_server: Callable[..., ServerThread]) -> None:
    """Half a request and then silence: one -32600 naming line_timeout_s, then the connection closes."""
    server = start_server(line_timeout_s=0.4)
    conn = RawConnection(server.path or "")
    try:
        started = time.monotonic()
        conn.send(b'{"jsonrpc": "2.0", "id": 1, "meth')
        error = assert_error(conn.read_line(), ErrorCode.INVALID_REQUEST)
        assert error["data"] == {"line_timeout_s": 0.4}
        assert 0.4 <= time.monotonic() - started < 5.0
        assert conn.read_line() is None
        assert_healthy(server.path or "")
    finally:
        conn.close()


def test_an_idle_connection_is_not_cut_by_the_line_timeout(start_server: Callable[..., ServerThread]) -> None:
    """A connection that sent nothing for longer than line_timeout_s is still served (idleness has its own limit)."""
    server = start_server(line_timeout_s=0.2)
    conn = RawConnection(server.path or "")
    try:
        time.sleep(0.6)  # the behaviour under test is "three line timeouts of silence are fine"
        assert_healthy("", conn)
    finally:
        conn.close()


def test_a_line_sent_in_pieces_within_the_timeout_is_answered(start_server: Callable[..., ServerThread]) -> None:
    """A request split across writes that completes in time gets its normal reply."""
    server = start_server(line_timeout_s=2.0)
    conn = RawConnection(server.path or "")
    try:
        conn.send(b'{"jsonrpc": "2.0", "id": 1, ')
        time.sleep(0.1)
        conn.send(b'"method": "health"}\n')
        assert conn.read_line() == {"jsonrpc": "2.0", "id": 1, "result": {"status": "ok"}}
    finally:
        conn.close()


@not_root
def test_a_uid_past_its_connection_limit_gets_server_busy(start_server: Callable[..., ServerThread]) -> None:
    """With max_connections_per_uid = 2, a third connection of the same (unexempt) uid is refused."""
    server = start_server(max_connections_per_uid=2, daemon_uid=os.geteuid() + 1)
    conns = [RawConnection(server.path or "") for _ in range(3)]
    try:
        assert_healthy("", conns[0])
        assert_healthy("", conns[1])
        error = assert_error(conns[2].read_line(), ErrorCode.SERVER_BUSY)
        assert error["data"]["context"] == {"max_connections_per_uid": 2, "uid": os.geteuid()}
    finally:
        for conn in conns:
            conn.close()


@not_root
def test_reserved_slots_are_not_given_to_unprivileged_peers(start_server: Callable[..., ServerThread]) -> None:
    """With 3 slots and 1 reserved, an unprivileged peer gets 2 and is refused the third."""
    server = start_server(max_connections=3, reserved_privileged=1, daemon_uid=os.geteuid() + 1)
    conns = [RawConnection(server.path or "") for _ in range(3)]
    try:
        assert_healthy("", conns[0])
        assert_healthy("", conns[1])
        error = assert_error(conns[2].read_line(), ErrorCode.SERVER_BUSY)
        assert error["data"]["context"]["reserved_privileged"] == 1
    finally:
        for conn in conns:
            conn.close()
