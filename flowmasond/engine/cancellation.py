"""Cooperative cancellation of a run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CancellationToken:
    """Set once when a run should stop; checked before each stage.

    In-flight stages get ``grace_s`` to finish after cancellation is requested, then their tasks are
    cancelled (a shell stage's process group gets SIGTERM, then SIGKILL).
    """

    __slots__ = ("_callbacks", "_event", "grace_s", "interrupting", "reason")

    def __init__(self, grace_s: float = 5.0) -> None:
        self._event = asyncio.Event()
        self.reason: str | None = None
        self.grace_s = grace_s
        self._callbacks: list[Callable[[], None]] = []
        # True when the run stops only to be resumed later (the daemon is stopping), not for good:
        # a trycatch then leaves its finally stages for the resumed run.
        self.interrupting = False

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled", *, grace_s: float | None = None, interrupt: bool = False) -> None:
        """Request the stop; ``interrupt``: the run will be resumed (daemon shutdown), not ended."""
        if grace_s is not None:
            self.grace_s = grace_s
        if not self._event.is_set():
            self.reason = reason
            self.interrupting = interrupt
            self._event.set()
            for callback in list(self._callbacks):
                callback()

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the token is cancelled."""
        self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[], None]) -> None:
        try:
            self._callbacks.remove(callback)
        except ValueError:
            pass

    async def wait(self) -> None:
        await self._event.wait()
