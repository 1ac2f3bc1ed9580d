"""Stage logs in the journal: buffered, bounded per stage, committed off the stage's path.

Shell stages may print a lot and often; each chunk must not cost an fsync. ``StageLogStore``
collects chunks in memory and commits them every ``FLUSH_INTERVAL_S`` in one transaction of their
own, so ``flowmason logs --follow`` sees output within a fraction of a second while the stage
result commits stay as they were. What a stage prints beyond ``max_bytes`` is counted, not kept,
and one line at the end of that stage's log says how much was dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

import structlog

if TYPE_CHECKING:
    from flowmasond.journal import Journal

log = structlog.get_logger("flowmasond.logstore")

# Often enough that a follower sees output as it comes; rare enough that a chatty stage costs a
# handful of small transactions a second.
FLUSH_INTERVAL_S = 0.2


class StageLogStore:
    """The daemon's ``StageLogSink``: buffers chunks and commits them to ``run_logs``."""

    def __init__(self, journal: Journal, *, max_bytes: int, on_flush: Callable[[], None] | None = None) -> None:
        self.journal = journal
        self.max_bytes = max_bytes
        self.on_flush = on_flush
        self._pending: list[dict[str, Any]] = []
        self._kept: dict[tuple[str, str], int] = {}  # (run_id, path) -> bytes kept
        self._dropped: dict[tuple[str, str], int] = {}  # bytes over the bound, not yet reported
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def write(self, run_id: str, path: str, stream: str, text: str) -> None:
        """Keep ``text`` if the stage's bound allows (never blocks, never raises)."""
        if self.max_bytes <= 0 or not text:
            return
        key = (run_id, path)
        kept = self._kept.get(key, 0)
        data = text.encode("utf-8", errors="replace")
        room = self.max_bytes - kept
        if room <= 0:
            self._dropped[key] = self._dropped.get(key, 0) + len(data)
            return
        if len(data) > room:
            self._dropped[key] = self._dropped.get(key, 0) + len(data) - room
            text = data[:room].decode("utf-8", errors="ignore")
            data = data[:room]
        self._kept[key] = kept + len(data)
        self._pending.append({"run_id": run_id, "path": path, "stream": stream, "ts": time.time(), "text": text})
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="stage log flusher")
        self._wake.set()

    def forget(self, run_id: str) -> None:
        """The run ended: report what was dropped, and stop tracking its stages."""
        for key in [k for k in self._dropped if k[0] == run_id]:
            dropped = self._dropped.pop(key)
            self._pending.append({"run_id": run_id, "path": key[1], "stream": "log", "ts": time.time(),
                                  "text": f"[flowmasond: {dropped} more bytes of output were not kept "
                                          f"(stage_log_max_bytes = {self.max_bytes})]\n"})
        for key in [k for k in self._kept if k[0] == run_id]:
            del self._kept[key]
        self._wake.set()

    async def flush(self) -> None:
        """Commit what is buffered now."""
        chunks, self._pending = self._pending, []
        if not chunks:
            return
        try:
            await self.journal.append_logs(chunks)
        except Exception as exc:  # noqa: BLE001 - logs are best effort; a stage never fails for them
            log.warning("stage_logs_not_kept", chunks=len(chunks), error=str(exc))
            return
        if self.on_flush is not None:
            self.on_flush()

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()

    async def close(self) -> None:
        """Flush what is left (before the journal closes)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for run_id in {k[0] for k in self._dropped}:
            self.forget(run_id)
        await self.flush()
