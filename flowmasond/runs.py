"""The run manager: start, cancel, resume and recover runs against the journal, under a concurrency limit.

Every run the daemon executes goes through here, so this is where a run's journal status is decided:
``pending`` until a slot frees, ``running`` while the engine works, then what the engine reports.
A run stopped by daemon shutdown is ``interrupted`` (it resumes on the next start), never ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal, Sequence

import structlog

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.dag import DAGExecutor, RunOutcome, RunState, new_run_id
from flowmasond.engine.hooks import ExecutionHooks
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.types import RunStatus
from flowmasond.environment import AllowedEnvironment
from flowmasond.errors import (
    DefinitionChangedError,
    FlowmasonError,
    InvalidStateError,
    JournalError,
    PipelineNotFoundError,
    RunNotFoundError,
    ShuttingDownError,
    StageError,
)

if TYPE_CHECKING:
    from flowmasond.config import DaemonConfig
    from flowmasond.engine.registry import ComponentRegistry
    from flowmasond.journal import Journal
    from flowmasond.pipelines.catalog import PipelineCatalog

log = structlog.get_logger("flowmasond.runs")

SHUTDOWN = "daemon shutting down"
# Interrupted runs with these error codes wait for an operator instead of resuming on start.
NEEDS_OPERATOR = frozenset({"unsafe_to_repeat", "recovery_exhausted"})


@dataclass(slots=True)
class ActiveRun:
    """A run this process is executing (or about to)."""

    run_id: str
    pipeline_id: str
    token: CancellationToken
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    schedule_id: str | None = None
    running: bool = False  # holds a concurrency slot (False: queued)
    stopped_now: bool = False  # its task was cancelled by a second stop signal


class _Notifier(ExecutionHooks):
    """Wakes event followers whenever a run changes."""

    def __init__(self, manager: RunManager) -> None:
        self.manager = manager

    async def on_stage_start(self, run_id: str, *args: Any) -> None:
        self.manager.notify()

    async def on_stage_complete(self, run_id: str, *args: Any) -> None:
        self.manager.notify()

    async def on_stage_skipped(self, run_id: str, *args: Any) -> None:
        self.manager.notify()

    async def on_stage_retry(self, run_id: str, *args: Any) -> None:
        self.manager.notify()


def definition_diff(old: PipelineConfig, new: PipelineConfig) -> list[dict[str, Any]]:
    """Per-stage differences between two definitions of a pipeline."""
    before = {s.id: s.model_dump(mode="json", by_alias=True) for s in old.stages}
    after = {s.id: s.model_dump(mode="json", by_alias=True) for s in new.stages}
    diff: list[dict[str, Any]] = []
    for sid in sorted(before.keys() | after.keys()):
        if sid not in after:
            diff.append({"stage": sid, "change": "removed"})
        elif sid not in before:
            diff.append({"stage": sid, "change": "added"})
        elif before[sid] != after[sid]:
            fields = sorted(k for k in before[sid].keys() | after[sid].keys() if before[sid].get(k) != after[sid].get(k))
            diff.append({"stage": sid, "change": "modified", "fields": fields})
    top_old = old.model_dump(mode="json", exclude={"stages"})
    top_new = new.model_dump(mode="json", exclude={"stages"})
    changed_top = sorted(k for k in top_old.keys() | top_new.keys() if top_old.get(k) != top_new.get(k))
    if changed_top:
        diff.append({"stage": None, "change": "modified", "fields": changed_top})
    return diff


class RunManager:
    """Owns every run of the daemon: the queue, the concurrency limit, recovery and shutdown."""

    def __init__(self, *, journal: Journal, catalog: PipelineCatalog, registry: ComponentRegistry,
                 config: DaemonConfig, services: dict[str, Any] | None = None,
                 hooks: list[ExecutionHooks] | None = None) -> None:
        self.journal = journal
        self.catalog = catalog
        self.config = config
        self.executor = DAGExecutor(registry, hooks=[_Notifier(self), *(hooks or [])],
                                    max_concurrency=config.max_concurrency, pipelines=catalog.get,
                                    child_runner=self._run_child, services=services,
                                    env=AllowedEnvironment(config.env_allow))
        self._slots = asyncio.Semaphore(config.max_concurrent_runs)
        self._active: dict[str, ActiveRun] = {}
        self._accepting = True
        # Replaced on every change so that waiters never miss a wake-up and setting it costs nothing.
        self._changed = asyncio.Event()

    # -- queries ----------------------------------------------------------------------------------
    @property
    def active(self) -> dict[str, ActiveRun]:
        return dict(self._active)

    def counts(self) -> dict[str, int]:
        """Runs executing and runs waiting for a slot."""
        running = sum(1 for a in self._active.values() if a.running)
        return {"active": len(self._active), "running": running, "queued": len(self._active) - running}

    def notify(self) -> None:
        """Wake followers (cheap; called on every stage event)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, timeout: float) -> None:
        """Sleep until something about some run changes, or ``timeout`` passes."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def find(self, run_id: str) -> Any:
        """The journal row of ``run_id``, or None."""
        try:
            return await self.journal.get_run(run_id)
        except RunNotFoundError:
            return None

    # -- start / cancel / resume -------------------------------------------------------------------
    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDownError("the daemon is shutting down and accepts no new runs")

    async def start(self, pipeline_id: str, inputs: dict[str, Any] | None = None, *,
                    schedule_id: str | None = None, fire_time: float | None = None,
                    run_id: str | None = None, after: Sequence[str] = ()) -> str:
        """Create a run of the current definition of ``pipeline_id`` and queue it; returns its id.

        ``after``: runs this one waits for (until they finish) before it takes a concurrency slot;
        the scheduler uses it for the ``queue`` and ``cancel_previous`` overlap policies.
        """
        self._check_accepting()
        pipeline = self.catalog.get(pipeline_id)
        inputs = dict(inputs or {})
        if pipeline.input_schema:
            from flowmasond.components.operators.schema import validate_json_schema

            problems = validate_json_schema(inputs, pipeline.input_schema)
            if problems:
                raise StageError("inputs do not match the pipeline's input_schema: " + "; ".join(problems),
                                 error_type="VALIDATION", pipeline_id=pipeline_id)
        run_id = run_id or new_run_id()
        await self.journal.create_run(run_id, pipeline, inputs, schedule_id=schedule_id, fire_time=fire_time)
        log.info("run_created", run_id=run_id, pipeline_id=pipeline_id, schedule_id=schedule_id)
        self._launch(run_id, pipeline, inputs, snapshot=None, schedule_id=schedule_id, after=after)
        self.notify()
        return run_id

    def _launch(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any], *, snapshot: Any,
                force: bool = False, schedule_id: str | None = None, after: Sequence[str] = ()) -> ActiveRun:
        active = ActiveRun(run_id=run_id, pipeline_id=pipeline.id,
                           token=CancellationToken(grace_s=self.config.cancel_grace_s), schedule_id=schedule_id)
        previous = [a.task for rid in after if (a := self._active.get(rid)) is not None and a.task is not None]
        self._active[run_id] = active
        active.task = asyncio.create_task(self._drive(active, pipeline, inputs, snapshot, force, previous),
                                          name=f"run {run_id}")
        return active

    async def _drive(self, active: ActiveRun, pipeline: PipelineConfig, inputs: dict[str, Any],
                     snapshot: Any, force: bool, previous: Sequence[asyncio.Task[None]] = ()) -> None:
        run_id = active.run_id
        bound = log.bind(run_id=run_id, pipeline_id=pipeline.id)
        try:
            if previous:
                await _finished_or_cancelled(previous, active.token)
            async with self._slot(active):
                if active.token.cancelled:
                    status = RunStatus.INTERRUPTED if active.token.reason == SHUTDOWN else RunStatus.CANCELLED
                    await self.journal.set_run_status(run_id, status, error={
                        "code": "run_cancelled", "message": f"{active.token.reason} before the run started"})
                    return
                active.running = True
                await self.journal.set_run_status(run_id, RunStatus.RUNNING)
                self.notify()
                bound.info("run_started")
                outcome = await self.executor.execute(
                    pipeline, inputs, run_id=run_id, store=self.journal.run_store(run_id), snapshot=snapshot,
                    cancellation=active.token, force=force)
                status = outcome.status
                if status is RunStatus.CANCELLED and active.token.reason == SHUTDOWN:
                    status = RunStatus.INTERRUPTED
                await self.journal.set_run_status(run_id, status, output=outcome.output, error=outcome.error)
                bound.info("run_finished", status=status.value,
                           error=(outcome.error or {}).get("message"), failed_path=outcome.failed_path)
        except asyncio.CancelledError:
            if not active.stopped_now:
                raise
            # A second stop signal abandoned the in-flight stages; what was committed stands, and the
            # run resumes on the next start like any other interrupted run.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            try:
                await self.journal.set_run_status(run_id, RunStatus.INTERRUPTED, error={
                    "code": "daemon_stopped", "message": "the daemon was stopped at once while this run was executing"})
                bound.info("run_finished", status=RunStatus.INTERRUPTED.value, error="stopped at once")
            except Exception:  # noqa: BLE001 - left 'running': recovered on the next start
                bound.exception("run_status_not_journaled")
        except JournalError as exc:
            # The journal refused even the status change (disk full?): the run stays 'running' on disk
            # and is recovered — resumed from its last committed stage — on the next start.
            bound.error("run_status_not_journaled", error=str(exc))
        except Exception:  # noqa: BLE001 - a run must never take the daemon down
            bound.exception("run_crashed")
            try:
                await self.journal.set_run_status(run_id, RunStatus.FAILED, error={
                    "code": "internal_error", "message": "internal error in flowmasond; see the daemon log"})
            except Exception:  # noqa: BLE001
                bound.exception("run_status_not_journaled")
        finally:
            self._active.pop(run_id, None)
            self.notify()

    @contextlib.asynccontextmanager
    async def _slot(self, active: ActiveRun) -> AsyncIterator[None]:
        """Hold a concurrency slot; a run cancelled while queued enters at once, holding none.

        Waiting on the semaphore alone would leave a cancelled queued run ``pending`` (and its
        followers waiting) until some other run finished.
        """
        acquire = asyncio.ensure_future(self._slots.acquire())
        stop = asyncio.ensure_future(active.token.wait())
        held = False
        try:
            try:
                await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                acquire.cancel()  # a no-op once acquired
                # Settle it: cancelled after a wake-up, the semaphore hands the slot on by itself.
                await asyncio.wait({acquire})
                held = not acquire.cancelled()
            yield
        finally:
            if held:
                self._slots.release()

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Ask a run to stop: no new stage starts; in-flight stages get the cancel grace period."""
        active = self._active.get(run_id)
        if active is None:
            row = await self.find(run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
            raise InvalidStateError(f"run is {row.status.value}, not running", run_id=run_id,
                                    status=row.status.value)
        active.token.cancel("cancelled by request")
        log.info("run_cancel_requested", run_id=run_id)
        return {"run_id": run_id, "cancelling": True}

    async def resume(self, run_id: str, *, force: bool = False,
                     definition: Literal["pinned", "current"] | None = None) -> str:
        """Continue a failed, cancelled or interrupted run from its last committed stage.

        If the pipeline file changed since the run started, the caller must choose: ``pinned`` (the
        definition the run started with) or ``current``; otherwise the per-stage diff is returned
        as a ``DefinitionChangedError``.
        """
        self._check_accepting()
        row = await self.find(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        if row.parent_run_id:
            raise InvalidStateError(f"run {run_id} is a child run; resume its parent {row.parent_run_id}",
                                    run_id=run_id, parent_run_id=row.parent_run_id)
        if run_id in self._active:
            raise InvalidStateError("run is already executing", run_id=run_id)
        # 'running' on disk but not executing here: its final status could not be journaled (disk
        # full) or the daemon that ran it died; either way it is interrupted, so it may resume.
        stale = row.status in (RunStatus.RUNNING, RunStatus.PENDING)
        if not (row.status.resumable or stale):
            raise InvalidStateError(f"run is {row.status.value}; only failed, cancelled and interrupted runs resume",
                                    run_id=run_id, status=row.status.value)
        try:
            current = self.catalog.get(row.pipeline_id)
        except PipelineNotFoundError:
            current = None
        # The catalog's object when it is the pinned definition: no JSON parse, and the executor's
        # plan for it is already cached.
        pinned = await self._pinned(row, current)
        pipeline = pinned
        if current is not None and current.content_hash() != pinned.content_hash():
            if definition is None:
                raise DefinitionChangedError(
                    f"pipeline '{pinned.id}' changed since run {run_id} started; resume with the pinned "
                    "definition (--pinned) or the current one (--accept-changed)",
                    run_id=run_id, pipeline_id=pinned.id, diff=definition_diff(pinned, current))
            if definition == "current":
                pipeline = current
        snapshot = (await self.journal.load_snapshot(run_id)).for_resume()
        await self.journal.record_resume(run_id, pipeline=pipeline if pipeline is not pinned else None)
        log.info("run_resumed", run_id=run_id, committed=len(snapshot.results), force=force,
                 definition=definition or "pinned")
        self._launch(run_id, pipeline, row.inputs, snapshot=snapshot, force=force, schedule_id=row.schedule_id)
        self.notify()
        return run_id

    async def _pinned(self, row: Any, current: PipelineConfig | None = None) -> PipelineConfig:
        """The definition ``row`` is pinned to; the catalog's own object when it is that definition
        (no JSON parse, and the executor's plan for it is already cached)."""
        if current is None:
            try:
                current = self.catalog.get(row.pipeline_id)
            except PipelineNotFoundError:
                current = None
        if current is not None and current.content_hash() == row.pipeline_hash:
            return current
        return await self.journal.pinned_definition(row.run_id)

    # -- subpipelines --------------------------------------------------------------------------------
    async def _run_child(self, parent: RunState, path: str, child_run_id: str, pipeline_id: str,
                         inputs: dict[str, Any]) -> RunOutcome:
        row = await self.find(child_run_id)
        snapshot = None
        if row is None:
            pipeline = self.catalog.get(pipeline_id)
            await self.journal.create_run(child_run_id, pipeline, inputs, parent_run_id=parent.run_id,
                                          parent_path=path)
        else:
            if row.status is RunStatus.SUCCEEDED:
                return RunOutcome(run_id=child_run_id, pipeline_id=row.pipeline_id, status=row.status,
                                  output=row.output)
            pipeline = await self._pinned(row)
            inputs = row.inputs
            snapshot = (await self.journal.load_snapshot(child_run_id)).for_resume()
            await self.journal.record_resume(child_run_id)
        await self.journal.set_run_status(child_run_id, RunStatus.RUNNING)
        outcome = await self.executor.execute(pipeline, inputs, run_id=child_run_id,
                                              store=self.journal.run_store(child_run_id), snapshot=snapshot,
                                              cancellation=parent.cancellation, force=parent.force,
                                              depth=parent.depth + 1)
        status = outcome.status
        if status is RunStatus.CANCELLED and parent.cancellation.reason == SHUTDOWN:
            status = RunStatus.INTERRUPTED
        await self.journal.set_run_status(child_run_id, status, output=outcome.output, error=outcome.error)
        return outcome

    # -- recovery and shutdown ---------------------------------------------------------------------
    async def recover(self) -> dict[str, list[str]]:
        """On start: runs left running by a crash are interrupted, and resumed when recovery is auto.

        A run found ``running`` counts a recovery attempt; past ``max_recovery_attempts`` (it kills the
        daemon every time) it is failed with a reason instead of resumed again.
        """
        report: dict[str, list[str]] = {"resumed": [], "failed": [], "interrupted": []}
        for row in await self._all_runs([RunStatus.RUNNING, RunStatus.PENDING]):
            if row.parent_run_id:
                # Children resume through their parent's subpipeline stage.
                await self.journal.set_run_status(row.run_id, RunStatus.INTERRUPTED, error={
                    "code": "daemon_stopped", "message": "the daemon stopped while this child run was executing"})
                continue
            crashed = row.status is RunStatus.RUNNING
            attempts = await self.journal.increment_recovery_attempts(row.run_id) if crashed else 0
            if attempts > self.config.max_recovery_attempts:
                error = {"code": "recovery_exhausted",
                         "message": f"the daemon stopped {attempts} times while this run was executing; "
                                    "not resumed again automatically (resume it by hand once the cause is fixed)",
                         "context": {"recovery_attempts": attempts}}
                await self.journal.set_run_status(row.run_id, RunStatus.FAILED, error=error)
                log.error("run_recovery_exhausted", run_id=row.run_id, attempts=attempts)
                report["failed"].append(row.run_id)
                continue
            await self.journal.set_run_status(row.run_id, RunStatus.INTERRUPTED, error={
                "code": "daemon_stopped", "message": "the daemon stopped while this run was executing"})
            report["interrupted"].append(row.run_id)
        if self.config.recovery == "auto":
            for row in await self._all_runs([RunStatus.INTERRUPTED]):
                if row.parent_run_id:
                    continue
                code = (row.error or {}).get("code") if isinstance(row.error, dict) else None
                if code in NEEDS_OPERATOR:
                    continue
                try:
                    await self.resume(row.run_id, definition="pinned")
                    report["resumed"].append(row.run_id)
                except FlowmasonError as exc:
                    log.error("run_recovery_failed", run_id=row.run_id, error=str(exc))
        if any(report.values()):
            log.info("recovery", **{k: len(v) for k, v in report.items()})
        return report

    async def _all_runs(self, statuses: list[RunStatus]) -> list[Any]:
        rows: list[Any] = []
        while True:
            page = await self.journal.list_runs(status=statuses, limit=500, offset=len(rows))
            rows.extend(page)
            if len(page) < 500:
                return rows

    async def shutdown(self, grace_s: float) -> dict[str, int]:
        """Stop intake; in-flight stages get ``grace_s`` to finish; the rest is interrupted."""
        self._accepting = False
        active = list(self._active.values())
        for run in active:
            run.token.cancel(SHUTDOWN, grace_s=grace_s, interrupt=True)
        tasks = [r.task for r in active if r.task is not None]
        if tasks:
            # Grace for the stages plus a margin for the final status commits.
            await asyncio.wait(tasks, timeout=grace_s + 10.0)
        leftover = [t for t in tasks if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)
        summary = {"runs_stopped": len(active), "forced": len(leftover)}
        log.info("runs_stopped", **summary)
        return summary

    def stop_now(self) -> None:
        """A second signal: cancel every in-flight stage at once (committed results are kept)."""
        self._accepting = False
        for run in self._active.values():
            run.token.cancel(SHUTDOWN, grace_s=0.0, interrupt=True)
            # The engine read the grace when it began draining, so lowering it changes nothing for a
            # drain already waiting: cancelling the run's task is what ends that wait.
            run.stopped_now = True
            if run.task is not None:
                run.task.cancel()

    # -- events ------------------------------------------------------------------------------------
    async def follow(self, run_id: str, after_id: int = 0, *, follow: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Yield the run's journal events, then (with ``follow``) new ones until the run finishes."""
        await self.journal.get_run(run_id)  # RunNotFoundError for an unknown run
        cursor = after_id
        finished = False
        while True:
            batch = await self.journal.events(run_id, after_id=cursor)
            for event in batch:
                cursor = max(cursor, event.id)
                yield event_dict(event)
            if batch:
                continue  # a read returns one page: read until nothing is left, never stop at a page
            if not follow or finished:
                return
            row = await self.journal.get_run(run_id)
            if row.status.finished and run_id not in self._active:
                finished = True  # one more read: events committed together with the final status
                continue
            await self.wait_changed(timeout=0.5)


async def _finished_or_cancelled(tasks: Sequence[asyncio.Task[None]], token: CancellationToken) -> None:
    """Wait until every task of ``tasks`` is done, or ``token`` is cancelled."""
    cancelled = asyncio.ensure_future(token.wait())
    try:
        pending: set[asyncio.Future[Any]] = set(tasks)
        while pending and not token.cancelled:
            _, pending = await asyncio.wait(pending | {cancelled}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(cancelled)
    finally:
        cancelled.cancel()


def event_dict(event: Any) -> dict[str, Any]:
    """A journal event in the protocol's RunEvent shape."""
    return {"id": event.id, "run_id": event.run_id, "kind": event.kind, "stage_id": event.path,
            "path": event.path, "at": event.ts, "data": event.data}
