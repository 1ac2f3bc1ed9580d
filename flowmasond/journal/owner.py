"""One owner per journal: an exclusive ``flock`` held by the process that writes it.

SQLite's own locking serialises transactions but lets two daemons on one state directory both
believe they own the runs in it: the second one's recovery resumed runs the first was still
executing, and every later stage ran twice. ``Journal.open`` therefore takes an exclusive,
non-blocking ``flock`` on ``<journal>.lock`` next to the database and keeps it until ``close``.
The kernel drops it when the process dies, however it dies, so a SIGKILLed daemon never leaves a
stale lock behind. The file holds the owner's pid so that the refusal can name it.

The descriptor is opened with ``O_CLOEXEC``: a stage's subprocess outliving the daemon must not
keep the lock (flock locks belong to the open file description, which a fork would share).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from flowmasond.errors import JournalLockedError

LOCK_SUFFIX = ".lock"


def lock_path(journal_path: Path) -> Path:
    """The lock file of the journal at ``journal_path``."""
    return journal_path.with_name(journal_path.name + LOCK_SUFFIX)


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class OwnerLock:
    """The exclusive lock on one journal; ``release`` (or process death) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, journal_path: Path) -> OwnerLock:
        """Take the lock or raise ``JournalLockedError`` naming the holder's pid (never waits)."""
        path = lock_path(journal_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "a process whose pid is not recorded yet"
            raise JournalLockedError(
                f"the journal is owned by another process ({who}); one flowmasond per state directory",
                journal=str(journal_path), lock_file=str(path), holder_pid=holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (the file stays: unlinking it would race with the next owner)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
