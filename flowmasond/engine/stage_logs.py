"""Stage logs: where components send what a stage prints, as it prints it.

The engine knows no journal: the daemon puts a ``StageLogSink`` into the executor's services under
``STAGE_LOGS``, and components that produce output meant for an operator (shell stages' stdout and
stderr, logger stages' messages) hand it chunks. Without a sink (``run-once``, unit tests) nothing
is kept beyond what the components return.
"""

from __future__ import annotations

import codecs
from typing import Protocol
from collections.abc import Callable

from flowmasond.engine.context import ExecutionContext

STAGE_LOGS = "stage_logs"


class StageLogSink(Protocol):
    """Receives stage output; ``write`` must not block (the daemon buffers and commits later)."""

    def write(self, run_id: str, path: str, stream: str, text: str) -> None: ...


def sink_of(context: ExecutionContext) -> StageLogSink | None:
    """The sink the executor was given, if any."""
    sink = context.services.get(STAGE_LOGS)
    return sink if sink is not None and hasattr(sink, "write") else None


def byte_forwarder(context: ExecutionContext, stream: str) -> Callable[[bytes, bool], None] | None:
    """A ``feed(chunk, final)`` that decodes UTF-8 across chunk boundaries and forwards text."""
    sink = sink_of(context)
    if sink is None:
        return None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(chunk: bytes, final: bool = False) -> None:
        text = decoder.decode(chunk, final)
        if text:
            sink.write(context.run_id, context.stage_path, stream, text)

    return feed
