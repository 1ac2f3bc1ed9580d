"""DAGExecutor: runs a pipeline's stages as their dependencies complete, journaling every result.

Scheduling is dependency-driven: a stage starts the moment its last dependency's result is
committed, so every "wave" of ready stages runs concurrently under ``max_concurrency`` without
waiting for the slowest stage of the previous wave. ``parallel_execution=False`` runs the same
graph one stage at a time in stable Kahn order (file order among ready stages).

Write-ahead: a stage's result is committed to the ``RunStore`` before any dependent starts and
before hooks hear of it. A resumed run starts from a ``RunSnapshot``: committed stages are
restored without running, in-flight ones run again with the next attempt number.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any
from collections.abc import Callable, Mapping, MutableMapping, Sequence

import structlog
from pydantic import ValidationError

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.control_flow_handlers import ControlFlowHandler, StateUpdates
from flowmasond.engine.executor import UniversalExecutor, _pydantic_summary
from flowmasond.engine.flow_state import ControlFlowState
from flowmasond.engine.interfaces import (ChildRunner, ComponentResult, CompositeHooks, ErrorType,
                                          ExecutionHooks, Record, RunSnapshot, RunStatus, RunStore,
                                          StageDispatcher, StageGate, StageStatus, StageTask,
                                          UsageMetrics)
from flowmasond.engine.models import PipelineConfig, RetryConfig
from flowmasond.engine.plan import ExecutionPlan, Group
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.templates import TemplateScope, resolve
from flowmasond.engine.visibility import UpstreamVisibility
from flowmasond.errors import (
    ChildRunInterruptedError,
    FlowmasonError,
    JournalError,
    PipelineError,
    PipelineNotFoundError,
    RetryExhaustedError,
    RunCancelledError,
    StageError,
    TemplateError,
    UnsafeToRepeatError,
)

log = structlog.get_logger("flowmasond.engine")

# A subpipeline that calls itself would otherwise recurse until memory runs out.
MAX_SUBPIPELINE_DEPTH = 16


def new_run_id() -> str:
    """A unique, roughly time-ordered run id: the second in hex, then 64 random bits.

    32 random bits were too few: at 1,000 runs a second two ids of one second collide about once in
    10,000 seconds (a day at that rate), and the second run's creation fails on the primary key.
    """
    return f"r{int(time.time()):x}-{os.urandom(8).hex()}"  # uuid4 cost 2 µs more per run


# Per component Input model: its ``shell_templates`` (None for all but shell stages). A missing
# attribute on a pydantic model class is looked up through its metaclass and an exception, about
# 10 µs a stage; the answer never changes for a class.
_SHELL_TEMPLATES: dict[type, Any] = {}


def _shell_templates(model: type) -> Any:
    try:
        return _SHELL_TEMPLATES[model]
    except KeyError:
        value = _SHELL_TEMPLATES[model] = getattr(model, "shell_templates", None)
        return value


@dataclass(slots=True)
class RunOutcome:
    """How a run ended (or stopped), with every result by stage path."""

    run_id: str
    pipeline_id: str
    status: RunStatus
    output: Any = None
    error: dict[str, Any] | None = None  # FlowmasonError.to_dict() of the reason
    failed_path: str | None = None
    results: dict[str, ComponentResult] = field(default_factory=dict)
    usage: UsageMetrics = field(default_factory=UsageMetrics)
    returned: bool = False


def _under(path: str, prefix: str, members: Sequence[str]) -> bool:
    """Whether ``path`` lies inside one of the stages ``members`` at ``prefix``."""
    return path.startswith(prefix) and path[len(prefix):].split("/", 1)[0] in members


@dataclass(frozen=True, slots=True)
class Catcher:
    """The trycatch whose try phase a frame runs: a failure there enters its catch phase."""

    path: str  # the trycatch's stage path, where its ControlFlowState is journaled
    propagate: bool  # error_scope=propagate: the failure is not handled, so a resume retries it
    # catch_error_types: only failures of these ErrorTypes are caught (empty: every failure)
    error_types: frozenset[str] = frozenset()

    def catches(self, result: ComponentResult) -> bool:
        """Whether this trycatch catches the failure ``result``."""
        if not self.error_types:
            return True
        kind = result.error_type.value if result.error_type else ErrorType.UNKNOWN.value
        return kind in self.error_types


@dataclass(slots=True)
class Frame:
    """Where a group of stages runs: path prefix, visible outputs, loop variables, failure policy."""

    prefix: str
    upstream: MutableMapping[str, Any]
    variables: Mapping[str, Any]
    # Failures here were chosen to be lived with (foreach without break_on_error): never retried.
    failures_handled: bool = False
    # Set for a trycatch's try stages: their failure is committed with the trycatch's catch state.
    catcher: Catcher | None = None
    # The retry policy of leaf stages without a retry_config of their own (trycatch max_retries).
    retry_default: RetryConfig | None = None


@dataclass(slots=True)
class ScopeOutcome:
    """Results of one group by stage id, and the failure that stopped it, if any."""

    results: dict[str, ComponentResult]
    failed: ComponentResult | None = None
    failed_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None


@dataclass(slots=True)
class ExecutingRun:
    """Everything one executing run holds."""

    run_id: str
    pipeline: PipelineConfig
    plan: ExecutionPlan
    inputs: dict[str, Any]
    store: RunStore
    cancellation: CancellationToken
    flow: dict[str, ControlFlowState]  # every control-flow stage's state, by path
    committed: dict[str, ComponentResult]  # restored + newly committed, by path
    resumed_attempts: dict[str, int]
    visibility: UpstreamVisibility
    force: bool = False
    depth: int = 0
    upstream: dict[str, Any] = field(default_factory=dict)
    returned: bool = False
    return_value: Any = None
    return_path: str | None = None  # the return stage that fired
    context_base: dict[str, Any] = field(default_factory=dict)
    logger: Any = None
    # Leaf stages of this run in flight at once (max_concurrency is per run, not per daemon).
    slots: asyncio.Semaphore | None = None

    def apply(self, path: str, state: ControlFlowState) -> None:
        """Take ``state`` as the control-flow state at ``path`` (a return that fired ends the run)."""
        self.flow[path] = state
        if state.kind == "return" and state.returned and not self.returned:
            self.returned, self.return_value, self.return_path = True, state.return_value, path

    def on_return_path(self, path: str) -> bool:
        """Whether the return that fired lies under ``path`` (whose stage must still finish)."""
        return self.return_path is not None and self.return_path.startswith(path + "/")

    def shielded(self, prefix: str, members: Sequence[str]) -> ExecutingRun:
        """A view of this run in which the stages ``members`` (at ``prefix``) start although the run
        returned or was cancelled: a trycatch runs its finally stages in it.

        It shares every committed result and state; a cancelled run gets a fresh token so the
        cleanup is not cancelled on arrival. A return that fired inside ``members`` themselves (seen
        on resume) still stands in the view, so it stops the rest of them as it did the first time.
        """
        token = self.cancellation
        if token.cancelled:
            token = CancellationToken(grace_s=token.grace_s)
        # The run may hold several fired returns (one in the try, then one in the finally stages):
        # its own return_path is the first, so the view looks for the first one among ``members``.
        for path, state in self.flow.items():
            if state.kind == "return" and state.returned and _under(path, prefix, members):
                return replace(self, cancellation=token, returned=True, return_value=state.return_value,
                               return_path=path)
        return replace(self, cancellation=token, returned=False, return_value=None, return_path=None)

    def before(self, prefix: str, members: Sequence[str]) -> ExecutingRun:
        """A view of this run in which the returns that fired inside ``members`` (at ``prefix``)
        have not fired yet: a resumed trycatch whose propagated failure was dropped runs its try
        stages again in it, before its catch stages (whose return fires again from its committed
        state) run once more."""
        if self.return_path is None or not _under(self.return_path, prefix, members):
            return self
        for path, state in self.flow.items():
            if state.kind == "return" and state.returned and not _under(path, prefix, members):
                return replace(self, returned=True, return_value=state.return_value, return_path=path)
        return replace(self, returned=False, return_value=None, return_path=None)

    def take_return(self, view: ExecutingRun) -> None:
        """Whether this run returned is what ``view`` (from ``before``) says."""
        self.returned, self.return_value, self.return_path = view.returned, view.return_value, view.return_path

    def adopt_return(self, view: ExecutingRun) -> None:
        """A return that fired inside a ``shielded`` view ends this run too."""
        if view.returned and not self.returned:
            self.returned, self.return_value, self.return_path = True, view.return_value, view.return_path


class DAGExecutor:
    """Executes pipelines; one instance serves many runs concurrently."""

    def __init__(self, registry: ComponentRegistry, *, hooks: ExecutionHooks | list[ExecutionHooks] | None = None,
                 max_concurrency: int = 10, parallel_execution: bool = True,
                 providers: Any = None, default_provider: str | None = None,
                 pipelines: Mapping[str, PipelineConfig] | Callable[[str], PipelineConfig] | None = None,
                 child_runner: ChildRunner | None = None, services: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None, stage_gate: StageGate | None = None,
                 stage_dispatcher: StageDispatcher | None = None) -> None:
        self.registry = registry
        if isinstance(hooks, list):
            hooks = CompositeHooks(hooks)
        elif hooks is not None and not isinstance(hooks, CompositeHooks):
            hooks = CompositeHooks([hooks])
        self.hooks: CompositeHooks | None = hooks
        self.max_concurrency = max_concurrency
        self.parallel_execution = parallel_execution
        svc = dict(services or {})
        if providers is not None:
            svc["providers"] = providers
        if default_provider is not None:
            svc["default_provider"] = default_provider
        self.services = svc
        self.env = env if env is not None else os.environ
        self._pipelines = pipelines
        self.child_runner: ChildRunner = child_runner or self._run_child_in_memory
        self.executor = UniversalExecutor(hooks=self.hooks, services=svc)
        self.control_flow = ControlFlowHandler(self)
        self._plans: dict[int, tuple[PipelineConfig, ExecutionPlan]] = {}
        self.stage_gate = stage_gate
        # The cluster's workers for leaf stages that opted in (`distribute`); None: all run here.
        self.stage_dispatcher = stage_dispatcher

    # -- public API ------------------------------------------------------------------------------
    def plan_for(self, pipeline: PipelineConfig) -> ExecutionPlan:
        cached = self._plans.get(id(pipeline))
        if cached is not None and cached[0] is pipeline:
            return cached[1]
        plan = ExecutionPlan(pipeline, self.registry)
        if len(self._plans) > 256:
            self._plans.clear()
        self._plans[id(pipeline)] = (pipeline, plan)
        return plan

    def lookup_pipeline(self, pipeline_id: str) -> PipelineConfig:
        source = self._pipelines
        try:
            if callable(source):
                return source(pipeline_id)
            if source is not None:
                return source[pipeline_id]
        except KeyError:
            pass
        raise PipelineNotFoundError(f"no pipeline {pipeline_id!r}", pipeline_id=pipeline_id)

    async def execute(self, pipeline: PipelineConfig, inputs: dict[str, Any] | None = None, *,
                      run_id: str | None = None, store: RunStore | None = None,
                      snapshot: RunSnapshot | None = None, cancellation: CancellationToken | None = None,
                      force: bool = False, depth: int = 0) -> RunOutcome:
        """Run ``pipeline`` (or resume it from ``snapshot``) to the end; never raises for stage failures.

        ``snapshot`` must already be the resume view (``RunSnapshot.for_resume()``). ``force`` lets
        stages that are not safe to repeat run again after a crash.
        """
        run_id = run_id or new_run_id()
        inputs = dict(inputs or {})
        snapshot = snapshot or RunSnapshot()
        if store is None:
            store = MemoryRunStore()
        plan = self.plan_for(pipeline)
        run = ExecutingRun(
            run_id=run_id, pipeline=pipeline, plan=plan, inputs=inputs, store=store,
            cancellation=cancellation or CancellationToken(), flow={},
            committed=dict(snapshot.results), resumed_attempts=dict(snapshot.attempts),
            visibility=plan.visibility, force=force,
            depth=depth, logger=log.bind(run_id=run_id, pipeline_id=pipeline.id),
            slots=asyncio.Semaphore(self.max_concurrency) if self.max_concurrency > 0 else None,
        )
        run.context_base = {"run_id": run_id, "pipeline_id": pipeline.id, "pipeline_version": pipeline.version}
        for path, state in snapshot.states.items():
            run.apply(path, state)
        if self.hooks is not None:
            await self.hooks.on_run_start(run_id, pipeline, inputs)
        outcome = await self._execute_run(run)
        if self.hooks is not None:
            await self.hooks.on_run_complete(run_id, outcome)
        return outcome

    # -- run ---------------------------------------------------------------------------------------
    async def _execute_run(self, run: ExecutingRun) -> RunOutcome:
        pipeline = run.pipeline
        outcome = RunOutcome(run_id=run.run_id, pipeline_id=pipeline.id, status=RunStatus.RUNNING)
        try:
            if pipeline.abstract:
                raise PipelineError(f"pipeline '{pipeline.id}' is abstract (a base for pipelines that "
                                    "extend it); run one of those instead", pipeline=pipeline.id)
            _check_schema(pipeline.input_schema, run.inputs, "input", pipeline.id)
            top = Frame(prefix="", upstream=run.upstream, variables={})
            scope = await self.run_group(run, run.plan.top, top)
        except RunCancelledError as exc:
            outcome.status, outcome.error = RunStatus.CANCELLED, exc.to_dict()
        except UnsafeToRepeatError as exc:
            outcome.status, outcome.error = RunStatus.INTERRUPTED, exc.to_dict()
            outcome.failed_path = exc.context.get("path")
        except (JournalError, ChildRunInterruptedError) as exc:
            # The journal could not commit (here or in a child run): nothing after the last commit
            # is claimed, and the run resumes from there once the fault is gone.
            outcome.status, outcome.error = RunStatus.INTERRUPTED, exc.to_dict()
        except FlowmasonError as exc:
            outcome.status, outcome.error = RunStatus.FAILED, exc.to_dict()
        else:
            if scope.failed is not None:
                outcome.status = RunStatus.FAILED
                outcome.failed_path = scope.failed_path
                outcome.error = _stage_failure(scope.failed, scope.failed_path).to_dict()
            else:
                try:
                    outcome.output = self._run_output(run, scope)
                    _check_schema(pipeline.output_schema, outcome.output, "output", pipeline.id)
                    outcome.status = RunStatus.SUCCEEDED
                except FlowmasonError as exc:
                    outcome.status, outcome.error = RunStatus.FAILED, exc.to_dict()
        if run.returned:
            for member in run.plan.top.members:
                if member not in run.committed:
                    run.committed[member] = ComponentResult.skipped(
                        member, run.plan.stages[member].component_type, "the run returned early")
        outcome.results = run.committed
        outcome.returned = run.returned
        usage = UsageMetrics()
        for result in run.committed.values():
            usage = usage + result.usage
        outcome.usage = usage
        return outcome

    def _run_output(self, run: ExecutingRun, scope: ScopeOutcome) -> Any:
        if run.returned:
            return run.return_value
        pipeline = run.pipeline
        if pipeline.output_stage_id:
            if pipeline.output_stage_id not in run.upstream:
                raise StageError("output stage did not run", stage=pipeline.output_stage_id)
            return run.upstream[pipeline.output_stage_id]
        sinks = [s for s in run.plan.top.sinks if s in scope.results
                 and scope.results[s].status is StageStatus.SUCCESS]
        if len(sinks) == 1:
            return run.upstream.get(sinks[0])
        return {s: run.upstream.get(s) for s in sinks}

    # -- groups --------------------------------------------------------------------------------------
    async def run_group(self, run: ExecutingRun, group: Group, frame: Frame) -> ScopeOutcome:
        """Run one group of sibling stages to completion; the heart of scheduling."""
        pending = {m: len(group.deps[m]) for m in group.members}
        results: dict[str, ComponentResult] = {}
        ready: list[tuple[int, str]] = [(group.order[m], m) for m in group.members if pending[m] == 0]
        heapq.heapify(ready)
        tasks: dict[asyncio.Task[ComponentResult], str] = {}
        failed: tuple[str, ComponentResult] | None = None
        sequential = not self.parallel_execution
        cancel_wait: asyncio.Future[Any] | None = None
        token = run.cancellation

        def complete(member: str, result: ComponentResult) -> None:
            nonlocal failed
            results[member] = result
            if result.status is StageStatus.FAILED and run.plan.stages[member].on_error == "propagate":
                if failed is None:
                    failed = (member, result)
            for dependent in group.dependents[member]:
                pending[dependent] -= 1
                if pending[dependent] == 0:
                    heapq.heappush(ready, (group.order[dependent], dependent))

        try:
            while True:
                while ready and failed is None and not token.cancelled:
                    if sequential and tasks:
                        break
                    if run.returned:
                        # After a return only a stage holding it still runs (on resume, to finish
                        # what encloses the return, such as a trycatch's finally stages), and
                        # committed ones are restored so that such a stage's dependencies are met.
                        pick = next((entry for entry in ready
                                     if frame.prefix + entry[1] in run.committed
                                     or run.on_return_path(frame.prefix + entry[1])), None)
                        if pick is None:
                            break
                        ready.remove(pick)
                        heapq.heapify(ready)
                        member = pick[1]
                    else:
                        _, member = heapq.heappop(ready)
                    path = frame.prefix + member
                    restored = run.committed.get(path)
                    if restored is not None:
                        self._restore(run, member, path, restored, frame)
                        complete(member, restored)
                        continue
                    if not run.plan.stages[member].enabled:
                        complete(member, await self._skip(run, member, path, frame, "disabled (enabled: false)"))
                        continue
                    declared = group.declared[member]
                    if declared and all(_skipped(run.committed.get(frame.prefix + rel)) for rel in declared):
                        complete(member, await self._skip(run, member, path, frame, "all dependencies were skipped"))
                        continue
                    if not tasks and not ready:
                        # The only runnable stage of the group (every stage of a chain): awaited
                        # here, which saves a task and a wait per stage.
                        complete(member, await self._run_inline(run, member, frame))
                        continue
                    tasks[asyncio.create_task(self.run_stage(run, member, frame))] = member
                if not tasks:
                    break
                if token.cancelled:
                    await self._drain_after_cancel(run, tasks, complete)
                    raise RunCancelledError(token.reason or "cancelled", run_id=run.run_id)
                if cancel_wait is None:
                    cancel_wait = asyncio.ensure_future(token.wait())
                done, _ = await asyncio.wait([*tasks, cancel_wait], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is cancel_wait:
                        continue
                    member = tasks.pop(task)  # type: ignore[call-overload]
                    if task.cancelled() or (token.cancelled and isinstance(task.exception(), RunCancelledError)):
                        continue  # stopped by the same cancellation; handled on the next turn
                    complete(member, task.result())
        finally:
            if cancel_wait is not None:
                cancel_wait.cancel()
            if tasks:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if token.cancelled and (ready or len(results) < len(group.members)) and failed is None \
                and not run.returned:
            raise RunCancelledError(token.reason or "cancelled", run_id=run.run_id)
        if failed is not None:
            return ScopeOutcome(results=results, failed=failed[1], failed_path=frame.prefix + failed[0])
        return ScopeOutcome(results=results)

    async def _run_inline(self, run: ExecutingRun, member: str, frame: Frame) -> ComponentResult:
        """``run_stage`` in the current task, with the same cancellation grace as a stage task."""
        token = run.cancellation
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        def on_cancel() -> None:
            nonlocal timer
            timer = loop.call_later(max(token.grace_s, 0.0), expire)

        token.add_callback(on_cancel)
        try:
            return await self.run_stage(run, member, frame)
        except asyncio.CancelledError:
            if not fired:
                raise  # cancelled from outside the engine: not ours to swallow
            raise RunCancelledError(token.reason or "cancelled", run_id=run.run_id) from None
        finally:
            token.remove_callback(on_cancel)
            if timer is not None:
                timer.cancel()
            if fired:
                task.uncancel()

    async def _drain_after_cancel(self, run: ExecutingRun, tasks: dict[asyncio.Task[ComponentResult], str],
                                  complete: Callable[[str, ComponentResult], None]) -> None:
        """Give in-flight stages the grace period, keep what finished, cancel the rest."""
        grace = run.cancellation.grace_s
        if grace > 0:
            done, _ = await asyncio.wait(list(tasks), timeout=grace)
        else:
            done = set()
        for task in done:
            member = tasks.pop(task)
            if not task.cancelled() and task.exception() is None:
                complete(member, task.result())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()

    def _restore(self, run: ExecutingRun, member: str, path: str, result: ComponentResult, frame: Frame) -> None:
        run.visibility.restore(frame.upstream, member, frame.prefix, result, run.committed)

    async def _skip(self, run: ExecutingRun, member: str, path: str, frame: Frame, reason: str) -> ComponentResult:
        stage = run.plan.stages[member]
        result = ComponentResult.skipped(member, stage.component_type, reason)
        run.visibility.hide(frame.upstream, member, frame.prefix)
        # Derived skips are not journaled: on resume they follow again from committed results.
        run.committed[path] = result
        if self.hooks is not None:
            await self.hooks.on_stage_skipped(run.run_id, path, stage, reason)
        return result

    # -- the one place results and control-flow states are committed ----------------------------------
    async def commit(self, run: ExecutingRun, result: tuple[str, ComponentResult] | None = None,
                     frame: Frame | None = None, *, states: Sequence[tuple[str, ControlFlowState]] = (),
                     skipped: Sequence[tuple[str, ComponentResult]] = ()) -> None:
        """Commit a stage result with the control-flow states it caused, in one transaction.

        Handlers call it alone for decisions taken before the work they decide (a branch with its
        skip set, a loop's items, a child run id). States apply to the run before the commit is
        awaited, so a return stops siblings from starting meanwhile; if the commit fails the run
        stops (JournalError), and nothing of it is claimed.
        """
        records: list[Record] = []
        if result is not None:
            records.append(Record.of_result(*result))
        records.extend(Record.of_state(path, state) for path, state in states)
        records.extend(Record.of_result(path, skip) for path, skip in skipped)
        for path, state in states:
            run.apply(path, state)
        await run.store.commit(records)
        for path, skip in skipped:
            run.committed[path] = skip
        if result is not None:
            path, stage_result = result
            run.committed[path] = stage_result
            if frame is not None:
                run.visibility.publish(frame.upstream, stage_result.stage_id, stage_result)

    # -- one stage ----------------------------------------------------------------------------------
    def template_scope(self, run: ExecutingRun, member: str, path: str, frame: Frame) -> TemplateScope:
        context = {**run.context_base, **frame.variables, "stage_id": member, "stage_path": path}
        return TemplateScope(input=run.inputs, upstream=frame.upstream, env=self.env, context=context)

    async def run_stage(self, run: ExecutingRun, member: str, frame: Frame) -> ComponentResult:
        """Execute one stage (leaf or control flow) and commit its result."""
        stage = run.plan.stages[member]
        meta = run.plan.meta[member]
        path = frame.prefix + member
        states: StateUpdates = []
        try:
            config = resolve(stage.config, self.template_scope(run, member, path, frame), stage=member,
                             shell=_shell_templates(meta.input_model),
                             defer=meta.deferred_template_roots) if stage.config else {}
            input_model = meta.input_model.model_validate(config)
        except TemplateError as exc:
            result = _config_failure(stage, ErrorType.CONFIGURATION, str(exc))
        except ValidationError as exc:
            result = _config_failure(stage, ErrorType.VALIDATION, f"invalid config: {_pydantic_summary(exc)}")
        else:
            if self.stage_gate is not None:
                # Breakpoints: after the inputs are resolved, so a paused run can show them.
                await self.stage_gate(run.run_id, path, member, config, run.cancellation)
            if meta.kind == "control_flow":
                result, states = await self.control_flow.execute(run, stage, meta, path, frame, input_model)
            else:
                result = await self._run_leaf(run, stage, meta, path, frame, input_model, config)
        if result.status is StageStatus.FAILED:
            if stage.on_error == "continue" or frame.failures_handled:
                result.handled = True
            elif frame.catcher is not None and frame.catcher.catches(result):
                states = [*states, (frame.catcher.path, ControlFlowState.caught_failure(path, result))]
                # A propagated failure is not handled: a resume runs it again.
                result.handled = not frame.catcher.propagate
        span_ids = self.services.get("span_ids")  # the daemon's tracer: journaled with the result
        if span_ids is not None:
            result.trace_id, result.span_id = span_ids(run.run_id, path)
        await self.commit(run, (path, result), frame, states=states)
        if self.hooks is not None:
            await self.hooks.on_stage_complete(run.run_id, path, stage, result)
        return result

    async def _run_leaf(self, run: ExecutingRun, stage: Any, meta: Any, path: str, frame: Frame,
                        input_model: Any, config: dict[str, Any]) -> ComponentResult:
        attempt_base = run.resumed_attempts.get(path, 0)
        epoch = self._dispatch_epoch(run, stage)
        # A dispatched stage's unsafe rule is the dispatcher's: a task still claimed by a live
        # worker is adopted rather than refused.
        if epoch is None and attempt_base and not meta.safe_to_repeat and not run.force:
            raise UnsafeToRepeatError(
                f"stage '{stage.id}' ({stage.component_type}) was in flight when the run stopped and is not "
                "safe to repeat; resume with force to run it again", stage=stage.id, path=path,
                attempt=attempt_base, run_id=run.run_id)
        if frame.retry_default is not None and stage.retry_config is None:
            stage = stage.model_copy(update={"retry_config": frame.retry_default})
        semaphore = run.slots
        if semaphore is None:
            return await self._execute_leaf(run, stage, meta, path, frame, input_model, config,
                                            attempt_base, epoch)
        async with semaphore:
            if run.cancellation.cancelled:
                raise RunCancelledError(run.cancellation.reason or "cancelled", run_id=run.run_id, path=path)
            return await self._execute_leaf(run, stage, meta, path, frame, input_model, config,
                                            attempt_base, epoch)

    def _dispatch_epoch(self, run: ExecutingRun, stage: Any) -> int | None:
        """The owner's lease epoch when this leaf stage goes to the cluster's workers, else None."""
        dispatcher = self.stage_dispatcher
        if dispatcher is None:
            return None
        wanted = stage.distribute if stage.distribute is not None else run.pipeline.distribute
        return dispatcher.epoch_of(run.run_id) if wanted else None

    async def _execute_leaf(self, run: ExecutingRun, stage: Any, meta: Any, path: str, frame: Frame,
                            input_model: Any, config: dict[str, Any], attempt_base: int,
                            epoch: int | None) -> ComponentResult:
        if epoch is None:
            return await self.executor.execute(
                run_id=run.run_id, pipeline_id=run.pipeline.id, path=path, stage=stage, meta=meta,
                instance=self.registry.instance(stage.component_type), input=input_model,
                cancellation=run.cancellation, store=run.store, attempt_base=attempt_base,
                variables=frame.variables, logger=run.logger)
        assert self.stage_dispatcher is not None
        if self.hooks is not None:
            await self.hooks.on_stage_start(run.run_id, path, stage, attempt_base + 1)
        return await self.stage_dispatcher.dispatch(StageTask(
            run_id=run.run_id, pipeline_id=run.pipeline.id, path=path, stage=stage, config=config,
            variables=dict(frame.variables), attempt_base=attempt_base, safe_to_repeat=meta.safe_to_repeat,
            force=run.force, epoch=epoch))

    # -- subpipelines ------------------------------------------------------------------------------
    async def _run_child_in_memory(self, parent: ExecutingRun, path: str, child_run_id: str, pipeline_id: str,
                                   inputs: dict[str, Any], *,
                                   cancellation: CancellationToken | None = None) -> RunOutcome:
        pipeline = self.lookup_pipeline(pipeline_id)
        return await self.execute(pipeline, inputs, run_id=child_run_id,
                                  cancellation=cancellation or parent.cancellation, depth=parent.depth + 1)


def _skipped(result: ComponentResult | None) -> bool:
    # No result at all means the stage never ran: a branch not taken, a catch after a clean try.
    return result is None or result.status is StageStatus.SKIPPED


def _config_failure(stage: Any, error_type: ErrorType, message: str) -> ComponentResult:
    now = time.time()
    return ComponentResult(stage_id=stage.id, component_type=stage.component_type, status=StageStatus.FAILED,
                           error=message, error_type=error_type, attempts=0, started_at=now, finished_at=now)


def _stage_failure(result: ComponentResult, path: str | None) -> StageError:
    cls = RetryExhaustedError if result.attempts > 1 else StageError
    return cls(f"stage '{result.stage_id}' failed: {result.error}", error_type=result.error_type,
               stage=result.stage_id, path=path)


def _check_schema(schema: dict[str, Any] | None, value: Any, what: str, pipeline_id: str) -> None:
    if not schema:
        return
    from flowmasond.components.operators.schema import validate_json_schema

    problems = validate_json_schema(value, schema)
    if problems:
        raise StageError(f"run {what} does not match the pipeline's {what}_schema: " + "; ".join(problems),
                         error_type=ErrorType.VALIDATION, pipeline=pipeline_id)
