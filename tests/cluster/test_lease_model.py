"""The lease protocol against a model: random acquires, expiries, claims, renewals, releases and
commits by three nodes on a real database, each checked against a dictionary of who holds what."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from flowmasond.cluster.fence import LeaseFence
from flowmasond.cluster.node import ClusterNode
from flowmasond.cluster.sql import cluster_queries
from flowmasond.errors import FencedError, RunConflictError
from flowmasond.journal.postgres.sql import migrate

NODES = ("a", "b", "c")
RUNS = ("r1", "r2", "r3")


@dataclass
class Lease:
    """The model's view of one lease row."""

    node: str
    epoch: int
    live: bool


class LeaseMachine(RuleBasedStateMachine):
    """Every operation goes to the database through ``ClusterNode``/``LeaseFence``; the model says what
    must have happened: one lease per run, a new larger epoch per take, commits only under a live
    lease with the epoch the node holds."""

    dsn = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.nodes = {n: ClusterNode(dsn=self.dsn, node_id=n, socket_path="-", fence=LeaseFence(n),
                                     lease_s=3600.0, heartbeat_s=600.0, recovery_auto=True) for n in NODES}
        self.leases: dict[str, Lease] = {}
        self.writes: dict[str, str | None] = dict.fromkeys(RUNS)
        self.last_epoch = 0
        self._run(self._sql("TRUNCATE run_leases; UPDATE runs SET output = NULL"))

    def teardown(self) -> None:
        for node in self.nodes.values():
            self._run(node.stop())
        self.loop.close()

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _sql(self, sql: str, params: Any = None) -> list[Any]:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cur = await conn.execute(sql.encode(), params)
            return await cur.fetchall() if cur.description else []

    def _taken(self, node: str, run: str) -> None:
        epoch = self.nodes[node].fence.epochs[run]
        assert epoch > self.last_epoch  # fencing tokens only grow
        self.last_epoch = epoch
        self.leases[run] = Lease(node, epoch, True)

    @rule(node=st.sampled_from(NODES), run=st.sampled_from(RUNS))
    def acquire(self, node: str, run: str) -> None:
        held = self.nodes[node].fence.epochs
        if run in held:
            return  # the run manager never asks for a run it executes
        lease = self.leases.get(run)
        free = lease is None or not lease.live or lease.node == node
        try:
            self._run(self.nodes[node].acquire(run))
        except RunConflictError:
            assert not free
            return
        assert free
        self._taken(node, run)

    @rule(run=st.sampled_from(RUNS))
    def expire(self, run: str) -> None:
        self._run(self._sql("UPDATE run_leases SET expires_at = now() - interval '1 second' WHERE run_id = %s",
                            (run,)))
        if run in self.leases:
            self.leases[run].live = False

    @rule(node=st.sampled_from(NODES))
    def claim(self, node: str) -> None:
        rows = self._run(self.nodes[node]._fetch(cluster_queries().claim_orphans, {
            "node_id": node, "lease_s": 3600.0, "grace_s": 0.0, "auto": True, "limit": 100}))
        expected = {r for r in RUNS if r not in self.leases or not self.leases[r].live}
        assert {r for r, _ in rows} == expected
        for run, epoch in sorted(rows, key=lambda r: r[1]):
            self.nodes[node].fence.epochs[run] = epoch
            self._taken(node, run)

    @rule(node=st.sampled_from(NODES))
    def renew(self, node: str) -> None:
        held = dict(self.nodes[node].fence.epochs)
        self._run(self.nodes[node]._renew())
        for run, epoch in held.items():
            lease = self.leases.get(run)
            kept = lease is not None and lease.live and lease.node == node and lease.epoch == epoch
            assert (run in self.nodes[node].fence.epochs) == kept

    @rule(node=st.sampled_from(NODES), run=st.sampled_from(RUNS))
    def release(self, node: str, run: str) -> None:
        epoch = self.nodes[node].fence.epochs.get(run)
        self._run(self.nodes[node].release(run))
        if self.nodes[node]._flusher is not None:
            self._run(self.nodes[node]._flusher)
        lease = self.leases.get(run)
        if epoch is not None and lease is not None and lease.node == node and lease.epoch == epoch:
            del self.leases[run]

    @rule(node=st.sampled_from(NODES), run=st.sampled_from(RUNS))
    def commit(self, node: str, run: str) -> None:
        fence = self.nodes[node].fence
        lease = self.leases.get(run)
        allowed = (lease is not None and lease.live and lease.node == node
                   and fence.epochs.get(run) == lease.epoch)

        async def write() -> None:
            async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
                async with conn.transaction():
                    cur = conn.cursor()
                    await fence.check(cur, run)
                    await cur.execute(b"UPDATE runs SET output = %s WHERE run_id = %s", (json.dumps(node), run))
        try:
            self._run(write())
        except FencedError:
            assert not allowed
            return
        assert allowed
        self.writes[run] = node

    @invariant()
    def database_matches_the_model(self) -> None:
        rows = self._run(self._sql("SELECT run_id, node_id, epoch, expires_at > now(), output FROM runs "
                                   "LEFT JOIN run_leases USING (run_id) ORDER BY run_id"))
        for run, node, epoch, live, output in rows:
            lease = self.leases.get(run)
            assert (None if node is None else (node, epoch, live)) == \
                (None if lease is None else (lease.node, lease.epoch, lease.live))
            assert output == self.writes[run]


@pytest.fixture
def lease_db(pg_dsn: str) -> str:
    async def prepare() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await migrate(conn)
            await conn.execute(b"INSERT INTO pipelines_pinned VALUES ('h', 'p', '{}', 0)")
            for run in RUNS:
                await conn.execute(b"INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, "
                                   b"created_at) VALUES (%s, 'p', 'h', '{}', 'pending', 0)", (run,))
    asyncio.run(prepare())
    return pg_dsn


def test_leases_and_the_fence_follow_the_model(lease_db: str) -> None:
    """Whatever the order of operations, each run has at most one live lease, epochs only grow, and a
    commit is written exactly when the committing node holds the run's live lease at its epoch."""
    LeaseMachine.dsn = lease_db
    run_state_machine_as_test(LeaseMachine, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
