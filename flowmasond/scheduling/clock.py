"""The scheduler's clock seam: wall time plus a way to wait for it.

The daemon uses ``SystemClock``. Tests use ``ManualClock`` and move time by hand, so a schedule
due in an hour is tested in microseconds, without sleeping (STYLE.md point 9).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in Unix epoch seconds and a sleep measured against it."""

    def now(self) -> float:
        """The current time (Unix epoch seconds)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """A clock that moves only when told to; sleepers wake when ``advance``/``set`` pass their deadline."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper whose deadline has come."""
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        """Jump to ``now`` (forward or back); sleepers whose deadline has come wake up."""
        self._now = float(now)
        for deadline, future in list(self._sleepers):
            if deadline <= self._now and not future.done():
                future.set_result(None)
