"""The fencing seam: a check every run-writing transaction makes before it writes.

``PgJournal`` calls ``await fence.check(cursor, run_id)`` inside the transaction, before its
writes, in every transaction that writes a run's records or changes a run's state: ``create_run``
(before the run row exists), record commits and attempt starts (``RunStore``), ``set_run_status``,
``record_resume``, ``increment_recovery_attempts`` and ``set_paused``. Raising ``FencedError``
refuses that one request (its transaction is rolled back; other requests of the same group commit).

The default ``NoFence`` allows everything: with it the journal is single-owner (an advisory lock
held by the writer's session, see ``PgJournal.open``). A lease-based fence (several nodes) checks
in the same transaction that this node still holds the run's lease, so a node that wakes up after
losing it cannot write for a run that has moved on.
"""

from __future__ import annotations

from typing import Any, Protocol


class RunFence(Protocol):
    """Decides, inside a write transaction, whether this node may still write for ``run_id``."""

    async def check(self, cur: Any, run_id: str) -> None:
        """Raise ``flowmasond.errors.FencedError`` to refuse; ``cur`` is the transaction's psycopg cursor."""


class NoFence:
    """The single-owner fence: every write is allowed (one daemon owns the whole database)."""

    async def check(self, cur: Any, run_id: str) -> None:
        return None
