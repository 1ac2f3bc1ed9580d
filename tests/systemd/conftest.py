"""Fixtures for the systemd tests (helpers live in notify_support.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from notify_support import NotifyListener, can_connect


@pytest.fixture
def notify_listener(tmp_path: Path) -> Iterator[NotifyListener]:
    """A fake systemd notify socket; on each READY=1 it records whether the control socket accepts."""
    listener = NotifyListener(tmp_path / "notify.sock", on_ready=lambda: can_connect(tmp_path / "flowmasond.sock"))
    yield listener
    listener.close()
