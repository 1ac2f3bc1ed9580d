"""Fuzzed socket input: random bytes, JSON values, wrong-typed envelopes, invalid UTF-8, deep nesting
and oversized lines. Each line gets exactly one well-formed JSON-RPC reply (none for a valid
notification) or, for an oversized line, one error and a close; the server always stays up.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import Field

from api_support import EchoParams, RawConnection, ServerThread, State, assert_healthy
from flowmason_client.protocol import (
    MAX_JSON_DEPTH, EmptyParams, ErrorCode, ErrorResponse, Params, Response, RunRefParams,
)
from flowmasond.api.dispatch import Dispatcher, StreamResult
from flowmasond.api.peercred import PeerInfo
from flowmasond.errors import RunNotFoundError

LIMIT = 4096
METHODS = ["health", "echo", "fail_app", "crash", "bump", "ticks", "nope", ""]
PARAM_KEYS = ["value", "run_id", "count"]


class SmallCountParams(Params):
    count: int = Field(default=1, ge=0, le=3)


def fuzz_dispatcher(state: State) -> Dispatcher:
    """Only methods that finish at once, whatever the params: the fuzzer must not hang the server."""
    d = Dispatcher()

    async def health(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        return {"status": "ok"}

    async def echo(params: EchoParams, peer: PeerInfo) -> dict[str, Any]:
        return {"value": params.value}

    async def fail_app(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        raise RunNotFoundError(run_id=params.run_id)

    async def crash(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        raise RuntimeError("kaboom")

    async def bump(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        state.bumps += 1
        return {"count": state.bumps}

    async def ticks(params: SmallCountParams, peer: PeerInfo) -> AsyncIterator[Any]:
        for n in range(params.count):
            yield {"n": n}
        yield StreamResult({"count": params.count})

    d.register("health", health, mutating=False)
    d.register("echo", echo, EchoParams, mutating=False)
    d.register("fail_app", fail_app, RunRefParams, mutating=False)
    d.register("crash", crash, mutating=False)
    d.register("bump", bump, mutating=True)
    d.register("ticks", ticks, SmallCountParams, mutating=False, stream=True)
    return d


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerThread]:
    """One server for every example (hypothesis reuses it on purpose: it must survive them all)."""
    directory = Path(tempfile.mkdtemp(prefix="fm-fuzz-", dir="/tmp"))
    server = ServerThread(directory / "s.sock", State(), dispatcher_factory=fuzz_dispatcher,
                          max_line_bytes=LIMIT, idle_timeout_s=30.0).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
ids = st.none() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False) | st.booleans() \
    | st.lists(st.integers(), max_size=2)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2, None]),
        "id": ids,
        "method": st.sampled_from(METHODS) | st.text(max_size=10) | st.integers() | st.none(),
        "params": json_values | st.dictionaries(st.sampled_from(PARAM_KEYS), json_values, max_size=3),
        "extra": json_values,
    },
)

# Near-valid requests: right envelope, wrong or random params, so that the method-level paths
# (-32601, -32602, application errors, -32603, results, notifications) are explored as well.
near_requests = st.builds(
    lambda method, request_id, params: {"jsonrpc": "2.0", "method": method, **request_id, **params},
    st.sampled_from(METHODS),
    st.sampled_from([{}]) | st.builds(lambda v: {"id": v}, st.integers() | st.text(max_size=8) | st.none()),
    st.builds(lambda p: {"params": p}, st.dictionaries(st.sampled_from(PARAM_KEYS), json_values, max_size=3))
    | st.builds(lambda p: {"params": p}, json_values) | st.just({}),
)


def _nested(depth: int, inner: Any) -> dict[str, Any]:
    value = inner
    for _ in range(depth):
        value = [value]
    return {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": {"value": value}}


def _splice(data: bytes, junk: bytes, at: int) -> bytes:
    at = at % (len(data) + 1)
    return data[:at] + junk + data[at:]


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    envelopes.map(lambda v: json.dumps(v).encode()),
    near_requests.map(lambda v: json.dumps(v).encode()),
    near_requests.map(lambda v: json.dumps(v).encode()),
    near_requests.map(lambda v: json.dumps(v).encode()),
    st.builds(_splice, envelopes.map(lambda v: json.dumps(v).encode()),
              st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80\x80\x80"]),
              st.integers(0, 400)),
    st.builds(lambda depth, v: json.dumps(_nested(depth, v)).encode(),
              st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 200), json_values),
    st.integers(1, 20_000).map(lambda n: b"[" * n),
    st.builds(lambda n, fill: fill * n, st.integers(LIMIT + 1, 3 * LIMIT), st.sampled_from([b"x", b"[", b"\xff"])),
).map(lambda data: data.replace(b"\n", b" "))


def _is_valid_notification(payload: bytes) -> bool:
    """The test's own oracle: a well-formed JSON-RPC 2.0 notification, which gets no reply."""
    try:
        message = json.loads(payload.decode("utf-8"), parse_constant=lambda c: 1 / 0)
    except (ValueError, RecursionError, ZeroDivisionError):
        return False
    if not isinstance(message, dict) or "id" in message or set(message) - {"jsonrpc", "method", "params"}:
        return False
    params = message.get("params")
    return (message.get("jsonrpc") == "2.0" and isinstance(message.get("method"), str)
            and 0 < len(message["method"]) <= 256 and (params is None or isinstance(params, (dict, list)))
            and len(payload) <= LIMIT and _depth(message) <= MAX_JSON_DEPTH)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(payload=payloads)
def test_any_line_gets_exactly_one_wellformed_reply_or_a_close(fuzz_server: ServerThread, payload: bytes) -> None:
    """Whatever one line holds, the reply is one well-formed JSON-RPC message (or a close), and the server lives on."""
    conn = RawConnection(fuzz_server.path)
    try:
        conn.send(payload + b"\n")
        conn.send(b'{"jsonrpc":"2.0","id":"probe","method":"health"}\n')
        replies: list[dict[str, Any]] = []
        closed = False
        while True:
            message = conn.read_line()
            if message is None:
                closed = True
                break
            if message.get("id") == "probe" and "result" in message:
                assert message["result"] == {"status": "ok"}
                break
            if message.get("method") == "runs.event":
                continue  # a valid ticks call streams events before its reply
            replies.append(message)
    finally:
        conn.close()

    if closed:
        # Only an oversized line closes the connection, after exactly one -32600.
        assert len(payload) > LIMIT, (payload[:200], replies)
        [reply] = replies
        event("closed after -32600")
        assert ErrorResponse.model_validate(reply).error.code == ErrorCode.INVALID_REQUEST
    else:
        assert len(replies) == (0 if _is_valid_notification(payload) else 1), (payload[:200], replies)
        if not replies:
            event("notification: no reply")
        for reply in replies:
            event(f"reply {reply['error']['code'] if 'error' in reply else 'result'}")
            parsed = ErrorResponse.model_validate(reply) if "error" in reply else Response.model_validate(reply)
            if isinstance(parsed, ErrorResponse):
                code = parsed.error.code
                assert code in {c.value for c in ErrorCode}, reply
                if code == ErrorCode.PARSE_ERROR:
                    assert parsed.id is None
    assert_healthy(fuzz_server.path)
