"""A test-only component that blocks the daemon's event loop (loaded via ``component_modules``).

It marks the start and end of the block with datagrams on the test's notify socket, so that the
test can tell, from the order of datagrams alone, which watchdog pings fell inside the block.
"""

from __future__ import annotations

import socket
import time

from pydantic import Field

from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentInput, ComponentOutput, operator

BLOCK_START = "X_TEST_BLOCK_START=1"
BLOCK_END = "X_TEST_BLOCK_END=1"


@operator("block_loop", description="Block the event loop with time.sleep (tests only).")
class BlockLoop:
    """Sleep synchronously inside ``execute``: nothing else on the daemon's loop runs meanwhile."""

    class Input(ComponentInput):
        seconds: float = Field(ge=0)
        marker_socket: str

    class Output(ComponentOutput):
        blocked_s: float

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as marker:
            marker.sendto(BLOCK_START.encode(), input.marker_socket)
            started = time.monotonic()
            time.sleep(input.seconds)  # deliberately blocking: this is what the test is about
            blocked = time.monotonic() - started
            marker.sendto(BLOCK_END.encode(), input.marker_socket)
        return self.Output(blocked_s=blocked)
