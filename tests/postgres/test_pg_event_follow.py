"""Following events with several writing sessions: a follower sees every committed event exactly once.

Several sessions (nodes) commit events at once; ids come from one sequence, so an event with a
smaller id can commit after a larger one was read. The sessions here run the journal's own insert
paths (``insert_event`` and the ``run_attempts`` trigger) on real PostgreSQL sessions, interleaved
as hypothesis generates; the follower is ``PgJournal.events`` resumed with the last id it returned.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowmasond.engine.models import PipelineConfig
from flowmasond.journal.postgres import PgJournal
from flowmasond.journal.postgres.sql import pg_queries

PIPELINE = PipelineConfig.model_validate({"id": "p", "stages": [{"id": "a", "component_type": "echo"}]})
SESSIONS = 3

# ("xid", s): session s takes its transaction id now (as the journal's writer does at BEGIN);
# ("event", s) / ("attempt", s): s inserts an event directly / through the run_attempts trigger;
# ("commit", s) / ("rollback", s): s ends its transaction; ("poll", 0): the follower reads.
Op = tuple[str, int]
# Inserts, commits and polls weighted up: the skips need an insert, another session's commit and a
# poll while the first transaction is still open.
OPS = st.tuples(st.sampled_from(["xid", "event", "event", "attempt", "commit", "commit", "rollback", "poll", "poll"]),
                st.integers(0, SESSIONS - 1))


class Scenario:
    """The writing sessions, the follower and the oracle (what each session committed)."""

    def __init__(self, journal: PgJournal, sessions: list[psycopg.AsyncConnection[Any]], run_id: str) -> None:
        self.journal = journal
        self.sessions = sessions
        self.run_id = run_id
        self.open: list[list[str]] = [[] for _ in sessions]  # tags written by each open transaction
        self.committed: list[list[str]] = []  # each committed transaction's tags, in insert order
        self.seen: list[str] = []
        self.cursor = 0
        self.tags = itertools.count()

    async def apply(self, op: Op) -> None:
        kind, s = op
        cur = self.sessions[s].cursor()
        if kind == "xid":
            await cur.execute("SELECT pg_current_xact_id()")
        elif kind == "event":
            tag = f"e{next(self.tags)}"
            await cur.execute(pg_queries().insert_event, {"run_id": self.run_id, "now": time.time(),
                                                          "kind": "test.event", "path": tag, "data": None})
            self.open[s].append(tag)
        elif kind == "attempt":
            tag = f"a{next(self.tags)}"
            await cur.execute("INSERT INTO run_attempts (run_id, path, attempt, started_at) VALUES (%s, %s, 1, %s)",
                              (self.run_id, tag, time.time()))
            self.open[s].append(tag)
        elif kind == "commit":
            await self.sessions[s].commit()
            if self.open[s]:
                self.committed.append(self.open[s])
            self.open[s] = []
        elif kind == "rollback":
            await self.sessions[s].rollback()
            self.open[s] = []
        else:
            await self.poll()

    async def poll(self) -> None:
        while True:
            batch = await self.journal.events(self.run_id, after_id=self.cursor, limit=3)
            for event in batch:
                self.cursor = event.id
                if event.kind in ("test.event", "stage.started"):  # not the run's own events
                    self.seen.append(str(event.path))
            if len(batch) < 3:
                return

    async def finish(self) -> None:
        """Commit what is still open, then follow until every committed event arrived (bounded)."""
        for s in range(len(self.sessions)):
            await self.apply(("commit", s))
        expected = sum(len(tags) for tags in self.committed)
        deadline = time.monotonic() + 2.0
        while len(self.seen) < expected and time.monotonic() < deadline:
            await self.poll()
            if len(self.seen) < expected:
                await asyncio.sleep(0.01)  # another test's transaction may hold the horizon briefly
        await self.poll()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def scenario_parts(runner: asyncio.Runner, pg_dsn: str) -> Iterator[tuple[PgJournal, list[Any]]]:
    async def open_all() -> tuple[PgJournal, list[Any]]:
        journal = await PgJournal.open(pg_dsn, single_owner=False)
        sessions = [await psycopg.AsyncConnection.connect(pg_dsn) for _ in range(SESSIONS)]
        return journal, sessions

    async def close_all(journal: PgJournal, sessions: list[Any]) -> None:
        for session in sessions:
            await session.close()
        await journal.close()

    journal, sessions = runner.run(open_all())
    try:
        yield journal, sessions
    finally:
        runner.run(close_all(journal, sessions))


_runs = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=6, max_size=30))
# A smaller id committed after a larger one was read.
@example(ops=[("event", 1), ("event", 0), ("commit", 0), ("poll", 0), ("commit", 1)])
# The older transaction (smaller xid) takes the larger id: "xid below the horizon" with an id cursor
# would still skip session 1's event.
@example(ops=[("xid", 0), ("event", 1), ("event", 0), ("commit", 0), ("poll", 0), ("commit", 1)])
def test_a_follower_sees_every_committed_event_once_in_a_stable_order(
        runner: asyncio.Runner, scenario_parts: tuple[PgJournal, list[Any]], ops: list[Op]) -> None:
    """Sessions commit interleaved (one holding its transaction open): the follower gets each committed
    event exactly once, no rolled-back one, each transaction's events in insert order, and the order a
    fresh reader gets."""
    journal, sessions = scenario_parts
    run_id = f"r{next(_runs)}"

    async def play() -> tuple[Scenario, list[str]]:
        await journal.create_run(run_id, PIPELINE, {})
        scenario = Scenario(journal, sessions, run_id)
        for op in ops:
            await scenario.apply(op)
        await scenario.finish()
        fresh = await journal.events(run_id, after_id=0)
        return scenario, [str(e.path) for e in fresh if e.kind in ("test.event", "stage.started")]

    scenario, fresh = runner.run(play())
    committed = [tag for tags in scenario.committed for tag in tags]
    assert sorted(scenario.seen) == sorted(committed)
    assert len(set(scenario.seen)) == len(scenario.seen)
    for tags in scenario.committed:
        assert [tag for tag in scenario.seen if tag in tags] == tags
    assert scenario.seen == fresh


async def test_a_journal_follower_gets_every_event_of_several_nodes_once(pg_dsn: str) -> None:
    """Two journals commit events concurrently while a third session holds an earlier event uncommitted:
    a third journal's follow() yields all of them once, each node's in the order it wrote them."""
    nodes = [await PgJournal.open(pg_dsn, single_owner=False) for _ in range(3)]
    held = await psycopg.AsyncConnection.connect(pg_dsn)
    try:
        await nodes[0].create_run("r", PIPELINE, {})
        # The smallest id of all, committed last.
        await held.execute(pg_queries().insert_event, {"run_id": "r", "now": time.time(), "kind": "test.event",
                                                       "path": "held", "data": None})
        written = {n: [f"n{n}-{i}" for i in range(15)] for n in (0, 1)}
        expected = 1 + sum(len(tags) for tags in written.values())
        seen: list[str] = []

        async def follow() -> None:
            async for event in nodes[2].follow("r"):  # its own writer never commits: no local wake-up
                if event.kind == "test.event":
                    seen.append(str(event.path))
                    if len(seen) == expected:
                        return

        async def write(n: int) -> None:
            for tag in written[n]:
                await nodes[n].emit("r", "test.event", path=tag, durable=True)

        follower = asyncio.ensure_future(follow())
        await asyncio.gather(write(0), write(1))
        await held.commit()
        await asyncio.wait_for(follower, timeout=10)
    finally:
        await held.close()
        for node in nodes:
            await node.close()

    assert sorted(seen) == sorted(["held", *written[0], *written[1]])
    for tags in written.values():
        assert [tag for tag in seen if tag in tags] == tags
