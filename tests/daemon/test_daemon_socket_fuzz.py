"""Fuzzing the real daemon's socket: every hostile line gets one well-formed JSON-RPC error or a close.

One daemon serves the whole module; each example opens its own connection, sends one line, half-closes
and reads until the daemon closes. After every example the daemon process must still be alive, and at
the end it must still answer `health` and run a pipeline.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon_acceptance_support import exchange
from daemon_support import DaemonProcess

LIMIT = 4096  # the daemon's max_request_bytes for this module (the smallest it accepts is 1024)
FUZZ = settings(max_examples=60, deadline=None, database=None)
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602
HELLO = {"id": "hello", "stages": [{"id": "say", "component_type": "logger", "config": {"message": "hi"}}]}


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """One daemon for every example, with a small request-size cap so oversized lines are cheap."""
    return module_daemon_factory(config={"max_request_bytes": LIMIT}, pipelines=[HELLO])


def one_error(daemon: DaemonProcess, payload: bytes, *, codes: set[int] | None = None,
              request_id: Any = None, may_close_silently: bool = False) -> dict[str, Any] | None:
    """Send ``payload``; expect exactly one JSON-RPC error line (or, if allowed, none) and a close."""
    lines, closed = exchange(daemon.socket, payload)
    assert closed
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()[-3000:]
    if not lines and may_close_silently:
        return None
    assert len(lines) == 1, lines
    reply = json.loads(lines[0])
    assert set(reply) == {"jsonrpc", "id", "error"}, reply
    assert reply["jsonrpc"] == "2.0"
    error = reply["error"]
    assert isinstance(error["code"], int) and not isinstance(error["code"], bool)
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "data"}
    if codes is not None:
        assert error["code"] in codes, reply
    if request_id is not None:
        assert reply["id"] == request_id
    return reply


def request(method: str, params: Any, request_id: int = 7) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode() + b"\n"


@FUZZ
@given(data=st.binary(max_size=LIMIT + 512).map(lambda b: b.replace(b"\n", b"")), terminated=st.booleans())
def test_random_bytes_get_one_error_or_a_close(daemon: DaemonProcess, data: bytes, terminated: bool) -> None:
    """Random bytes (terminated or not) get at most one well-formed error reply, then the connection closes."""
    one_error(daemon, data + (b"\n" if terminated else b""), may_close_silently=True)


@FUZZ
@given(size=st.integers(LIMIT + 1, 16 * LIMIT), as_json=st.booleans())
def test_oversized_lines_get_invalid_request(daemon: DaemonProcess, size: int, as_json: bool) -> None:
    """A line longer than max_request_bytes gets one -32600 error, then the daemon closes the connection."""
    line = request("health", {"pad": "x" * size}) if as_json else b"y" * size + b"\n"
    one_error(daemon, line, codes={INVALID_REQUEST})


INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xed\xa0\x80",
                b"\xf0\x28\x8c\xbc", b"\xf8\xa1\xa1\xa1\xa1", b"\xc0\xaf", b"\x80"]


@FUZZ
@given(bad=st.sampled_from(INVALID_UTF8), where=st.sampled_from(["method", "key", "value", "outside"]),
       text=st.text(alphabet="abc.", max_size=20))
def test_invalid_utf8_gets_parse_error(daemon: DaemonProcess, bad: bytes, where: str, text: str) -> None:
    """A line that is not valid UTF-8, wherever the bad bytes sit, gets one -32700 parse error."""
    raw = text.encode()
    if where == "method":
        line = b'{"jsonrpc":"2.0","id":3,"method":"runs.' + raw + bad + b'"}'
    elif where == "key":
        line = b'{"jsonrpc":"2.0","id":3,"method":"runs.list","params":{"' + bad + raw + b'":1}}'
    elif where == "value":
        line = b'{"jsonrpc":"2.0","id":3,"method":"runs.start","params":{"pipeline_id":"' + raw + bad + b'"}}'
    else:
        line = bad + b'{"jsonrpc":"2.0","id":3,"method":"health"}'
    one_error(daemon, line + b"\n", codes={PARSE_ERROR})


@FUZZ
@given(depth=st.integers(1, 1500), kind=st.sampled_from(["list", "object", "mixed"]),
       method=st.sampled_from(["health", "runs.start", "runs.list", "pipelines.validate"]))
def test_deep_nesting_gets_an_error(daemon: DaemonProcess, depth: int, kind: str, method: str) -> None:
    """Params nested to any depth get one error: too deep (-32600), or unfit params (-32602)."""
    if kind == "list":
        nested = "[" * depth + "]" * depth
    elif kind == "object":
        nested = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = '[{"a":' * depth + "1" + "}]" * depth
    # The nested value sits where no method accepts it; `inputs` of runs.start needs a real pipeline.
    line = f'{{"jsonrpc":"2.0","id":5,"method":"{method}","params":{{"bogus":{nested}}}}}\n'.encode()
    codes = {INVALID_REQUEST} if len(line) > LIMIT else {INVALID_REQUEST, INVALID_PARAMS}
    reply = one_error(daemon, line, codes=codes)
    # JSON too deep for the parser itself never yields an id to echo: JSON-RPC says null then.
    assert reply is not None and reply["id"] in (5, None)


def _not(*excluded: type) -> st.SearchStrategy[Any]:
    """JSON values of every type except ``excluded`` (bool counts apart from int, as in strict JSON-RPC)."""
    values = {str: st.text(max_size=10), int: st.integers(), float: st.floats(allow_nan=False, allow_infinity=False),
              bool: st.booleans(), type(None): st.none(), list: st.lists(st.integers(), max_size=3),
              dict: st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)}
    return st.one_of(*(strategy for kind, strategy in values.items() if kind not in excluded))


# For each real method, params with at least one field of the wrong type (and nothing else wrong).
WRONG_PARAMS = st.one_of(
    st.tuples(st.just("runs.start"), st.fixed_dictionaries({"pipeline_id": _not(str)})),
    st.tuples(st.just("runs.start"), st.fixed_dictionaries({"pipeline_id": st.just("hello"), "inputs": _not(dict)})),
    st.tuples(st.sampled_from(["runs.show", "runs.cancel", "runs.resume", "runs.events"]),
              st.fixed_dictionaries({"run_id": _not(str)})),
    st.tuples(st.just("runs.events"), st.fixed_dictionaries({"run_id": st.just("r-x"), "follow": _not(bool)})),
    st.tuples(st.just("runs.events"), st.fixed_dictionaries({"run_id": st.just("r-x"), "after_id": _not(int, type(None))})),
    st.tuples(st.just("runs.resume"), st.fixed_dictionaries({"run_id": st.just("r-x"), "force": _not(bool)})),
    st.tuples(st.just("runs.list"), st.fixed_dictionaries({"limit": _not(int)})),
    st.tuples(st.just("runs.list"), st.fixed_dictionaries({"status": _not(str, type(None))})),
    st.tuples(st.just("pipelines.show"), st.fixed_dictionaries({"pipeline_id": _not(str)})),
    st.tuples(st.just("pipelines.validate"), st.fixed_dictionaries({"definition": _not(dict, type(None))})),
    st.tuples(st.sampled_from(["runs.start", "runs.show", "health", "status"]),
              st.lists(st.integers(), min_size=1, max_size=3)),  # positional params: we take named ones
)


@FUZZ
@given(call=WRONG_PARAMS, request_id=st.integers(-(2**31), 2**31))
def test_wrong_param_types_get_invalid_params(daemon: DaemonProcess, call: tuple[str, Any], request_id: int) -> None:
    """Real methods called with wrongly typed params get one -32602 reply echoing the request id."""
    method, params = call
    one_error(daemon, request(method, params, request_id), codes={INVALID_PARAMS}, request_id=request_id)


def test_daemon_still_serves_after_the_fuzzing(daemon: DaemonProcess) -> None:
    """After every fuzz example above, the same daemon process answers `health` and runs a pipeline."""
    assert daemon.proc is not None and daemon.proc.poll() is None
    with daemon.client() as client:
        assert client.health().status == "ok"
        run_id = client.runs_start("hello").run_id
    assert daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"
    assert not [e for e in daemon.log_events() if e.get("event") == "control.internal_error"]
