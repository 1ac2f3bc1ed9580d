"""Fixtures for the scheduler tests (helpers live in scheduling_support.py)."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from flowmasond.scheduling.clock import ManualClock
from scheduling_support import T0, Rig


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """A scheduler rig at T0; stopped at the end of the test."""
    made = Rig(root=tmp_path, clock=ManualClock(T0))
    yield made
    await made.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long generated profiles here (marked ``slow``) run only with ``--slow``."""
    if config.getoption("--slow"):
        return
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("slow") is not None and here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason="long generated profile: run with --slow"))
