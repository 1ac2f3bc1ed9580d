"""Operators firing one schedule at the same instant: the overlap policy still decides once per fire."""

from __future__ import annotations

import asyncio
from pathlib import Path

from scheduling_support import Rig, pipeline

from flowmasond.scheduling.clock import SystemClock

TRIGGERS = 6


async def test_triggers_sent_together_start_one_run_under_overlap_skip(tmp_path: Path) -> None:
    """Six triggers of an overlap=skip schedule begun in one loop turn (as the control socket hands
    them over when operators send them together): one run starts and the other fires are skipped
    naming it. Each used to decide before any run existed, and six runs went side by side."""
    # The wall clock, as in the daemon: each manual fire is recorded at its own instant.
    rig = Rig(root=tmp_path, clock=SystemClock())  # type: ignore[arg-type]
    rig.write(pipeline("held", {"id": "s", "cron": "0 0 1 1 *", "overlap": "skip"}, hold_s=5.0))
    scheduler = await rig.start()
    try:
        results = await asyncio.gather(*(scheduler.trigger("s") for _ in range(TRIGGERS)))
        runs = await rig.parts.journal.list_runs(pipeline_id="held")  # type: ignore[union-attr]
    finally:
        await rig.stop()

    started = [r for r in results if r["action"] == "started"]
    skipped = [r for r in results if r["action"] == "skipped"]
    assert len(started) == 1, results
    assert len(skipped) == TRIGGERS - 1
    assert all(started[0]["run_id"] in r["reason"] for r in skipped)
    assert len(runs) == 1
