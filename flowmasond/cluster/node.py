"""``ClusterNode``: this daemon as one node of a cluster sharing a PostgreSQL journal.

Its heartbeat (every ``heartbeat_seconds``) renews the leases of the runs it executes in one
statement; a run whose lease did not come back (expired while the node was paused or cut off, or
taken by another node) is abandoned locally at once -- its commits would be refused by the fence
anyway. The same beat (woken at once by a NOTIFY when another node leaves a request) hands
cancel requests made on other nodes to the run manager, follows
schedule pauses made elsewhere, and claims runs that need an owner (``claim_orphans``: pending
runs nobody took, running or interrupted runs whose owner's lease expired) with
``FOR UPDATE SKIP LOCKED``, so two nodes never claim the same run. A claimed run is recovered
exactly as a single daemon recovers its own runs on start (``RunManager.recover_claimed``).

The node's lease work uses its own autocommit connection, so a long journal transaction never
delays a renewal; every time comes from the database clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import structlog

from flowmasond.cluster.fence import LeaseFence
from flowmasond.cluster.sql import cluster_queries, column
from flowmasond.errors import JournalError, JournalLockedError, RunConflictError

if TYPE_CHECKING:
    import psycopg

    from flowmasond.runs import RunManager
    from flowmasond.scheduling.scheduler import Scheduler

log = structlog.get_logger("flowmasond.cluster")

# How long an unleased pending run waits before other nodes may claim it: the node that created it
# takes its lease right after the creation commits, so only a node that died in between leaves one.
UNCLAIMED_GRACE_S = 2.0
# Fires recorded this many lease periods ago at most are checked for a missing run: older ones
# were either created or belong to runs deleted since.
ORPHAN_FIRE_WINDOW_LEASES = 10
# NOTIFY channel of cancel requests (the payload is the run id; each node checks its own runs).
REQUESTS_CHANNEL = "flowmasond_run_requests"
# Cancel requests nobody took for this long (the run finished first) are deleted by any node.
REQUEST_STALE_S = 3600.0
# After a failed statement (the database restarting), wait this long before reconnecting.
RECONNECT_DELAY_S = 0.5


class ClusterNode:
    """Leases, heartbeat and claims of one node (see the module docstring)."""

    def __init__(self, *, dsn: str, node_id: str, socket_path: str, fence: LeaseFence,
                 lease_s: float, heartbeat_s: float, recovery_auto: bool) -> None:
        self.dsn = dsn
        self.node_id = node_id
        self.socket_path = socket_path
        self.fence = fence
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.recovery_auto = recovery_auto
        self.runs: RunManager | None = None
        self.scheduler: Scheduler | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._recoveries: set[asyncio.Task[None]] = set()
        self._releases: dict[str, int] = {}  # released, row not deleted yet: run_id -> epoch
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        # monotonic time of the last renewal that reached the database
        self._renewed_at = time.monotonic()
        self.lost: list[str] = []  # runs abandoned because their lease was lost (newest last)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, runs: RunManager, scheduler: Scheduler | None = None) -> None:
        """Register the node (expiring leases a previous life of it left) and start the heartbeat."""
        self.runs = runs
        self.scheduler = scheduler
        q = cluster_queries()
        params = {"node_id": self.node_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "socket": self.socket_path, "lease_s": self.lease_s}
        if not await self._fetch(q.register_node, params):
            holder = await self._fetch(q.node_holder, {"node_id": self.node_id})
            host, pid, age = holder[0] if holder else ("?", "?", 0.0)
            raise JournalLockedError(
                f"node id {self.node_id!r} is in use by host {host} (pid {pid}, heartbeat "
                f"{float(age):.1f} s ago); give each node its own [cluster] node_id",
                node_id=self.node_id, host=host, pid=pid)
        # Same node id, new process: whatever the last one held is not executing any more.
        await self._execute(q.expire_node_leases, {"node_id": self.node_id})
        self._task = asyncio.create_task(self._beat(), name="cluster heartbeat")
        self._listener = asyncio.create_task(self._listen(), name="cluster requests listener")
        log.info("cluster_node_started", node_id=self.node_id, lease_s=self.lease_s,
                 heartbeat_s=self.heartbeat_s)

    def attach_scheduler(self, scheduler: Scheduler | None) -> None:
        """Follow pauses made on other nodes in ``scheduler`` (started after the node)."""
        self.scheduler = scheduler

    async def stop(self) -> None:
        """Stop the heartbeat (after the run manager released its runs) and mark the node stopped."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        tasks = [t for t in (self._task, self._listener, *self._recoveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The run manager has stopped every run by now: what is still held (a claim whose recovery
        # was cut short) goes back at once instead of after lease_seconds.
        active = self.runs.active if self.runs is not None else {}
        for run_id in list(self.fence.epochs):
            if run_id not in active:
                await self.release(run_id)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._execute(cluster_queries().node_stopped, {"node_id": self.node_id})
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    # -- RunOwnership (used by the run manager) ---------------------------------------------------
    async def acquire(self, run_id: str) -> None:
        """Take ``run_id``'s lease (a new epoch); ``RunConflictError`` when another node holds it."""
        if run_id in self.fence.epochs:
            return
        q = cluster_queries()
        rows = await self._fetch(q.take_lease, {"run_id": run_id, "node_id": self.node_id,
                                                "lease_s": self.lease_s})
        if rows:
            self.fence.epochs[run_id] = int(column(rows[0], 0, "epoch"))
            return
        holder = await self._fetch(q.lease_of, {"run_id": run_id})
        owner = str(column(holder[0], 0, "node_id")) if holder else None
        raise RunConflictError(f"run is executed by node {owner}", run_id=run_id, node=owner)

    async def release(self, run_id: str) -> None:
        """Give ``run_id``'s lease up (the run finished or stopped here).

        It is no longer renewed from now on; the row is deleted by the next batch of releases
        (under load many runs finish together: one statement frees them all).
        """
        epoch = self.fence.epochs.pop(run_id, None)
        if epoch is None:
            return
        self._releases[run_id] = epoch
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_releases(), name="lease releases")

    async def _flush_releases(self) -> None:
        while self._releases:
            batch, self._releases = self._releases, {}
            try:
                await self._execute(cluster_queries().release_leases, {
                    "node_id": self.node_id, "run_ids": list(batch), "epochs": list(batch.values())})
            except Exception as exc:  # noqa: BLE001 - not renewed any more, so they expire by themselves
                log.warning("lease_release_failed", runs=len(batch), error=str(exc))

    async def forward(self, run_id: str, kind: str) -> str | None:
        """Leave a ``kind`` request (cancel, terminate, continue, step) for the node holding
        ``run_id``'s live lease; returns that node's id, or None when no other node holds one."""
        q = cluster_queries()
        holder = await self._fetch(q.lease_of, {"run_id": run_id})
        if not holder or not column(holder[0], 2, "live"):
            return None
        owner = str(column(holder[0], 0, "node_id"))
        if owner == self.node_id:
            return None  # ours (being recovered here): the caller acts locally
        await self._execute(q.insert_run_request, {"run_id": run_id, "node_id": self.node_id, "kind": kind})
        # Wakes every node's heartbeat now; without it the owner takes the request on its next beat.
        await self._execute(q.notify_run_request, {"channel": REQUESTS_CHANNEL, "run_id": run_id})
        log.info("run_request_forwarded", run_id=run_id, kind=kind, owner=owner)
        return owner

    # -- views ------------------------------------------------------------------------------------
    async def nodes(self) -> list[dict[str, Any]]:
        """Every node with its heartbeat age and the live leases it holds."""
        q = cluster_queries()
        nodes = await self._fetch(q.list_nodes, {})
        leases = await self._fetch(q.list_leases, {})
        by_node: dict[str, list[dict[str, Any]]] = {}
        for row in leases:
            expires_in = float(column(row, 3, "expires_in_s"))
            by_node.setdefault(str(column(row, 1, "node_id")), []).append(
                {"run_id": column(row, 0, "run_id"), "epoch": int(column(row, 2, "epoch")),
                 "expires_in_s": round(expires_in, 3), "live": expires_in > 0})
        out = []
        for row in nodes:
            node_id = str(column(row, 0, "node_id"))
            out.append({"node_id": node_id, "host": column(row, 1, "host"), "pid": column(row, 2, "pid"),
                        "socket": column(row, 3, "socket"),
                        "started_at": float(column(row, 4, "started_at")),
                        "heartbeat_age_s": round(float(column(row, 5, "heartbeat_age_s")), 3),
                        "stopped": bool(column(row, 6, "stopped")), "self": node_id == self.node_id,
                        "leases": by_node.get(node_id, [])})
        return out

    # -- heartbeat --------------------------------------------------------------------------------
    async def _beat(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            self._wake.clear()  # before the work: a wake-up arriving during it runs one more beat
            try:
                await self._renew()
                await self._take_requests()
                await self._follow_pauses()
                await self._orphan_fires()
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be restarting: try again
                log.warning("cluster_heartbeat_failed", node_id=self.node_id, error=str(exc))
                await self._drop_connection()
                self._abandon_if_stale()
            delay = max(self.heartbeat_s - (time.monotonic() - started), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _renew(self) -> None:
        sent = dict(self.fence.epochs)
        q = cluster_queries()
        await self._execute(q.touch_node, {"node_id": self.node_id})
        if not sent:
            self._renewed_at = time.monotonic()
            return
        asked_at = time.monotonic()
        rows = await self._fetch(q.renew_leases, {"node_id": self.node_id, "run_ids": list(sent),
                                                  "lease_s": self.lease_s})
        self._renewed_at = asked_at
        renewed = {str(column(r, 0, "run_id")): int(column(r, 1, "epoch")) for r in rows}
        for run_id, epoch in sent.items():
            if renewed.get(run_id) != epoch and self.fence.epochs.get(run_id) == epoch:
                self._lose(run_id, "the lease expired or another node took the run")

    def _abandon_if_stale(self) -> None:
        """Cut off from the database past the lease: the runs belong to the other nodes by now."""
        if time.monotonic() - self._renewed_at < self.lease_s:
            return
        for run_id in list(self.fence.epochs):
            self._lose(run_id, "no lease renewal reached the database within lease_seconds")

    def _lose(self, run_id: str, reason: str) -> None:
        self.fence.epochs.pop(run_id, None)
        self.lost.append(run_id)
        log.warning("lease_lost", run_id=run_id, node_id=self.node_id, reason=reason)
        if self.runs is not None:
            self.runs.abandon(run_id, reason)

    async def _listen(self) -> None:
        """Wake the heartbeat when another node leaves a request (LISTEN on its own session)."""
        import psycopg

        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, application_name=f"flowmasond {self.node_id} listen"[:63]) as conn:
                    await conn.execute(f"LISTEN {REQUESTS_CHANNEL}".encode())
                    self._wake.set()  # a request may have come while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.info("cluster_listen_reconnecting", node_id=self.node_id, error=str(exc))
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def _take_requests(self) -> None:
        held = list(self.fence.epochs)
        if not held or self.runs is None:
            return
        rows = await self._fetch(cluster_queries().take_run_requests,
                                 {"run_ids": held, "stale_s": REQUEST_STALE_S})
        for row in rows:
            run_id, kind = str(column(row, 0, "run_id")), str(column(row, 1, "kind"))
            if run_id not in held:
                continue  # a stale request (its run finished before any owner took it): dropped
            try:
                if kind in ("continue", "step"):
                    await self.runs.go_on(run_id, step=kind == "step", local_only=True)
                else:
                    await self.runs.cancel(run_id, now=kind == "terminate", local_only=True)
            except Exception as exc:  # noqa: BLE001 - finished or stopping meanwhile
                log.info("run_request_dropped", run_id=run_id, kind=kind, error=str(exc))

    async def _follow_pauses(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.follow_paused()

    async def _orphan_fires(self) -> None:
        """Create the runs of fires whose recording node died before creating them."""
        scheduler = self.scheduler
        if scheduler is None or self.runs is None or not self.runs.accepting:
            return
        rows = await self._fetch(cluster_queries().orphan_fires, {
            "grace_s": UNCLAIMED_GRACE_S, "window_s": ORPHAN_FIRE_WINDOW_LEASES * self.lease_s + UNCLAIMED_GRACE_S})
        for row in rows:
            await scheduler.start_recorded_fire(str(column(row, 0, "pipeline_id")), str(column(row, 1, "schedule_id")),
                                                float(column(row, 2, "fire_time")), str(column(row, 3, "run_id")))

    async def _claim(self) -> None:
        runs = self.runs
        if runs is None or not runs.accepting:
            return
        # Runs being recovered are not active yet, but they will be.
        room = runs.config.max_concurrent_runs - runs.counts()["active"] - len(self._recoveries)
        if room <= 0:
            return
        ended = await self._fetch(cluster_queries().end_sessions_of_lapsed_nodes, {
            "node_id": self.node_id, "lease_s": self.lease_s})
        for row in ended:
            log.warning("lapsed_node_session_ended", node_id=str(column(row, 1, "node_id")),
                        backend_pid=int(column(row, 0, "pid")))
        rows = await self._fetch(cluster_queries().claim_orphans, {
            "node_id": self.node_id, "lease_s": self.lease_s, "grace_s": UNCLAIMED_GRACE_S,
            "auto": self.recovery_auto, "limit": room})
        for row in rows:
            run_id, epoch = str(column(row, 0, "run_id")), int(column(row, 1, "epoch"))
            self.fence.epochs[run_id] = epoch
            log.info("run_claimed", run_id=run_id, node_id=self.node_id, epoch=epoch)
            task = asyncio.create_task(self._recover(run_id), name=f"recover {run_id}")
            self._recoveries.add(task)
            task.add_done_callback(self._recoveries.discard)

    async def _recover(self, run_id: str) -> None:
        assert self.runs is not None
        try:
            launched = await self.runs.recover_claimed(run_id)
        except Exception as exc:  # noqa: BLE001 - left to the next claim
            log.error("run_claim_recovery_failed", run_id=run_id, error=str(exc))
            launched = False
        if not launched:
            await self.release(run_id)

    # -- connection -------------------------------------------------------------------------------
    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            import psycopg

            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True,
                                                         application_name=f"flowmasond {self.node_id}"[:63])
            # A node stopped (SIGSTOP) inside a commit holds its lease row locked: a takeover
            # waits at most this long, then the heartbeat goes on and the claim is tried again.
            await conn.execute(b"SET lock_timeout = '2s'")
            # Lease writes need not wait for the WAL flush: one lost in a server crash can only
            # make a fence check fail (the lease looks expired or never taken), never let two
            # nodes write for one run; the commits the fence guards stay synchronous.
            await conn.execute(b"SET synchronous_commit = off")
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        await asyncio.sleep(RECONNECT_DELAY_S)

    async def _execute(self, sql: str, params: dict[str, Any]) -> None:
        await self._fetch(sql, params, rows=False)

    async def _fetch(self, sql: str, params: dict[str, Any], *, rows: bool = True) -> list[Any]:
        import psycopg

        async with self._lock:
            conn = None
            try:
                conn = await self._connection()
                cursor = await conn.execute(sql.encode(), params)
                return await cursor.fetchall() if rows else []
            except psycopg.Error as exc:
                if conn is not None and (conn.closed or conn.broken):
                    self._conn = None
                # One error hierarchy: callers (the run manager, the API) see a JournalError.
                raise JournalError(f"cluster bookkeeping failed: {exc}", node_id=self.node_id) from exc
