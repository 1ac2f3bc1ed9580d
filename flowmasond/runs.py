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
from typing import TYPE_CHECKING, Any, Literal, Protocol
from collections.abc import AsyncIterator, Sequence

import structlog

from flowmasond.breakpoints import BreakpointGate, RunBreaks
from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.dag import DAGExecutor, RunOutcome, ExecutingRun, new_run_id
from flowmasond.engine.interfaces import ExecutionHooks, RunSnapshot, RunStatus
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.stage_logs import STAGE_LOGS
from flowmasond.environment import AllowedEnvironment
from flowmasond.errors import (
    DefinitionChangedError,
    FlowmasonError,
    InvalidStateError,
    JournalError,
    PipelineNotFoundError,
    RunConflictError,
    RunNotFoundError,
    ShuttingDownError,
    StageError,
    StageNotFoundError,
)
from flowmasond.logstore import StageLogStore
from flowmasond.runs_fork import fork_plan

if TYPE_CHECKING:
    from flowmasond.config import DaemonConfig
    from flowmasond.engine.registry import ComponentRegistry
    from flowmasond.journal import Journal
    from flowmasond.journal.rows import RunRow
    from flowmasond.pipelines.catalog import PipelineCatalog

log = structlog.get_logger("flowmasond.runs")

SHUTDOWN = "daemon shutting down"
# Interrupted runs with these error codes wait for an operator instead of resuming on start.
NEEDS_OPERATOR = frozenset({"unsafe_to_repeat", "recovery_exhausted"})

# Statuses a resume may claim a run from: the resumable ones, and 'running'/'pending' left on disk
# by a daemon that died or could not journal the final status (only when not executing here; the
# journal's owner lock makes this process the only one that could be executing it).
RESUME_FROM = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.RUNNING,
               RunStatus.PENDING)
# A child run is driven by its parent's subpipeline stage only; anything but success re-runs.
CHILD_RESUME_FROM = RESUME_FROM
ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)
# After the shutdown grace, how long runs get to journal their final status before their tasks
# are cancelled (a stage that ignores cancellation would otherwise hold the stop forever).
SHUTDOWN_STATUS_MARGIN_S = 10.0
# How often a queued run polls the journal for the runs it waits for on other nodes.
ELSEWHERE_POLL_S = 0.25


class RunOwnership(Protocol):
    """Who may execute a run when several nodes share the journal (``flowmasond.cluster``).

    ``acquire`` before the first write that starts, resumes or cancels a run here (raising
    ``RunConflictError`` when another node executes it); ``release`` once this node is done with
    it; ``forward`` passes a request (``cancel``, ``terminate``, ``continue``, ``step``) to the node
    executing the run and returns that node's id (None: no other node executes it). Without one
    (a single daemon) the journal's owner lock makes this process the only owner.
    """

    async def acquire(self, run_id: str) -> None: ...

    async def release(self, run_id: str) -> None: ...

    async def forward(self, run_id: str, kind: str) -> str | None: ...


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
    breaks: RunBreaks = field(default_factory=RunBreaks)
    lease_lost: bool = False  # another node owns it now: stopped here without writing anything


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
            keys = before[sid].keys() | after[sid].keys()
            fields = sorted(k for k in keys if before[sid].get(k) != after[sid].get(k))
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
                 hooks: list[ExecutionHooks] | None = None, ownership: RunOwnership | None = None) -> None:
        self.journal = journal
        self.ownership = ownership
        self.catalog = catalog
        self.config = config
        self.stage_logs = StageLogStore(journal, max_bytes=config.stage_log_max_bytes, on_flush=self.notify)
        self.executor = DAGExecutor(registry, hooks=[_Notifier(self), *(hooks or [])],
                                    max_concurrency=config.max_concurrency, pipelines=catalog.get,
                                    child_runner=self._run_child,
                                    services={**(services or {}), STAGE_LOGS: self.stage_logs},
                                    env=AllowedEnvironment(config.env_allow), stage_gate=BreakpointGate(self))
        self._slots = asyncio.Semaphore(config.max_concurrent_runs)
        self._active: dict[str, ActiveRun] = {}
        # Runs a resume has reserved but not launched yet: the reservation is taken before the
        # resume's first await, so a second resume (or a cancel) of the same run sees it.
        self._claiming: set[str] = set()
        # Runs created by start() in this process and not executed yet: their first execution is
        # known without reading the journal (first_execution).
        self._created: set[str] = set()
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

    @property
    def accepting(self) -> bool:
        """False once shutdown began (no new run is started or claimed)."""
        return self._accepting

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

    async def first_execution(self, run_id: str) -> bool:
        """True when ``run_id`` never executed before (the tracer's root span, not a resume's).

        A run this process has just created is known without a journal read (one per run start
        otherwise, ~5% of the loop when 1,000 schedules fire together); any other is decided by
        its journal row: never resumed, never recovered.
        """
        if run_id in self._created:
            self._created.discard(run_id)
            return True
        row = await self.journal.get_run(run_id)
        return not row.resumed_count and not row.recovery_attempts

    def breaks_of(self, run_id: str) -> RunBreaks | None:
        """The breakpoints of ``run_id`` while this process executes it."""
        active = self._active.get(run_id)
        return active.breaks if active is not None else None

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
                    run_id: str | None = None, after: Sequence[str] = (),
                    break_at: Sequence[str] = ()) -> str:
        """Create a run of the current definition of ``pipeline_id`` and queue it; returns its id.

        ``after``: runs this one waits for (until they finish) before it takes a concurrency slot;
        the scheduler uses it for the ``queue`` and ``cancel_previous`` overlap policies.
        """
        row = await self.start_run(pipeline_id, inputs, schedule_id=schedule_id, fire_time=fire_time,
                                   run_id=run_id, after=after, break_at=break_at)
        return row.run_id

    async def start_run(self, pipeline_id: str, inputs: dict[str, Any] | None = None, *,
                        schedule_id: str | None = None, fire_time: float | None = None,
                        run_id: str | None = None, after: Sequence[str] = (),
                        break_at: Sequence[str] = ()) -> RunRow:
        """``start``, returning the run's journal row as created (``running`` when a slot was free)."""
        self._check_accepting()
        pipeline = self.catalog.get(pipeline_id)
        inputs = dict(inputs or {})
        check_inputs(pipeline, inputs)
        check_stages(pipeline, break_at, run_id=run_id)
        run_id = run_id or new_run_id()
        # With a concurrency slot free now, the run takes it before its first await and is created
        # already running: one commit instead of two (created, then marked running by _drive).
        slot = not after and await self._free_slot()
        try:
            await self._acquire(run_id)  # first: the creation itself is fenced
            try:
                row = await self.journal.create_run(run_id, pipeline, inputs, schedule_id=schedule_id,
                                                    fire_time=fire_time, breakpoints=break_at, start=slot)
            except BaseException:
                await self._release(run_id)
                raise
        except BaseException:
            if slot:
                self._slots.release()
            raise
        self._created.add(run_id)
        log.info("run_created", run_id=run_id, pipeline_id=pipeline_id, schedule_id=schedule_id,
                 status=row.status.value)
        self._launch(run_id, pipeline, inputs, snapshot=None, schedule_id=schedule_id, after=after,
                     breaks=RunBreaks(breakpoints=set(break_at)), running=slot)
        self.notify()
        return row

    async def _claim_for_resume(self, run_id: str, *, expected: Sequence[RunStatus],
                                pipeline: PipelineConfig | None = None, start: bool = False) -> RunSnapshot:
        """Claim ``run_id`` for a resume (``Journal.record_resume``) and return its snapshot.

        The snapshot is read and decoded while the claim's commit waits for its fsync: the two
        overlap instead of adding up (the run is not executing, so nothing adds records meanwhile).
        ``start``: the claim also marks the run ``running`` (it holds a slot already). If the claim
        succeeded but the read failed, the run is left ``interrupted`` with that error, to be
        resumed again, rather than ``pending`` with nothing executing it.
        """
        loaded, claimed = await asyncio.gather(
            self.journal.load_snapshot(run_id),
            self.journal.record_resume(run_id, expected=expected, pipeline=pipeline, start=start),
            return_exceptions=True)
        if isinstance(claimed, BaseException):
            raise claimed
        if isinstance(loaded, BaseException):
            error = loaded.to_dict() if isinstance(loaded, FlowmasonError) else {
                "code": "internal_error", "message": str(loaded)}
            await self.journal.set_run_status(run_id, RunStatus.INTERRUPTED,
                                              expected=[RunStatus.RUNNING if start else RunStatus.PENDING],
                                              error=error)
            raise loaded
        return loaded.for_resume()

    async def _free_slot(self) -> bool:
        """Take a concurrency slot if one is free right now (no wait); the caller releases it."""
        # Semaphore.acquire does not wait when the semaphore is not locked.
        if self._slots.locked():
            return False
        await self._slots.acquire()
        return True

    def _launch(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any], *, snapshot: Any,
                force: bool = False, schedule_id: str | None = None, after: Sequence[str] = (),
                breaks: RunBreaks | None = None, running: bool = False) -> ActiveRun:
        """Execute the run in a task of its own; ``running``: it already holds a slot and is
        ``running`` in the journal (``start_run``)."""
        active = ActiveRun(run_id=run_id, pipeline_id=pipeline.id,
                           token=CancellationToken(grace_s=self.config.cancel_grace_s), schedule_id=schedule_id,
                           breaks=breaks or RunBreaks(), running=running)
        previous = [a.task for rid in after if (a := self._active.get(rid)) is not None and a.task is not None]
        # With several nodes a run to wait for may execute on another one: its status is followed
        # in the journal (a single daemon executes every active run itself).
        elsewhere = [rid for rid in after if rid not in self._active] if self.ownership is not None else []
        self._active[run_id] = active
        active.task = asyncio.create_task(self._drive(active, pipeline, inputs, snapshot, force, previous,
                                                      elsewhere), name=f"run {run_id}")
        return active

    async def _drive(self, active: ActiveRun, pipeline: PipelineConfig, inputs: dict[str, Any],
                     snapshot: Any, force: bool, previous: Sequence[asyncio.Task[None]] = (),
                     elsewhere: Sequence[str] = ()) -> None:
        run_id = active.run_id
        bound = log.bind(run_id=run_id, pipeline_id=pipeline.id)
        try:
            if previous:
                await _finished_or_cancelled(previous, active.token)
            if elsewhere:
                await _finished_elsewhere(self.journal, elsewhere, active.token)
            started = active.running  # created running, holding its slot (start_run)
            async with self._slot(active, held=started):
                if active.token.cancelled:
                    status = RunStatus.INTERRUPTED if active.token.reason == SHUTDOWN else RunStatus.CANCELLED
                    await self.journal.set_run_status(
                        run_id, status, expected=[RunStatus.RUNNING if started else RunStatus.PENDING], error={
                            "code": "run_cancelled", "message": f"{active.token.reason} before the run started"})
                    return
                if not started:
                    active.running = True
                    await self.journal.set_run_status(run_id, RunStatus.RUNNING, expected=[RunStatus.PENDING])
                    self.notify()
                    bound.info("run_started")
                else:
                    # Created running: its run_created line said so already. Two lines per run
                    # (created, finished) at info, not three: each costs 15-20 µs to render.
                    bound.debug("run_started")
                outcome = await self.executor.execute(
                    pipeline, inputs, run_id=run_id, store=self.journal.run_store(run_id), snapshot=snapshot,
                    cancellation=active.token, force=force)
                status = outcome.status
                error = outcome.error
                if status is RunStatus.CANCELLED and active.token.reason == SHUTDOWN:
                    status = RunStatus.INTERRUPTED
                    if active.breaks.stopped_while_paused:
                        # Stopped at a breakpoint: it stays paused across the restart.
                        status, error = RunStatus.PAUSED, None
                await self.journal.set_run_status(run_id, status, expected=[RunStatus.RUNNING, RunStatus.PAUSED],
                                                  output=outcome.output, error=error)
                bound.info("run_finished", status=status.value,
                           error=(error or {}).get("message"), failed_path=outcome.failed_path)
        except asyncio.CancelledError:
            if not active.stopped_now:
                raise
            if active.lease_lost:
                # Another node owns the run now: nothing more is written from here (the fence
                # would refuse it anyway); it resumes there from the journal.
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                bound.warning("run_abandoned", reason=active.token.reason)
                return
            # A second stop signal, or a shutdown whose grace ran out, abandoned the in-flight
            # stages; what was committed stands, and the run resumes on the next start like any
            # other interrupted run.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            try:
                await self.journal.set_run_status(
                    run_id, RunStatus.INTERRUPTED, expected=(*ACTIVE, RunStatus.PAUSED), error={
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
                await self.journal.set_run_status(
                    run_id, RunStatus.FAILED, expected=(*ACTIVE, RunStatus.PAUSED), error={
                    "code": "internal_error", "message": "internal error in flowmasond; see the daemon log"})
            except Exception:  # noqa: BLE001
                bound.exception("run_status_not_journaled")
        finally:
            self._active.pop(run_id, None)
            self._created.discard(run_id)
            self.stage_logs.forget(run_id)
            if self.ownership is not None and not active.lease_lost:
                await self.ownership.release(run_id)
            self.notify()

    @contextlib.asynccontextmanager
    async def _slot(self, active: ActiveRun, *, held: bool = False) -> AsyncIterator[None]:
        """Hold a concurrency slot; a run cancelled while queued enters at once, holding none.

        Waiting on the semaphore alone would leave a cancelled queued run ``pending`` (and its
        followers waiting) until some other run finished. ``held``: the slot was taken already
        (``start_run``); it is only released here.
        """
        if held:
            try:
                yield
            finally:
                self._slots.release()
            return
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

    async def cancel(self, run_id: str, *, now: bool = False, local_only: bool = False) -> dict[str, Any]:
        """Ask a run to stop: no new stage starts; in-flight stages get the cancel grace period.

        ``now`` (``terminate``): no grace, in-flight stages are killed at once. A run paused across
        a restart (not executing here) is cancelled in the journal directly. A run another node
        executes is asked through the database (``RunOwnership.forward``) unless
        ``local_only`` (that node taking such a request).
        """
        active = self._active.get(run_id)
        if active is None:
            if run_id in self._claiming:
                raise RunConflictError("the run is being resumed right now; cancel it once it runs",
                                       run_id=run_id)
            row = await self.find(run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
            if self.ownership is not None and not local_only and row.status in (*ACTIVE, RunStatus.PAUSED):
                owner = await self.ownership.forward(run_id, "terminate" if now else "cancel")
                if owner is not None:
                    return {"run_id": run_id, "cancelling": True, "node": owner}
            if row.status is RunStatus.PAUSED:
                await self._acquire(run_id)
                try:
                    await self.journal.set_run_status(run_id, RunStatus.CANCELLED, expected=[RunStatus.PAUSED],
                                                      error={"code": "run_cancelled",
                                                             "message": "cancelled by request while paused"})
                finally:
                    await self._release(run_id)
                self.notify()
                return {"run_id": run_id, "cancelling": False}
            raise InvalidStateError(f"run is {row.status.value}, not running", run_id=run_id,
                                    status=row.status.value)
        if active.token.cancelled:
            # Checked and set with no await in between: of two racing cancels exactly one wins.
            raise RunConflictError(f"the run is already stopping ({active.token.reason})", run_id=run_id,
                                   reason=active.token.reason)
        if now:
            active.token.cancel("terminated by request", grace_s=0.0)
        else:
            active.token.cancel("cancelled by request")
        log.info("run_cancel_requested", run_id=run_id, now=now)
        return {"run_id": run_id, "cancelling": True}

    async def resume(self, run_id: str, *, force: bool = False,
                     definition: Literal["pinned", "current"] | None = None) -> str:
        """Continue a failed, cancelled or interrupted run from its last committed stage.

        If the pipeline file changed since the run started, the caller must choose: ``pinned`` (the
        definition the run started with) or ``current``; otherwise the per-stage diff is returned
        as a ``DefinitionChangedError``.
        """
        self._check_accepting()
        # Reserve the run before the first await: the check and the reservation cannot be split
        # by another resume or cancel of the same run (in this process; the journal's owner lock
        # rules out other processes, and the SQL claim below is conditional anyway).
        if run_id in self._active or run_id in self._claiming:
            raise RunConflictError("run is already executing (or another resume of it is starting)",
                                   run_id=run_id)
        self._claiming.add(run_id)
        try:
            return await self._resume_claimed(run_id, force=force, definition=definition)
        finally:
            self._claiming.discard(run_id)

    async def _resume_claimed(self, run_id: str, *, force: bool,
                              definition: Literal["pinned", "current"] | None) -> str:
        row = await self.find(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        if row.parent_run_id:
            raise InvalidStateError(f"run {run_id} is a child run; resume its parent {row.parent_run_id}",
                                    run_id=run_id, parent_run_id=row.parent_run_id)
        # 'running' on disk but not executing here: its final status could not be journaled (disk
        # full) or the daemon that ran it died; either way it is interrupted, so it may resume.
        if row.status not in RESUME_FROM:
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
        # With a slot free now the claim marks the run running too: one commit instead of two.
        slot = await self._free_slot()
        try:
            await self._acquire(run_id)
            # The claim: a conditional UPDATE from the status read above. Anything that changed
            # the run in between makes it fail with RunConflictError instead of launching it twice.
            try:
                snapshot = await self._claim_for_resume(run_id, expected=[row.status], start=slot,
                                                        pipeline=pipeline if pipeline is not pinned else None)
            except BaseException:
                await self._release(run_id)
                raise
        except BaseException:
            if slot:
                self._slots.release()
            raise
        log.info("run_resumed", run_id=run_id, committed=len(snapshot.results), force=force,
                 definition=definition or "pinned")
        self._launch(run_id, pipeline, row.inputs, snapshot=snapshot, force=force, schedule_id=row.schedule_id,
                     breaks=RunBreaks(breakpoints=set(row.breakpoints), stepping=row.stepping), running=slot)
        self.notify()
        return run_id

    async def _acquire(self, run_id: str) -> None:
        if self.ownership is not None:
            await self.ownership.acquire(run_id)

    async def _release(self, run_id: str) -> None:
        if self.ownership is not None:
            await self.ownership.release(run_id)

    def abandon(self, run_id: str, reason: str) -> None:
        """Stop executing ``run_id`` here at once, writing nothing: its lease moved to another node."""
        active = self._active.get(run_id)
        if active is None:
            return
        active.lease_lost = True
        active.stopped_now = True
        active.token.cancel(f"lease lost: {reason}", grace_s=0.0)
        if active.task is not None:
            active.task.cancel()
        log.warning("run_lease_lost", run_id=run_id, reason=reason)

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

    # -- rerun, breakpoints ------------------------------------------------------------------------
    async def rerun(self, run_id: str, *, inputs: dict[str, Any] | None = None, latest: bool = False,
                    from_stage: str | None = None) -> str:
        """A new run of ``run_id``'s pinned definition (``latest``: the current one) and inputs.

        ``inputs`` override single inputs. ``from_stage`` forks: see ``flowmasond.runs_fork``.
        """
        self._check_accepting()
        row = await self.find(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        if row.parent_run_id:
            raise InvalidStateError(f"run {run_id} is a child run; rerun its parent {row.parent_run_id}",
                                    run_id=run_id, parent_run_id=row.parent_run_id)
        if run_id in self._active:
            raise InvalidStateError("run is still executing; cancel it or wait for it to finish", run_id=run_id,
                                    status=row.status.value)
        pipeline = self.catalog.get(row.pipeline_id) if latest else await self._pinned(row)
        merged = {**row.inputs, **(inputs or {})}
        check_inputs(pipeline, merged)
        new_id = new_run_id()
        snapshot = None
        seed = None
        if from_stage is not None:
            plan = fork_plan(self.executor.plan_for(pipeline), await self.journal.load_snapshot(run_id),
                             from_stage, run_id=run_id)
            seed = plan.seed
            snapshot = RunSnapshot()
            for record in seed:
                snapshot.apply(record)
        await self._acquire(new_id)
        try:
            await self.journal.create_run(new_id, pipeline, merged, forked_from=run_id, from_stage=from_stage,
                                          seed=seed)
        except BaseException:
            await self._release(new_id)
            raise
        log.info("run_rerun", run_id=new_id, source=run_id, from_stage=from_stage,
                 reused=len(seed or []), latest=latest)
        self._launch(new_id, pipeline, merged, snapshot=snapshot)
        self.notify()
        return new_id

    async def set_breakpoint(self, run_id: str, stage_id: str, *, remove: bool = False) -> None:
        """Add (or remove) a breakpoint before ``stage_id`` of a run, executing or not."""
        row = await self.find(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        if row.status.finished:
            raise InvalidStateError(f"run is {row.status.value}; breakpoints apply to runs not yet finished",
                                    run_id=run_id, status=row.status.value)
        check_stages(await self._pinned(row), [stage_id], run_id=run_id)
        points = set(row.breakpoints)
        points = points - {stage_id} if remove else points | {stage_id}
        await self.journal.set_breakpoints(run_id, points, row.stepping)
        breaks = self.breaks_of(run_id)
        if breaks is not None:
            breaks.breakpoints = points
        self.notify()

    async def go_on(self, run_id: str, *, step: bool, local_only: bool = False) -> None:
        """``continue`` (``step=False``: release every waiting stage, stop stepping) or ``step``
        (release the oldest waiting stage and pause before the next one). A run another node
        executes is asked through the database unless ``local_only``."""
        self._check_accepting()
        row = await self.find(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        breaks = self.breaks_of(run_id)
        if breaks is None and self.ownership is not None and not local_only and not row.status.finished:
            owner = await self.ownership.forward(run_id, "step" if step else "continue")
            if owner is not None:
                log.info("run_go_on_forwarded", run_id=run_id, step=step, node=owner)
                return
        if breaks is not None:
            if not step and row.status is not RunStatus.PAUSED and not breaks.waiting and not breaks.stepping:
                raise InvalidStateError(f"run is {row.status.value}, not paused", run_id=run_id,
                                        status=row.status.value)
            await self.journal.set_breakpoints(run_id, row.breakpoints, step)
            breaks.stepping = step
            released = breaks.release(1 if step else None)
            log.info("run_go_on", run_id=run_id, step=step, released=released)
            return
        if row.status is not RunStatus.PAUSED:
            raise InvalidStateError(f"run is {row.status.value}, not paused", run_id=run_id,
                                    status=row.status.value)
        # Paused across a restart: relaunch from the journal, letting the paused stages through.
        waiting = list((row.paused_at or {}).keys())
        let_through = set(waiting[:1] if step else waiting)
        await self.journal.set_breakpoints(run_id, row.breakpoints, step)
        pipeline = await self._pinned(row)
        await self._acquire(run_id)
        try:
            snapshot = await self._claim_for_resume(run_id, expected=[RunStatus.PAUSED])
        except BaseException:
            await self._release(run_id)
            raise
        log.info("run_go_on", run_id=run_id, step=step, released=sorted(let_through), relaunched=True)
        self._launch(run_id, pipeline, row.inputs, snapshot=snapshot, schedule_id=row.schedule_id,
                     breaks=RunBreaks(breakpoints=set(row.breakpoints), stepping=step, released=let_through))
        self.notify()

    async def delete(self, run_id: str) -> list[str]:
        """Delete a finished run and its subpipeline children; returns the ids deleted."""
        row = await self.find(run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
        if not row.status.finished or run_id in self._active:
            raise InvalidStateError(f"run is {row.status.value}; only finished runs can be deleted "
                                    "(cancel it first)", run_id=run_id, status=row.status.value)
        ids = [run_id]
        todo = [run_id]
        while todo:
            for child in await self.journal.child_runs(todo.pop()):
                ids.append(child.run_id)
                todo.append(child.run_id)
        return await self.journal.delete_runs(ids)

    # -- subpipelines --------------------------------------------------------------------------------
    async def _run_child(self, parent: ExecutingRun, path: str, child_run_id: str, pipeline_id: str,
                         inputs: dict[str, Any], *, cancellation: CancellationToken | None = None) -> RunOutcome:
        row = await self.find(child_run_id)
        snapshot = None
        # A child run takes no slot of its own: it is created (or claimed) running, in one commit.
        if row is None:
            pipeline = self.catalog.get(pipeline_id)
            await self.journal.create_run(child_run_id, pipeline, inputs, parent_run_id=parent.run_id,
                                          parent_path=path, start=True)
        else:
            if row.status is RunStatus.SUCCEEDED:
                return RunOutcome(run_id=child_run_id, pipeline_id=row.pipeline_id, status=row.status,
                                  output=row.output)
            pipeline = await self._pinned(row)
            inputs = row.inputs
            snapshot = await self._claim_for_resume(child_run_id, expected=CHILD_RESUME_FROM, start=True)
        outcome = await self.executor.execute(pipeline, inputs, run_id=child_run_id,
                                              store=self.journal.run_store(child_run_id), snapshot=snapshot,
                                              cancellation=cancellation or parent.cancellation,
                                              force=parent.force, depth=parent.depth + 1)
        status = outcome.status
        if status is RunStatus.CANCELLED and parent.cancellation.reason == SHUTDOWN:
            status = RunStatus.INTERRUPTED
        await self.journal.set_run_status(child_run_id, status, expected=[RunStatus.RUNNING],
                                          output=outcome.output, error=outcome.error)
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
                await self._recover_status(row, RunStatus.INTERRUPTED, {
                    "code": "daemon_stopped", "message": "the daemon stopped while this child run was executing"})
                continue
            outcome = await self._interrupt_found(row)
            if outcome is not None:
                report[outcome].append(row.run_id)
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

    async def _interrupt_found(self, row: Any) -> str | None:
        """A root run found pending or running with nobody executing it: ``interrupted``, or
        ``failed`` past ``max_recovery_attempts``; returns which (None: it changed meanwhile)."""
        crashed = row.status is RunStatus.RUNNING
        attempts = await self.journal.increment_recovery_attempts(row.run_id) if crashed else 0
        if attempts > self.config.max_recovery_attempts:
            error = {"code": "recovery_exhausted",
                     "message": f"the daemon stopped {attempts} times while this run was executing; "
                                "not resumed again automatically (resume it by hand once the cause is fixed)",
                     "context": {"recovery_attempts": attempts}}
            await self._recover_status(row, RunStatus.FAILED, error)
            log.error("run_recovery_exhausted", run_id=row.run_id, attempts=attempts)
            return "failed"
        if await self._recover_status(row, RunStatus.INTERRUPTED, {
                "code": "daemon_stopped", "message": "the daemon stopped while this run was executing"}):
            return "interrupted"
        return None

    async def recover_claimed(self, run_id: str) -> bool:
        """Recover one run whose lease this node just claimed (its owner died or stopped).

        The same rules as ``recover`` on start; returns True when the run was launched here (the
        caller releases the lease otherwise).
        """
        row = await self.find(run_id)
        if row is None or row.parent_run_id or run_id in self._active or run_id in self._claiming:
            return False
        if row.status in ACTIVE:
            if await self._interrupt_found(row) != "interrupted":
                return False
            row = await self.find(run_id)
            if row is None:
                return False
        code = (row.error or {}).get("code") if isinstance(row.error, dict) else None
        if self.config.recovery != "auto" or row.status is not RunStatus.INTERRUPTED or code in NEEDS_OPERATOR:
            return False
        await self.resume(run_id, definition="pinned")
        log.info("run_taken_over", run_id=run_id)
        return True

    async def _recover_status(self, row: Any, status: RunStatus, error: dict[str, Any]) -> bool:
        """Move a run found active on disk to ``status``, only from the status it was found in."""
        try:
            await self.journal.set_run_status(row.run_id, status, expected=[row.status], error=error)
        except RunConflictError as exc:
            log.warning("run_recovery_skipped", run_id=row.run_id, error=str(exc))
            return False
        return True

    async def _all_runs(self, statuses: list[RunStatus]) -> list[Any]:
        rows: list[Any] = []
        while True:
            page = await self.journal.list_runs(status=statuses, limit=500, offset=len(rows))
            rows.extend(page)
            if len(page) < 500:
                return rows

    async def shutdown(self, grace_s: float, *,
                       status_margin_s: float = SHUTDOWN_STATUS_MARGIN_S) -> dict[str, int]:
        """Stop intake; in-flight stages get ``grace_s`` to finish; the rest is interrupted.

        Runs still going after the grace plus ``status_margin_s`` are cancelled outright and
        journaled ``interrupted`` (never left ``running``).
        """
        self._accepting = False
        active = list(self._active.values())
        for run in active:
            run.token.cancel(SHUTDOWN, grace_s=grace_s, interrupt=True)
        tasks = [r.task for r in active if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s + status_margin_s)
        leftover = [r.task for r in active if r.task is not None and not r.task.done()]
        for run in active:
            if run.task is not None and not run.task.done():
                # Like a second stop signal: _drive journals the run interrupted instead of
                # letting the cancellation leave it 'running'.
                run.stopped_now = True
                run.task.cancel()
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
            # Until the run is finished, only settled events (PostgreSQL: none behind a transaction
            # still in progress, so the cursor never passes an event that commits later); the last
            # read takes everything committed, as nothing reads after it.
            batch = await self.journal.events(run_id, after_id=cursor, settled=not finished)
            for event in batch:
                cursor = event.id  # the last one read: ids need not increase (PostgreSQL, several nodes)
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


def check_inputs(pipeline: PipelineConfig, inputs: dict[str, Any]) -> None:
    """A VALIDATION ``StageError`` listing every way ``inputs`` miss the pipeline's input_schema."""
    if pipeline.input_schema:
        from flowmasond.components.operators.schema import validate_json_schema

        problems = validate_json_schema(inputs, pipeline.input_schema)
        if problems:
            raise StageError("inputs do not match the pipeline's input_schema: " + "; ".join(problems),
                             error_type="VALIDATION", pipeline_id=pipeline.id)


def check_stages(pipeline: PipelineConfig, stage_ids: Sequence[str], *, run_id: str | None = None) -> None:
    """``StageNotFoundError`` naming the first of ``stage_ids`` that ``pipeline`` does not have."""
    if not stage_ids:
        return  # the usual case: no set of stage ids built per run
    known = {s.id for s in pipeline.stages}
    for stage_id in stage_ids:
        if stage_id not in known:
            raise StageNotFoundError(f"no stage {stage_id!r} in pipeline '{pipeline.id}'", run_id=run_id,
                                     pipeline_id=pipeline.id, stage=stage_id, stages=sorted(known))


async def _finished_elsewhere(journal: Any, run_ids: Sequence[str], token: CancellationToken) -> None:
    """Wait until none of ``run_ids`` (executing on other nodes) is active any more, or ``token`` is cancelled."""
    waiting = list(run_ids)
    while waiting and not token.cancelled:
        statuses = await journal.run_statuses(waiting)
        waiting = [rid for rid in waiting if statuses.get(rid) in (*ACTIVE, RunStatus.PAUSED)]
        if waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(token.wait(), ELSEWHERE_POLL_S)


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
