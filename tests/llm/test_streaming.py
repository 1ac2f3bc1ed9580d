"""Streamed answers ("stream": true): the provider against the local fake, and tokens reaching followers.

The fake sends real server-sent events over a real socket and can hold the stream at a gate, so a
test sees the first pieces arrive while the answer is still incomplete.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from typing import Any
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon_support import DaemonProcess
from flowmason_client.protocol import RunEvent
from flowmasond.components.llm.providers import LLMProvider, LLMRequest, ProviderConfig, build_providers
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError
from flowmasond.streaming import TokenBroker, with_tokens

from .fake_chat import FakeChatServer, Reply

PIECES = ["Rain ", "drums ", "on ", "tin, ", "then ", "stops."]


@pytest.fixture
async def streaming(local_config: Callable[..., ProviderConfig]) -> AsyncIterator[LLMProvider]:
    """The 'local' provider with ``stream = true``."""
    registry = build_providers({"local": local_config(stream=True)}, environ={})
    yield registry.get("local")
    await registry.aclose()


async def test_a_streamed_answer_is_whole_and_its_pieces_arrive_in_order(
        fake_llm: FakeChatServer, streaming: LLMProvider) -> None:
    """Each delta goes to on_token in order; the response is their concatenation with the final usage."""
    fake_llm.enqueue(Reply.streamed(PIECES, prompt_tokens=12, completion_tokens=6))
    seen: list[str] = []
    response = await streaming.complete(LLMRequest(prompt="rain"), on_token=seen.append)
    assert seen == PIECES
    assert response.text == "".join(PIECES)
    assert (response.input_tokens, response.output_tokens, response.finish_reason) == (12, 6, "stop")
    assert response.cost_usd == pytest.approx((12 * 2.0 + 6 * 8.0) / 1e6)
    body = fake_llm.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_pieces_arrive_before_the_answer_is_complete(fake_llm: FakeChatServer, streaming: LLMProvider) -> None:
    """With the stream held after two pieces, on_token has both while complete() is still waiting."""
    gate = threading.Event()
    fake_llm.enqueue(Reply.streamed(PIECES, gate=gate, gate_after=2))
    seen: list[str] = []
    two = asyncio.Event()

    def on_token(text: str) -> None:
        seen.append(text)
        if len(seen) == 2:
            two.set()

    call = asyncio.create_task(streaming.complete(LLMRequest(prompt="rain"), on_token=on_token))
    try:
        await asyncio.wait_for(two.wait(), 10)
        assert seen == PIECES[:2] and not call.done()
    finally:
        gate.set()
    assert (await call).text == "".join(PIECES)


async def test_a_stream_cut_short_is_a_retryable_connectivity_error(
        fake_llm: FakeChatServer, streaming: LLMProvider) -> None:
    """A stream that ends with neither a finish reason nor [DONE] fails the attempt as CONNECTIVITY."""
    fake_llm.enqueue(Reply.streamed(PIECES[:3], done=False))
    with pytest.raises(ComponentError) as info:
        await streaming.complete(LLMRequest(prompt="rain"))
    assert info.value.error_type is ErrorType.CONNECTIVITY and info.value.error_type.retryable


async def test_a_server_that_ignores_stream_is_read_as_one_answer(
        fake_llm: FakeChatServer, streaming: LLMProvider) -> None:
    """A plain JSON reply to a streamed request is parsed as a normal completion."""
    fake_llm.enqueue(Reply.completion("whole", prompt_tokens=3, completion_tokens=1))
    response = await streaming.complete(LLMRequest(prompt="rain"), on_token=lambda text: None)
    assert (response.text, response.input_tokens, response.output_tokens) == ("whole", 3, 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=12))
async def test_any_pieces_join_to_the_committed_answer(
        fake_llm: FakeChatServer, local_config: Callable[..., ProviderConfig], pieces: list[str]) -> None:
    """Whatever the pieces (newlines, quotes, any Unicode), tokens equal them and the text is their join."""
    registry = build_providers({"local": local_config(stream=True)}, environ={})
    try:
        fake_llm.enqueue(Reply.streamed(pieces))
        seen: list[str] = []
        response = await registry.get("local").complete(LLMRequest(prompt="x"), on_token=seen.append)
    finally:
        await registry.aclose()
    assert seen == pieces
    assert response.text == "".join(pieces)


async def test_a_late_follower_gets_the_pieces_after_the_stage_start_event_in_order() -> None:
    """Pieces said before subscribing, and live ones racing the journal backlog, follow the attempt's start event."""
    broker = TokenBroker()
    broker.publish("r1", "write", 1, "said ")  # before anyone follows: kept for late followers
    backlog_gate = asyncio.Event()

    async def journal() -> AsyncIterator[dict[str, Any]]:
        await backlog_gate.wait()  # the backlog is read only after a live piece arrived
        for i, (kind, path, attempt) in enumerate([("run.status", None, None), ("stage.started", "write", 1),
                                                   ("stage.completed", "write", None)], start=1):
            yield {"id": i, "kind": kind, "path": path, "stage_id": path,
                   "data": {"attempt": attempt} if attempt else {}}

    out: list[tuple[str, str | None]] = []
    stream = with_tokens(journal(), broker, "r1")
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # let with_tokens subscribe
    broker.publish("r1", "write", 1, "live")
    backlog_gate.set()
    item = await first
    out.append((item["kind"], (item.get("data") or {}).get("text")))
    async for item in stream:
        out.append((item["kind"], (item.get("data") or {}).get("text")))
    assert out == [("run.status", None), ("stage.started", None), ("llm.token", "said "), ("llm.token", "live"),
                   ("stage.completed", None)]


def _ask(stage_id: str = "write") -> dict[str, Any]:
    return {"id": "ask", "stages": [{"id": stage_id, "component_type": "generator", "config": {"prompt": "rain"}}],
            "output_stage_id": stage_id}


@pytest.fixture
def streaming_daemon(fake_llm: FakeChatServer, daemon_factory: Callable[..., DaemonProcess],
                     write_pipeline: Callable[[dict[str, Any]], Any]) -> DaemonProcess:
    """A daemon whose only provider streams from the fake."""
    write_pipeline(_ask())
    config = {"providers": {"local": {"base_url": fake_llm.base_url, "default_model": "test-model",
                                      "timeout_s": 10.0, "stream": True}}}
    return daemon_factory(config=config).start()


def test_followers_get_tokens_as_they_stream_and_the_journal_keeps_the_whole_answer(
        fake_llm: FakeChatServer, streaming_daemon: DaemonProcess) -> None:
    """`runs.events --follow` carries llm.token events before the stage completes; nothing of them is journaled."""
    gate = threading.Event()
    fake_llm.enqueue(Reply.streamed(PIECES, gate=gate, gate_after=2))
    tokens: list[str] = []
    kinds_before_gate: list[str] = []
    with streaming_daemon.client() as client:
        run_id = client.runs_start("ask").run_id
        try:
            for item in client.runs_follow(run_id):
                if not isinstance(item, RunEvent):
                    break
                if item.kind == "llm.token":
                    assert item.data["durable"] is False and item.stage_id == "write"
                    tokens.append(item.data["text"])
                    if len(tokens) == 2:
                        gate.set()  # release the rest only once two pieces were seen mid-stream
                elif not gate.is_set():
                    kinds_before_gate.append(item.kind)
        finally:
            gate.set()
        journal = client.runs_events(run_id).events
        info = client.runs_show(run_id)
    assert tokens == PIECES
    assert "stage.completed" not in kinds_before_gate
    assert info.status == "succeeded" and info.output["content"] == "".join(PIECES)
    assert all(e.kind != "llm.token" for e in journal)


def test_run_follow_prints_the_answer_from_its_start_on_one_line(
        fake_llm: FakeChatServer, streaming_daemon: DaemonProcess) -> None:
    """`flowmason run --follow` shows the pieces said before it subscribed, then the rest, as one `llm` line."""
    gate = threading.Event()
    fake_llm.enqueue(Reply.streamed(PIECES, gate=gate, gate_after=2))
    proc = subprocess.Popen([sys.executable, "-m", "flowmason_client.cli", "--socket", str(streaming_daemon.socket),
                             "run", "ask", "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=streaming_daemon.env)
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 20
        # The two pieces sent before the gate reach the command whenever it subscribed.
        while b"write: " + "".join(PIECES[:2]).encode() not in seen and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
        assert b"write: " + "".join(PIECES[:2]).encode() in seen, seen
        gate.set()
        out, err = proc.communicate(timeout=30)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = (seen + out).decode().splitlines()
    llm = [i for i, line in enumerate(lines) if line.strip().startswith("llm")]
    ok = [i for i, line in enumerate(lines) if " ok " in line and "write" in line]
    assert len(llm) == 1 and lines[llm[0]].strip() == "llm     write: " + "".join(PIECES)
    assert ok and llm[0] < ok[0]
