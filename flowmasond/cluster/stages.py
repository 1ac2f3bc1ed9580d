"""Stages across workers: opted-in leaf stages of a run are executed by any node's stage workers.

The run's owner (the node holding its lease) stays the only node that commits: for a stage with
``distribute`` it queues a task in ``stage_tasks`` (stage, resolved config, attempt policy, its
lease epoch) and awaits the result, which the engine then commits through ``DAGExecutor.commit``
exactly like a local one, fenced by the owner's lease. Every node runs ``stage_workers`` workers
that claim tasks with ``FOR UPDATE SKIP LOCKED``, run the component through the same
``UniversalExecutor`` (timeouts, retries, attempt records), and write the result to the task row
conditional on their claim; a ``NOTIFY`` wakes the owner (which also polls, in case a notification
is lost with a connection).

Failures:
- A worker that dies stops renewing its claim; after ``claim_s`` another worker claims the task
  and runs it again, with attempt numbers continuing. A stage that is not safe to repeat and had
  started is not run again: the owner gets ``UnsafeToRepeatError`` (the run stops for an operator,
  as after a crash of a single daemon).
- An owner that dies leaves its tasks queued, claimed or done (a task stays until its result is
  committed: taking a result does not delete it); the node that takes the run over re-dispatches
  the stages it finds uncommitted and thereby adopts those tasks (``owner_epoch`` moves to its
  epoch) instead of queuing them twice. A task whose result the run already committed (a resume
  runs the stage again) is replaced, never adopted. The old owner reads a result only under its
  own epoch, and its commit is fenced by its lease, so a result is never committed twice.
- A withdrawn stage (the run cancelled, its lease lost) deletes its task; the worker running it
  notices on its next claim renewal and cancels the component.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from flowmasond.cluster.sql import column
from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.executor import UniversalExecutor, _pydantic_summary
from flowmasond.engine.interfaces import ComponentResult, ErrorType, StageStatus, StageTask
from flowmasond.engine.models import StageConfig
from flowmasond.engine.stage_logs import STAGE_LOGS
from flowmasond.errors import ComponentNotFoundError, FencedError, JournalError, UnsafeToRepeatError
from flowmasond.journal.postgres.sql import pg_queries

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psycopg_pool import AsyncConnectionPool

    from flowmasond.cluster.fence import LeaseFence
    from flowmasond.engine.registry import ComponentRegistry

log = structlog.get_logger("flowmasond.cluster.stages")

QUEUED_CHANNEL = "flowmason_stage_queued"
DONE_CHANNEL = "flowmason_stage_done"
# After a failed statement (the database restarting), wait this long before trying again.
RETRY_DELAY_S = 0.5


@dataclass(slots=True)
class _Claim:
    """A task this node's worker holds: its row and the claim token (``claims``) it writes under."""

    task_id: int
    run_id: str
    path: str
    payload: dict[str, Any]
    attempt: int  # the highest attempt started under earlier claims
    claims: int


class _ClaimStore:
    """The ``RunStore`` a worker's executor sees: attempt starts are written under the claim only."""

    def __init__(self, workers: StageWorkers, claim: _Claim) -> None:
        self._workers = workers
        self._claim = claim

    async def commit(self, records: Any) -> None:
        raise JournalError("a stage worker commits nothing: the run's owner commits the result")

    async def mark_started(self, path: str, attempt: int, *, durable: bool) -> None:
        # Always written at once: on a takeover, the unsafe-to-repeat rule reads it.
        claim = self._claim
        rows = await self._workers.fetch(pg_queries().start_attempt, {
            "task_id": claim.task_id, "node_id": self._workers.node_id, "claims": claim.claims,
            "attempt": attempt, "now": time.time()})
        if not rows or int(rows[0][0]) == 0:
            raise FencedError("the stage task's claim was lost; the attempt does not start",
                              run_id=claim.run_id, path=path, node_id=self._workers.node_id)


class StageWorkers:
    """This node's ``StageDispatcher`` (owner side) and its stage workers (see the module docstring)."""

    def __init__(self, *, dsn: str, node_id: str, fence: LeaseFence, registry: ComponentRegistry,
                 services: Mapping[str, Any], workers: int, claim_s: float, poll_s: float) -> None:
        self.dsn = dsn
        self.node_id = node_id
        self.fence = fence
        self.registry = registry
        self.workers = workers
        self.claim_s = claim_s
        self.poll_s = poll_s
        # The node's own services (providers, stage logs...); no hooks: the owner observes the run.
        self.executor = UniversalExecutor(services=services)
        self._pool: AsyncConnectionPool[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # Wake-ups of idle workers: one per queued task notified (not all workers at once, which
        # would send every idle worker of every node to claim the same task); a worker that
        # claimed one passes a wake-up on, since more may be queued.
        self._wake: asyncio.Queue[None] = asyncio.Queue(maxsize=max(workers, 1))
        self._waiters: dict[int, asyncio.Event] = {}  # task_id -> the owner awaiting its result
        self._running: dict[int, tuple[int, asyncio.Task[None]]] = {}  # task_id -> (claims, task)
        self._cleanups: set[asyncio.Task[None]] = set()
        self._taken: set[int] = set()  # results handed to the engine, deleted once committed

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connections and start the listener, the claim renewal and the workers."""
        from psycopg_pool import AsyncConnectionPool

        self._pool = AsyncConnectionPool(
            self.dsn, min_size=1, max_size=self.workers + 4, open=False, timeout=30.0,
            kwargs={"autocommit": True, "application_name": f"flowmasond {self.node_id} stages"[:63]},
            name="flowmasond-stage-tasks")
        await self._pool.open(wait=True, timeout=30.0)
        self._tasks.append(asyncio.create_task(self._listen(), name="stage task notifications"))
        self._tasks.append(asyncio.create_task(self._forget(), name="stage task cleanup"))
        if self.workers:
            self._tasks.append(asyncio.create_task(self._renew(), name="stage claim renewal"))
            self._tasks.extend(asyncio.create_task(self._work(), name=f"stage worker {i}")
                               for i in range(self.workers))
        log.info("stage_workers_started", node_id=self.node_id, workers=self.workers)

    async def stop(self) -> None:
        """Stop the workers; the tasks they held go back to the queue for the other nodes."""
        if self._stopping:
            return
        self._stopping = True
        held = list(self._running)
        for task in self._tasks:
            task.cancel()
        for _, running in self._running.values():
            running.cancel()
        await asyncio.gather(*self._tasks, *(t for _, t in self._running.values()), return_exceptions=True)
        if held:
            with contextlib.suppress(Exception):
                await self.fetch(pg_queries().release_claims, {"node_id": self.node_id, "task_ids": held})
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()

    # -- database ----------------------------------------------------------------------------------
    async def fetch(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """Run one statement (autocommit) and return its rows ([] when it returns none)."""
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql.encode(), params)
            return await cursor.fetchall() if cursor.description is not None else []

    # -- StageDispatcher (the owner) -----------------------------------------------------------
    def epoch_of(self, run_id: str) -> int | None:
        """The lease epoch this node holds for ``run_id`` (None for a child run: it runs locally)."""
        return self.fence.epochs.get(run_id)

    async def dispatch(self, task: StageTask) -> ComponentResult:
        """Queue (or adopt) the task, await a worker's result and take it under this owner's epoch."""
        q = pg_queries()
        key = {"run_id": task.run_id, "path": task.path}
        # A task row with a result implies a started attempt of this path (the worker records the
        # attempt and the task's in one statement), so a first dispatch needs no look first. (The
        # one result without an attempt, a config the worker's component refuses, is the one the
        # owner's own validation of the same config would give.)
        existing = await self._retrying(q.task_of, key) if task.attempt_base else []
        if existing and column(existing[0], 3, "committed"):
            # Its result is committed already (a resume runs the stage again): a new task.
            await self._retrying(q.discard_task, {"task_id": int(column(existing[0], 0, "task_id"))})
            existing = []
        if not existing and task.attempt_base and not task.safe_to_repeat and not task.force:
            # Nothing to adopt: the attempt that started was this path's local or lost execution.
            raise _unsafe(task.stage, task.path, task.run_id, task.attempt_base)
        rows = await self._retrying(q.submit_task, {**key, "node_id": self.node_id, "epoch": task.epoch,
                                                    "payload": _payload(task)})
        if not rows:
            raise FencedError("a newer owner of the run holds this stage's task", run_id=task.run_id,
                              path=task.path, node_id=self.node_id, epoch=task.epoch)
        task_id = int(column(rows[0], 0, "task_id"))
        log.debug("stage_task_queued", run_id=task.run_id, path=task.path, task_id=task_id)
        if column(rows[0], 2, "adopted"):
            log.info("stage_task_adopted", run_id=task.run_id, path=task.path, task_id=task_id,
                     state=column(rows[0], 1, "state"), epoch=task.epoch)
        waiter = self._waiters[task_id] = asyncio.Event()
        params = {"task_id": task_id, "epoch": task.epoch}
        try:
            while True:
                waiter.clear()
                found = await self._retrying(q.take_result, params)
                if not found:
                    raise FencedError("the stage's task was adopted by another owner of the run",
                                      run_id=task.run_id, path=task.path, node_id=self.node_id)
                if column(found[0], 0, "state") == "done":
                    data = json.loads(column(found[0], 1, "result"))
                    if "unsafe_to_repeat" in data:
                        await self._retrying(q.drop_task, params)  # nothing to commit: a forced resume reruns
                        raise _unsafe(task.stage, task.path, task.run_id, int(data["unsafe_to_repeat"]))
                    self._taken.add(task_id)  # forgotten once the engine committed it
                    return ComponentResult.from_dict(data["result"])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), self.poll_s)
        except asyncio.CancelledError:
            # Withdrawn (cancelled, lease lost): the worker sees the row gone on its next renewal.
            cleanup = asyncio.create_task(self._drop(params), name=f"withdraw stage task {task_id}")
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise
        finally:
            self._waiters.pop(task_id, None)

    async def _forget(self) -> None:
        """Delete the tasks whose results the engine has committed since it took them."""
        while not self._stopping:
            await asyncio.sleep(self.poll_s)
            if not self._taken:
                continue
            try:
                rows = await self.fetch(pg_queries().forget_committed,
                                        {"task_ids": sorted(self._taken), "node_id": self.node_id})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again on the next turn
                log.warning("stage_task_cleanup_failed", error=str(exc))
                continue
            self._taken.difference_update(int(r[0]) for r in rows)

    async def _drop(self, params: dict[str, Any]) -> None:
        try:
            await self.fetch(pg_queries().drop_task, params)
        except Exception as exc:  # noqa: BLE001 - left for the claim query's finished-run filter
            log.warning("stage_task_withdraw_failed", task_id=params["task_id"], error=str(exc))

    async def _retrying(self, sql: str, params: dict[str, Any]) -> list[Any]:
        """``fetch``, tried again while the database is unreachable (the lease decides when to stop)."""
        import psycopg

        while True:
            try:
                return await self.fetch(sql, params)
            except (psycopg.OperationalError, TimeoutError) as exc:
                log.warning("stage_task_statement_failed", error=str(exc))
                await asyncio.sleep(RETRY_DELAY_S)

    # -- notifications -----------------------------------------------------------------------------
    async def _listen(self) -> None:
        import psycopg

        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True,
                        application_name=f"flowmasond {self.node_id} stage notifications"[:63]) as conn:
                    await conn.execute(f"LISTEN {QUEUED_CHANNEL}; LISTEN {DONE_CHANNEL}".encode())
                    self._wake_worker()  # whatever was queued while not listening
                    async for note in conn.notifies():
                        if note.channel == QUEUED_CHANNEL:
                            self._wake_worker()
                        else:
                            waiter = self._waiters.get(int(note.payload))
                            if waiter is not None:
                                waiter.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers the gap; reconnect
                log.warning("stage_task_listener_failed", error=str(exc))
                await asyncio.sleep(RETRY_DELAY_S)

    def _wake_worker(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # every worker has a wake-up waiting already
            self._wake.put_nowait(None)

    # -- workers -----------------------------------------------------------------------------------
    async def _work(self) -> None:
        q = pg_queries()
        while not self._stopping:
            try:
                rows = await self.fetch(q.claim_task, {"node_id": self.node_id, "claim_s": self.claim_s,
                                                       "component_types": self.registry.names()})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be restarting
                log.warning("stage_task_claim_failed", node_id=self.node_id, error=str(exc))
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.get(), self.poll_s)
                continue
            self._wake_worker()
            row = rows[0]
            log.debug("stage_task_claimed", task_id=row[0], path=row[2])
            claim = _Claim(task_id=int(row[0]), run_id=str(row[1]), path=str(row[2]),
                           payload=json.loads(row[3]), attempt=int(row[4]), claims=int(row[5]))
            running = asyncio.create_task(self._execute(claim), name=f"stage task {claim.task_id}")
            self._running[claim.task_id] = (claim.claims, running)
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.done():
                    running.cancel()
                    raise
                # else withdrawn by the owner (see _renew): nothing to write
            except Exception as exc:  # noqa: BLE001 - the claim expires and another worker runs it
                log.warning("stage_task_failed_on_worker", task_id=claim.task_id, error=str(exc))
            finally:
                self._running.pop(claim.task_id, None)

    async def _execute(self, claim: _Claim) -> None:
        payload = claim.payload
        log_ = log.bind(run_id=claim.run_id, path=claim.path, task_id=claim.task_id, claim=claim.claims)
        try:
            stage = StageConfig.model_validate(payload["stage"])
            meta = self.registry.meta(stage.component_type)
            instance = self.registry.instance(stage.component_type)
        except (ComponentNotFoundError, ValidationError) as exc:
            # claim_task only hands out components this node has: what is left is a stage this
            # node's version cannot read. A clear failure, rather than a task bouncing between nodes.
            log_.warning("stage_task_unreadable", error=str(exc))
            now = time.time()
            stage_data = payload["stage"]
            failed = ComponentResult(
                stage_id=str(stage_data.get("id")), component_type=str(stage_data.get("component_type")),
                status=StageStatus.FAILED, error_type=ErrorType.CONFIGURATION, started_at=now, finished_at=now,
                error=f"node {self.node_id} cannot run this stage: {exc}")
            await self._finish(claim, {"result": failed.to_dict(), "node": self.node_id}, log_)
            return
        attempt_base = max(int(payload["attempt_base"]), claim.attempt)
        if claim.attempt > int(payload["attempt_base"]) and not meta.safe_to_repeat and not payload["force"]:
            # An earlier claim started it (that worker died or was cut off): not ours to repeat.
            await self._finish(claim, {"unsafe_to_repeat": claim.attempt}, log_)
            return
        try:
            model = meta.input_model.model_validate(payload["config"])
        except ValidationError as exc:
            now = time.time()
            result = ComponentResult(stage_id=stage.id, component_type=stage.component_type,
                                     status=StageStatus.FAILED, error=f"invalid config: {_pydantic_summary(exc)}",
                                     error_type=ErrorType.VALIDATION, started_at=now, finished_at=now)
        else:
            log_.debug("stage_task_started", attempt_base=attempt_base)
            try:
                result = await self.executor.execute(
                    run_id=claim.run_id, pipeline_id=str(payload["pipeline_id"]), path=claim.path, stage=stage,
                    meta=meta, instance=instance, input=model, cancellation=CancellationToken(),
                    store=_ClaimStore(self, claim), attempt_base=attempt_base,
                    variables=payload.get("variables") or {}, logger=log_)
            except FencedError:
                log_.warning("stage_task_claim_lost")
                return
        sink = self.executor.services.get(STAGE_LOGS)
        if sink is not None and hasattr(sink, "flush"):
            # The stage's output lines are in run_logs before its result can be committed.
            await sink.flush()
        await self._finish(claim, {"result": result.to_dict(), "node": self.node_id}, log_)

    async def _finish(self, claim: _Claim, result: dict[str, Any], log_: Any) -> None:
        rows = await self.fetch(pg_queries().finish_task, {
            "task_id": claim.task_id, "node_id": self.node_id, "claims": claim.claims,
            "result": json.dumps(result, default=str)})
        if rows:
            log_.debug("stage_task_finished", node_id=self.node_id)
        else:
            log_.warning("stage_task_result_refused", reason="the claim was lost or the task withdrawn")

    async def _renew(self) -> None:
        """Keep this node's claims alive; a task whose row is gone (withdrawn) or reclaimed is cancelled."""
        q = pg_queries()
        while not self._stopping:
            await asyncio.sleep(min(self.poll_s, self.claim_s / 3))
            held = {task_id: claims for task_id, (claims, _) in self._running.items()}
            if not held:
                continue
            try:
                rows = await self.fetch(q.renew_claims, {"node_id": self.node_id, "claim_s": self.claim_s,
                                                         "task_ids": list(held)})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - expired claims are re-run elsewhere anyway
                log.warning("stage_claim_renewal_failed", node_id=self.node_id, error=str(exc))
                continue
            kept = {int(r[0]): int(r[1]) for r in rows}
            for task_id, claims in held.items():
                entry = self._running.get(task_id)
                if kept.get(task_id) != claims and entry is not None and entry[0] == claims:
                    log.warning("stage_task_withdrawn", task_id=task_id, node_id=self.node_id)
                    entry[1].cancel()


def _payload(task: StageTask) -> str:
    return json.dumps({
        "pipeline_id": task.pipeline_id,
        "stage": task.stage.model_dump(mode="json", by_alias=True, exclude_none=True),
        "config": task.config, "variables": dict(task.variables), "attempt_base": task.attempt_base,
        "safe_to_repeat": task.safe_to_repeat, "force": task.force,
    }, default=str)


def _unsafe(stage: StageConfig, path: str, run_id: str, attempt: int) -> UnsafeToRepeatError:
    return UnsafeToRepeatError(
        f"stage '{stage.id}' ({stage.component_type}) was in flight when its worker or the run's owner "
        "stopped and is not safe to repeat; resume with force to run it again", stage=stage.id, path=path,
        attempt=attempt, run_id=run_id)
