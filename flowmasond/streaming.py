"""LLM tokens as they stream: a non-durable feed from the nodes to `runs.events --follow`.

Tokens are never journaled: the committed stage result holds the whole answer, and a crash
mid-stream re-runs the stage as any other in-flight stage. A follower's queue is bounded; when a
follower reads too slowly the newest pieces are dropped for it, never slowing the stage down.

What a stage in flight has said so far is kept (bounded) until the stage ends, so that a follower
who arrives mid-answer — `run --follow` right after `runs.start`, a web page opened late — sees
the answer from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any
from collections.abc import AsyncIterator, Iterator

from flowmasond.engine.interfaces import ExecutionHooks

if TYPE_CHECKING:
    from flowmasond.engine.models import StageConfig

# Pieces kept for one follower that has not read them yet; a token is a few bytes.
FOLLOWER_QUEUE = 2048
# Characters of in-flight answers kept per run for late followers (beyond it, only live pieces).
REPLAY_CHARS = 256 * 1024
TOKEN_KIND = "llm.token"  # noqa: S105 - an event kind, not a secret


class TokenBroker(ExecutionHooks):
    """Fans each run's streamed tokens out to that run's followers; forgets a stage's when it ends.

    It is an execution hook so that it learns when a stage or run ends without the engine knowing it.
    """

    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._inflight: dict[str, dict[str, list[dict[str, Any]]]] = {}  # run -> path -> pieces
        self._kept: dict[str, int] = {}  # run -> characters kept in _inflight

    def publish(self, run_id: str, path: str, attempt: int, text: str) -> None:
        """Called by an LLM node for each piece of an answer (on the loop; never blocks)."""
        item = {"path": path, "attempt": attempt, "text": text, "at": time.time()}
        stages = self._inflight.setdefault(run_id, {})
        pieces = stages.get(path)
        if pieces and pieces[-1]["attempt"] != attempt:
            self._forget(run_id, path)  # a new attempt starts its answer over
            stages = self._inflight.setdefault(run_id, {})
            pieces = None
        if self._kept.get(run_id, 0) + len(text) <= REPLAY_CHARS:
            stages.setdefault(path, []).append(item)
            self._kept[run_id] = self._kept.get(run_id, 0) + len(text)
        for queue in self._followers.get(run_id, ()):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                pass  # a slow follower loses pieces; the committed result has the whole answer

    @contextlib.contextmanager
    def follow(self, run_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving what the run's stages in flight said so far, then new tokens, while the block lasts."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FOLLOWER_QUEUE)
        for pieces in self._inflight.get(run_id, {}).values():
            for item in pieces[:FOLLOWER_QUEUE // 2]:
                queue.put_nowait(item)
        self._followers.setdefault(run_id, set()).add(queue)
        try:
            yield queue
        finally:
            followers = self._followers.get(run_id)
            if followers is not None:
                followers.discard(queue)
                if not followers:
                    del self._followers[run_id]

    def _forget(self, run_id: str, path: str) -> None:
        stages = self._inflight.get(run_id)
        if stages is None:
            return
        pieces = stages.pop(path, [])
        self._kept[run_id] = self._kept.get(run_id, 0) - sum(len(p["text"]) for p in pieces)
        if not stages:
            self._inflight.pop(run_id, None)
            self._kept.pop(run_id, None)

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None:
        self._forget(run_id, path)

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig, result: Any) -> None:
        self._forget(run_id, path)

    async def on_run_complete(self, run_id: str, outcome: Any) -> None:
        self._inflight.pop(run_id, None)
        self._kept.pop(run_id, None)


def token_event(run_id: str, last_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """A token as a `runs.event` notification.

    ``id`` repeats the last durable event's id, so that a client resuming with ``after_id`` misses
    nothing durable; ``data.durable`` is false so that clients can tell tokens from journal events.
    """
    return {"id": last_id, "run_id": run_id, "kind": TOKEN_KIND, "stage_id": item["path"], "path": item["path"],
            "at": item["at"], "data": {"text": item["text"], "attempt": item["attempt"], "durable": False}}


async def with_tokens(events: AsyncIterator[dict[str, Any]], broker: TokenBroker, run_id: str,
                      after_id: int = 0) -> AsyncIterator[dict[str, Any]]:
    """The journal events of ``events`` with the run's streamed tokens interleaved as they arrive.

    A follower reading from the start gets an attempt's pieces only after that attempt's
    ``stage.started`` / ``stage.retry`` event (or, at the latest, just before the stage's end), so
    that pieces said before it arrived, and pieces racing the journal backlog, appear where they
    belong. A follower resuming after some event gets them at once.
    """
    last_id = after_id
    started: dict[str, int] = {}  # path -> the latest attempt whose start event this follower was sent
    held: dict[str, list[dict[str, Any]]] = {}  # path -> pieces waiting for that event
    with broker.follow(run_id) as tokens:
        iterator = events.__aiter__()
        next_event: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(iterator.__anext__())
        next_token: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(tokens.get())
        try:
            while True:
                done, _ = await asyncio.wait({next_event, next_token}, return_when=asyncio.FIRST_COMPLETED)
                if next_token in done:
                    item = next_token.result()
                    next_token = asyncio.ensure_future(tokens.get())
                    path = item["path"]
                    if not after_id and started.get(path, 0) < item["attempt"]:
                        held.setdefault(path, []).append(item)
                    else:
                        yield token_event(run_id, last_id, item)
                if next_event in done:
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        break
                    next_event = asyncio.ensure_future(iterator.__anext__())
                    last_id = int(event["id"])  # the last durable one sent (ids need not increase)
                    path = event.get("path") or event.get("stage_id")
                    kind = event["kind"]
                    if kind in ("stage.started", "stage.retry") and path is not None:
                        attempt = int((event.get("data") or {}).get("attempt") or 0)
                        started[path] = max(started.get(path, 0), attempt)
                        yield event
                        ready = [i for i in held.get(path, []) if i["attempt"] <= started[path]]
                        if ready:
                            held[path] = [i for i in held[path] if i["attempt"] > started[path]]
                            for item in ready:
                                yield token_event(run_id, last_id, item)
                    elif kind in ("stage.completed", "stage.failed") and path in held:
                        for item in held.pop(path):
                            yield token_event(run_id, last_id, item)
                        yield event
                    else:
                        yield event
            for pieces in held.values():
                for item in pieces:
                    yield token_event(run_id, last_id, item)
        finally:
            for task in (next_event, next_token):
                task.cancel()
            await asyncio.gather(next_event, next_token, return_exceptions=True)
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
