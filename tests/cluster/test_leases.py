"""Run leases and the fence against a real PostgreSQL server (no daemon): claims, renewals, refusals."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg
import pytest

from flowmasond.cluster.fence import LeaseFence
from flowmasond.cluster.node import ClusterNode
from flowmasond.errors import FencedError, RunConflictError
from flowmasond.journal.postgres.sql import migrate

pytestmark = pytest.mark.asyncio


async def _schema(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)


async def _add_runs(dsn: str, run_ids: list[str], *, status: str = "pending", created_at: float = 0.0,
                    parent: str | None = None) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(b"INSERT INTO pipelines_pinned VALUES ('h', 'p', '{}', 0) ON CONFLICT DO NOTHING")
        for run_id in run_ids:
            await conn.execute(b"INSERT INTO runs (run_id, pipeline_id, pipeline_hash, inputs, status, created_at,"
                               b" parent_run_id) VALUES (%s, 'p', 'h', '{}', %s, %s, %s)",
                               (run_id, status, created_at, parent))


def _node(dsn: str, name: str, *, lease_s: float = 5.0) -> ClusterNode:
    return ClusterNode(dsn=dsn, node_id=name, socket_path=f"/tmp/{name}.sock", fence=LeaseFence(name),
                       lease_s=lease_s, heartbeat_s=lease_s / 3, recovery_auto=True)


async def _claim(node: ClusterNode, limit: int = 1000) -> list[str]:
    from flowmasond.cluster.sql import cluster_queries

    rows = await node._fetch(cluster_queries().claim_orphans, {
        "node_id": node.node_id, "lease_s": node.lease_s, "grace_s": 0.0, "auto": True, "limit": limit})
    for run_id, epoch in rows:
        node.fence.epochs[run_id] = epoch
    return [r[0] for r in rows]


async def _write_under_fence(dsn: str, fence: LeaseFence, run_id: str) -> None:
    """A run-writing transaction as PgJournal makes it: the fence check, then the write."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            cur = conn.cursor()
            await fence.check(cur, run_id)
            await cur.execute(b"UPDATE runs SET output = %s WHERE run_id = %s",
                              (json.dumps(fence.node_id), run_id))


async def _output(dsn: str, run_id: str) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute(b"SELECT output FROM runs WHERE run_id = %s", (run_id,))).fetchone()
        return row[0] if row else None


async def test_concurrent_claims_give_each_orphan_run_to_exactly_one_node(pg_dsn: str) -> None:
    """Three nodes claiming at once (FOR UPDATE SKIP LOCKED) split the orphan runs without overlap."""
    await _schema(pg_dsn)
    run_ids = [f"r{i:03d}" for i in range(60)]
    await _add_runs(pg_dsn, run_ids)
    nodes = [_node(pg_dsn, f"n{i}") for i in range(3)]
    try:
        rounds = [await asyncio.gather(*(_claim(n, limit=7) for n in nodes)) for _ in range(10)]
        claimed = [rid for batch in rounds for per_node in batch for rid in per_node]
        assert sorted(claimed) == run_ids
        assert sum(1 for batch in rounds for per_node in batch if per_node) > 3  # really spread out
    finally:
        for n in nodes:
            await n.stop()


async def test_a_live_lease_is_not_claimed_and_an_expired_one_is_with_a_larger_epoch(pg_dsn: str) -> None:
    """Another node cannot take a live lease; once expired it takes it with a new, larger epoch."""
    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["r1"])
    a, b = _node(pg_dsn, "a", lease_s=0.5), _node(pg_dsn, "b", lease_s=0.5)
    try:
        await a.acquire("r1")
        with pytest.raises(RunConflictError) as err:
            await b.acquire("r1")
        assert err.value.context["node"] == "a"
        assert await _claim(b) == []
        await asyncio.sleep(0.6)
        assert await _claim(b) == ["r1"]
        assert b.fence.epochs["r1"] > a.fence.epochs["r1"]
    finally:
        await a.stop()
        await b.stop()


async def test_the_fence_refuses_a_commit_after_another_node_took_the_run(pg_dsn: str) -> None:
    """A node whose lease was taken over cannot write for the run: the transaction writes nothing."""
    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["r1"])
    a, b = _node(pg_dsn, "a", lease_s=0.5), _node(pg_dsn, "b", lease_s=5)
    try:
        await a.acquire("r1")
        await _write_under_fence(pg_dsn, a.fence, "r1")
        assert await _output(pg_dsn, "r1") == "a"
        await asyncio.sleep(0.6)
        assert await _claim(b) == ["r1"]
        with pytest.raises(FencedError):
            await _write_under_fence(pg_dsn, a.fence, "r1")
        assert a.fence.refused == 1
        await _write_under_fence(pg_dsn, b.fence, "r1")
        assert await _output(pg_dsn, "r1") == "b"
    finally:
        await a.stop()
        await b.stop()


async def test_an_expired_lease_refuses_commits_even_before_anyone_takes_it(pg_dsn: str) -> None:
    """Expiry is judged by the database clock at the commit: a paused node's late write is refused."""
    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["r1"])
    a = _node(pg_dsn, "a", lease_s=0.3)
    try:
        await a.acquire("r1")
        await asyncio.sleep(0.4)
        with pytest.raises(FencedError):
            await _write_under_fence(pg_dsn, a.fence, "r1")
        assert await _output(pg_dsn, "r1") is None
    finally:
        await a.stop()


async def test_a_child_run_is_fenced_by_its_root_runs_lease(pg_dsn: str) -> None:
    """Subpipeline runs have no lease of their own: the root's lease decides their commits."""
    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["root"])
    await _add_runs(pg_dsn, ["child"], parent="root")
    await _add_runs(pg_dsn, ["grandchild"], parent="child")
    a, b = _node(pg_dsn, "a"), _node(pg_dsn, "b")
    try:
        await a.acquire("root")
        await _write_under_fence(pg_dsn, a.fence, "grandchild")
        with pytest.raises(FencedError):
            await _write_under_fence(pg_dsn, b.fence, "grandchild")
        assert await _output(pg_dsn, "grandchild") == "a"
    finally:
        await a.stop()
        await b.stop()


async def test_a_run_not_created_yet_passes_the_fence(pg_dsn: str) -> None:
    """create_run checks before its row exists; a new run id belongs to no one yet."""
    await _schema(pg_dsn)
    fence = LeaseFence("a")
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        async with conn.transaction():
            await fence.check(conn.cursor(), "new-run")
    assert fence.refused == 0


async def test_a_takeover_waits_for_a_commit_in_flight_under_the_old_lease(pg_dsn: str) -> None:
    """The fence's row lock orders a takeover after a commit already checked: never both at once."""
    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["r1"])
    a, b = _node(pg_dsn, "a", lease_s=0.5), _node(pg_dsn, "b", lease_s=5)
    try:
        await a.acquire("r1")
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            async with conn.transaction():
                await a.fence.check(conn.cursor(), "r1")
                await asyncio.sleep(0.6)  # the lease expires while the checked commit is open
                takeover = asyncio.create_task(_claim(b))
                await asyncio.sleep(0.3)
                assert not takeover.done()  # blocked on the lease row
        assert await takeover == ["r1"]
    finally:
        await a.stop()
        await b.stop()


async def test_renewal_keeps_live_leases_and_drops_expired_ones(pg_dsn: str) -> None:
    """The heartbeat renews every live lease in one statement; a lease that came back missing is lost."""
    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["r1", "r2"])
    a, b = _node(pg_dsn, "a", lease_s=0.5), _node(pg_dsn, "b", lease_s=5)
    try:
        await a.acquire("r1")
        await a.acquire("r2")
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # twice the lease, renewed every 0.1 s
            await a._renew()
            await asyncio.sleep(0.1)
        assert set(a.fence.epochs) == {"r1", "r2"} and a.lost == []
        # r2 is taken over after its lease expires (a was paused); the next renewal notices.
        await asyncio.sleep(0.6)
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute(b"UPDATE run_leases SET expires_at = now() + interval '1 hour' WHERE run_id = 'r1'")
        assert await _claim(b) == ["r2"]
        await a._renew()
        assert set(a.fence.epochs) == {"r1"} and a.lost == ["r2"]
    finally:
        await a.stop()
        await b.stop()


class _StallOnce:
    """A journal fence that locks the run's row, then stops inside the transaction the first time
    (as a node SIGSTOPped in the middle of a commit would)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.stalled = asyncio.Event()
        self.armed = False
        self.checks = 0

    async def check(self, cur: Any, run_id: str) -> None:
        if run_id != self.run_id or not self.armed:
            return
        self.checks += 1
        if self.checks == 1:
            await cur.execute(b"SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run_id,))
            await cur.fetchone()  # taken on the server (a pipelined statement waits for this)
            self.stalled.set()
            await asyncio.sleep(3)


async def test_a_node_stopped_inside_a_commit_has_its_sessions_ended_once_its_heartbeat_lapses(
        pg_dsn: str) -> None:
    """The row locks of a node stopped mid-transaction would make every SKIP LOCKED claim skip its
    runs for as long as it stays stopped (a pipelined transaction never goes idle, so the server's
    idle-in-transaction timeout does not apply): another node ends those sessions once the stopped
    node's heartbeat is a lease old; the stopped writer's retry then lands its commit exactly once."""
    import os
    import socket as socket_module

    from flowmasond.cluster.sql import cluster_queries
    from flowmasond.engine.interfaces import ComponentResult, Record, StageStatus
    from flowmasond.engine.models import PipelineConfig
    from flowmasond.journal.postgres import PgJournal

    fence = _StallOnce("r")
    journal = await PgJournal.open(pg_dsn, fence=fence)
    taker = _node(pg_dsn, "taker")
    skip_locked = b"SELECT 1 FROM runs WHERE run_id = 'r' FOR UPDATE SKIP LOCKED"
    try:
        pipeline = PipelineConfig.model_validate({"id": "p", "stages": [{"id": "a", "component_type": "echo"}]})
        await journal.create_run("r", pipeline, {})
        fence.armed = True
        result = ComponentResult("a", "echo", StageStatus.SUCCESS, output={"ok": True}, attempts=1,
                                 started_at=1.0, finished_at=2.0)
        commit = asyncio.create_task(journal.run_store("r").commit([Record.of_result("a", result)]))
        await asyncio.wait_for(fence.stalled.wait(), 10)
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as other:
            locked = await (await other.execute(skip_locked)).fetchall() == []
            # This process plays the stopped node: its journal sessions carry its pid and host.
            await other.execute(
                b"INSERT INTO nodes (node_id, host, pid, socket, started_at, heartbeat_at)"
                b" VALUES ('stopped', %s, %s, '/tmp/stopped.sock', now(), now() - interval '1 hour')",
                (socket_module.gethostname(), os.getpid()))
            ended = await taker._fetch(cluster_queries().end_sessions_of_lapsed_nodes,
                                       {"node_id": "taker", "lease_s": taker.lease_s})
            free = False
            for _ in range(100):
                if await (await other.execute(skip_locked)).fetchall():
                    free = True
                    break
                await asyncio.sleep(0.05)
        await asyncio.wait_for(commit, 30)
    finally:
        await taker.stop()
        await journal.close()

    assert locked, "the stopped transaction did not hold the run's row"
    assert ended and all(row[1] == "stopped" for row in ended)
    assert free, "the run's row stayed locked after the stopped node's sessions were ended"
    assert fence.checks == 2  # the ended transaction, then the writer's retry on a new session
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(b"SELECT run_id, path FROM run_records").fetchall() == [("r", "a")]


async def test_a_node_id_beating_on_another_host_is_refused_and_its_leases_kept(pg_dsn: str) -> None:
    """The same [cluster] node_id copied to a second machine: that node refuses to start (naming the
    other host) instead of expiring the leases of the live one; once the other's heartbeat is a lease
    old the id can be taken."""
    from flowmasond.errors import JournalLockedError

    await _schema(pg_dsn)
    await _add_runs(pg_dsn, ["r1"])
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(b"INSERT INTO nodes (node_id, host, pid, socket, started_at, heartbeat_at)"
                           b" VALUES ('x', 'elsewhere', 4242, '/tmp/x.sock', now(), now())")
        await conn.execute(b"INSERT INTO run_leases (run_id, node_id, epoch, taken_at, expires_at)"
                           b" VALUES ('r1', 'x', nextval('run_lease_epochs'), now(), now() + interval '1 hour')")
    twin = _node(pg_dsn, "x")
    with pytest.raises(JournalLockedError, match="elsewhere"):
        await twin.start(None)  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        live = (await (await conn.execute(b"SELECT expires_at > now() FROM run_leases WHERE run_id = 'r1'"))
                .fetchone())
        assert live == (True,)
        await conn.execute(b"UPDATE nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = 'x'")
    heir = _node(pg_dsn, "x")
    try:
        await heir.start(None)  # type: ignore[arg-type]
    finally:
        await heir.stop()
