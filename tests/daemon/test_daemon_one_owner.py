"""One owner per state directory: a second daemon, or a second writer of the journal, is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable

import pytest

from daemon_acceptance_support import GATED, ran, wait_until
from daemon_support import DaemonProcess
from flowmasond.errors import JournalLockedError
from flowmasond.journal import Journal

EX_TEMPFAIL = 75


def _second_daemon(first: DaemonProcess, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``flowmasond`` on the first daemon's state directory with a socket of its own."""
    args = [sys.executable, "-m", "flowmasond.cli", "--state-dir", str(first.state_dir),
            "--socket", str(tmp_path / "second.sock"), "--pipelines", str(first.pipelines)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=first.env)


def test_second_daemon_on_the_same_state_dir_exits_75_naming_the_owner(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[..., Path], tmp_path: Path) -> None:
    """A second flowmasond on a busy state directory exits 75 naming the first one's pid, and recovers nothing."""
    write_pipeline(GATED)
    first = daemon_factory(config={"cancel_grace_s": 0.2}).start()
    ledger, gate = tmp_path / "ledger.txt", tmp_path / "gate"
    with first.client() as client:
        run_id = client.call("runs.start", {"pipeline_id": "gated",
                                            "inputs": {"ledger": str(ledger), "gate": str(gate)}})["run_id"]
    wait_until(lambda: ran(ledger, "wait"), what="the gated stage to start")

    second = _second_daemon(first, tmp_path)

    assert second.returncode == EX_TEMPFAIL, second.stderr
    assert first.proc is not None
    assert f"pid {first.proc.pid}" in second.stderr
    assert not (tmp_path / "second.sock").exists()
    gate.touch()
    info = first.wait_for_status(run_id, {"succeeded", "failed", "cancelled", "interrupted"})
    assert info["status"] == "succeeded"
    # The second daemon did not recover (and re-run) the run the first was executing.
    assert [ran(ledger, p) for p in ("one", "two", "wait", "last")] == [[1], [1], [1], [1]]


def test_the_state_dir_is_free_again_once_the_owner_is_killed(
        daemon_factory: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    """SIGKILL releases the lock (the kernel drops it): a new daemon starts on the same state directory."""
    first = daemon_factory().start()
    first.kill()
    again = daemon_factory().start()
    with again.client() as client:
        assert client.health().status == "ok"


def test_opening_a_running_daemons_journal_for_writing_is_refused(
        daemon_factory: Callable[..., DaemonProcess]) -> None:
    """Journal.open on a journal a live daemon owns raises JournalLockedError with the daemon's pid."""
    first = daemon_factory().start()
    assert first.proc is not None

    with pytest.raises(JournalLockedError) as caught:
        asyncio.run(Journal.open(first.state_dir / "journal.sqlite3"))

    assert caught.value.context["holder_pid"] == first.proc.pid
    assert f"pid {first.proc.pid}" in str(caught.value)


async def test_a_journal_has_one_writer_within_one_process_too(tmp_path: Path) -> None:
    """A second Journal.open of an open journal is refused; after close it opens again."""
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    try:
        with pytest.raises(JournalLockedError):
            await Journal.open(path)
    finally:
        await journal.close()
    reopened = await Journal.open(path)
    await reopened.close()
