"""``LeaseFence``: a commit is written only under the lease (and epoch) it was made under.

PgJournal calls ``check`` inside every transaction that writes a run's records or status, before
its writes. The check reads the run's lease row ``FOR SHARE``: a takeover by another node (an
``UPDATE`` of that row) waits until this transaction ends, so a commit accepted here cannot land
after the lease moved on; a lease that already moved on (another node, a new epoch) or expired by
the database's clock refuses the whole transaction with ``FencedError``. A child run (subpipeline)
is fenced by the lease of its root run; a run not created yet (``create_run``) passes.
"""

from __future__ import annotations

from typing import Any

import structlog

from flowmasond.cluster.sql import cluster_queries, column
from flowmasond.errors import FencedError
from flowmasond.journal.postgres.fence import RunFence

log = structlog.get_logger("flowmasond.cluster.fence")


class LeaseFence(RunFence):
    """The fence of one node: the epochs of the leases it holds, checked on every commit."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        # run_id -> epoch of each root run this node holds a lease on.
        self.epochs: dict[str, int] = {}
        self.refused = 0  # commits refused since start (a test and metrics seam)

    async def check(self, cursor: Any, run_id: str) -> None:
        """Raise ``FencedError`` unless this node holds ``run_id``'s (or its root's) live lease."""
        q = cluster_queries()
        params = {"run_id": run_id, "node_id": self.node_id}
        root, epoch = run_id, self.epochs.get(run_id)
        if epoch is not None:
            await cursor.execute(q.fence_root, params)
            row = await cursor.fetchone()
            found = None if row is None else int(column(row, 0, "epoch"))
        else:
            await cursor.execute(q.fence_chain, params)
            row = await cursor.fetchone()
            if row is None:
                # ``create_run`` checks before the run's row exists: a new id conflicts with no
                # one (its INSERT fails on a duplicate), and every later write of it is fenced.
                await cursor.execute(q.fence_run_exists, params)
                if await cursor.fetchone() is None:
                    return
                found = None
            else:
                root = str(column(row, 0, "run_id"))
                epoch = self.epochs.get(root)
                found = int(column(row, 1, "epoch"))
        if epoch is None or found != epoch:
            self.refused += 1
            log.warning("commit_fenced", run_id=run_id, root_run_id=root, node_id=self.node_id,
                        held_epoch=epoch, lease_epoch=found)
            raise FencedError("this node no longer holds the run's lease; the commit was refused",
                              run_id=run_id, node_id=self.node_id, epoch=epoch)
