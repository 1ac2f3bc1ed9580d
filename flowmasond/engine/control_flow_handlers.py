"""ControlFlowHandler: runs conditional, router, foreach, trycatch, subpipeline and return stages.

Handlers decide; the DAG executor commits. Each decision is a typed ``ControlFlowState``
(``flowmasond.engine.flow_state``) handed to ``DAGExecutor.commit``: before the work it decides
starts (a branch taken with its skip set, the item list of a loop, a child run id), or in the same
transaction as the result that caused it (a return, with its own result; a trycatch entering its
catch phase, with the failed try stage's result). A resumed run replays these states, so it never
takes a decision twice.
"""

from __future__ import annotations

import asyncio
from collections import ChainMap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.expressions import ExpressionError, truthy
from flowmasond.engine.flow_state import ControlFlowState, TryPhase
from flowmasond.engine.models import RetryConfig
from flowmasond.engine.templates import evaluate_expression
from flowmasond.engine.interfaces import ComponentResult, ErrorType, RunStatus, StageStatus
from flowmasond.engine.visibility import visible_output
from flowmasond.errors import (
    ChildRunInterruptedError,
    PipelineNotFoundError,
    RunCancelledError,
    UnsafeToRepeatError,
)

if TYPE_CHECKING:
    from flowmasond.engine.dag import DAGExecutor, Frame, ExecutingRun, ScopeOutcome
    from flowmasond.engine.models import StageConfig
    from flowmasond.engine.registry import ComponentMeta

# What a handler hands back besides its result: states to commit with it, by stage path.
StateUpdates = list[tuple[str, ControlFlowState]]

def _route_key(value: Any, routes: dict[str, list[str]], case_insensitive: bool) -> str | None:
    """The route key ``value`` selects (its string form; case-folded on request), else None."""
    if value is None:
        return None
    key = str(value).lower() if isinstance(value, bool) else str(value)
    if key in routes or not case_insensitive:
        return key
    folded = key.casefold()
    return next((k for k in routes if k.casefold() == folded), key)


class ControlFlowHandler:
    """Executes control-flow stages by running their child groups through the DAG executor."""

    def __init__(self, engine: DAGExecutor) -> None:
        self.engine = engine

    async def execute(self, run: ExecutingRun, stage: StageConfig, meta: ComponentMeta, path: str,
                      frame: Frame, input: Any) -> tuple[ComponentResult, StateUpdates]:
        """Run a control-flow stage; returns its result and the states to commit with it."""
        handler = getattr(self, f"_{stage.component_type}")
        started = _now()
        if self.engine.hooks is not None:
            await self.engine.hooks.on_stage_start(run.run_id, path, stage, 1)
        result, states = await handler(run, stage, path, frame, input)
        result.started_at = started
        result.finished_at = _now()
        result.attempts = result.attempts or 1
        return result, states

    # -- helpers ----------------------------------------------------------------------------------
    def _child_frame(self, frame: Frame, path: str, **changes: Any) -> Frame:
        from flowmasond.engine.dag import Frame

        return Frame(prefix=f"{path}/", upstream=changes.get("upstream", frame.upstream),
                     variables=changes.get("variables", frame.variables),
                     failures_handled=changes.get("failures_handled", False),
                     catcher=changes.get("catcher"),
                     retry_default=changes.get("retry_default", frame.retry_default))

    def _expression(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame, source: str,
                    extra: dict[str, Any]) -> Any:
        """A FlowMason expression field evaluated in the stage's template scope (sandboxed)."""
        scope = self.engine.template_scope(run, stage.id, path, frame)
        return evaluate_expression(source, scope, extra)

    async def _branch(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                      state: ControlFlowState, decided: bool) -> ScopeOutcome:
        """Commit a branch decision with its skip set (once), then run the selected stages."""
        chosen, others = list(state.selected), list(state.skipped)
        if not decided:
            skips = [(f"{path}/{s}", ComponentResult.skipped(
                s, run.plan.stages[s].component_type, f"not selected by {stage.component_type} '{stage.id}'"))
                for s in others if s in run.plan.stages]
            await self.engine.commit(run, states=[(path, state)], skipped=skips)
            if self.engine.hooks is not None:
                for skip_path, result in skips:
                    await self.engine.hooks.on_stage_skipped(run.run_id, skip_path,
                                                             run.plan.stages[result.stage_id], result.error or "")
        for s in others:
            if s in run.plan.stages:
                run.visibility.hide(frame.upstream, s, f"{path}/")
        return await self.engine.run_group(run, run.plan.group(chosen), self._child_frame(frame, path))

    def _branch_result(self, stage: StageConfig, scope: ScopeOutcome, output: dict[str, Any],
                       skipped: list[str]) -> ComponentResult:
        executed = [s for s, r in scope.results.items() if r.status is not StageStatus.SKIPPED]
        output = {**output, "executed": executed, "skipped": skipped}
        if scope.failed is not None:
            return _failed(stage, scope, output)
        return _success(stage, output)

    # -- conditional / router ---------------------------------------------------------------------
    async def _conditional(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                           input: Any) -> tuple[ComponentResult, StateUpdates]:
        state = run.flow.get(path)
        decided = state is not None
        if state is not None:
            branch = bool(state.branch)
        else:
            value = input.condition
            if input.condition_expression is not None:
                try:
                    value = self._expression(run, stage, path, frame, input.condition_expression,
                                             {"condition": input.condition, "data": input.pass_data})
                except ExpressionError as exc:
                    return _plain_failure(stage, ErrorType.CONFIGURATION, f"condition_expression: {exc}"), []
            branch = truthy(value)
        chosen = input.true_branch_stages if branch else input.false_branch_stages
        others = input.false_branch_stages if branch else input.true_branch_stages
        # The selection follows from the committed branch and the (pinned) config, so a version-1
        # state, which held only the branch, replays the same way.
        state = ControlFlowState.branch_taken("conditional", branch=branch, selected=chosen, skipped=others)
        scope = await self._branch(run, stage, path, frame, state, decided)
        output = {"branch_taken": "true" if branch else "false", "condition_result": branch,
                  "condition_value": input.condition, "data": input.pass_data, "branch": branch}
        return self._branch_result(stage, scope, output, list(others)), []

    async def _router(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                      input: Any) -> tuple[ComponentResult, StateUpdates]:
        state = run.flow.get(path)
        decided = state is not None
        if state is None:
            value = input.value
            if input.value_expression is not None:
                try:
                    value = self._expression(run, stage, path, frame, input.value_expression,
                                             {"value": input.value, "data": input.pass_data})
                except ExpressionError as exc:
                    return _plain_failure(stage, ErrorType.CONFIGURATION, f"value_expression: {exc}"), []
            key = _route_key(value, input.routes, input.case_insensitive)
            matched = value.casefold() if input.case_insensitive and isinstance(value, str) else value
            if key in input.routes:
                route, chosen = key, input.routes[key]
            elif isinstance(input.default_route, str):
                route, chosen = input.default_route, input.routes.get(input.default_route, [])
            elif isinstance(input.default_route, list):
                route, chosen = "default", input.default_route
            else:
                route, chosen = None, []
        else:
            route, chosen, matched = state.route, list(state.selected), state.matched_value
        all_ids = [s for ids in input.routes.values() for s in ids]
        if isinstance(input.default_route, list):
            all_ids += input.default_route
        others = [s for s in dict.fromkeys(all_ids) if s not in chosen]
        state = ControlFlowState.branch_taken("router", route=route, selected=list(chosen), skipped=others,
                                              matched_value=matched)
        scope = await self._branch(run, stage, path, frame, state, decided)
        output = {"route_taken": route if route is not None else "default", "original_value": input.value,
                  "matched_value": matched, "stages_to_execute": list(chosen), "stages_to_skip": others,
                  "data": input.pass_data, "route": route}
        return self._branch_result(stage, scope, output, others), []

    # -- foreach -------------------------------------------------------------------------------------
    async def _foreach(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                       input: Any) -> tuple[ComponentResult, StateUpdates]:
        state = run.flow.get(path)
        if state is None or state.items is None:
            items = input.items
            if isinstance(items, dict):
                items = [{"key": k, "value": v} for k, v in items.items()]
            if not isinstance(items, list):
                return _plain_failure(stage, ErrorType.VALIDATION,
                                      f"items must be a list, got {type(items).__name__}"), []
            total = len(items)
            if input.filter_expression is not None:
                try:
                    items = [item for index, item in enumerate(items) if truthy(self._expression(
                        run, stage, path, frame, input.filter_expression,
                        {input.item_variable: item, input.index_variable: index, "item": item, "index": index}))]
                except ExpressionError as exc:
                    return _plain_failure(stage, ErrorType.CONFIGURATION, f"filter_expression: {exc}"), []
            await self.engine.commit(run, states=[(path, ControlFlowState.loop(items, total_items=total))])
        else:
            items = list(state.items)
            total = state.total_items if state.total_items is not None else len(items)
        group = run.plan.group(input.loop_stages)
        outputs: list[Any] = [None] * len(items)
        errors: list[dict[str, Any]] = []
        first_failure: tuple[int, ScopeOutcome] | None = None
        processed: set[int] = set()

        async def iteration(index: int) -> ScopeOutcome:
            variables = {**frame.variables, input.item_variable: items[index],
                         input.index_variable: index, "item": items[index], "index": index,
                         "loop_item": items[index], "loop_index": index}
            # FlowMason's {{upstream.<foreach>.current_item}} inside the loop body.
            current = {stage.id: {"current_item": items[index], "current_index": index, "total_items": total}}
            child = self._child_frame(frame, f"{path}/{index}", upstream=ChainMap(current, frame.upstream),
                                      variables=variables, failures_handled=not input.break_on_error)
            return await self.engine.run_group(run, group, child)

        def record(index: int, scope: ScopeOutcome) -> None:
            nonlocal first_failure
            if not scope.results:
                return  # nothing of the iteration ran (the run returned before it)
            processed.add(index)
            if scope.failed is not None:
                errors.append({"index": index, "stage": scope.failed.stage_id, "path": scope.failed_path,
                               "error": scope.failed.error,
                               "error_type": scope.failed.error_type.value if scope.failed.error_type else None})
                if first_failure is None:
                    first_failure = (index, scope)
                return
            sinks = [s for s in group.sinks if s in scope.results]
            # An iteration's output is what its last stages show downstream.
            if len(sinks) == 1:
                outputs[index] = visible_output(scope.results[sinks[0]])
            else:
                outputs[index] = {s: visible_output(scope.results[s]) for s in sinks}

        def stop() -> bool:
            return run.cancellation.cancelled or (input.break_on_error and first_failure is not None)

        def passed_by_return(index: int) -> bool:
            # After a return only the iteration holding it still starts (on resume, to finish
            # what encloses the return, such as a trycatch's finally stages).
            return run.returned and not run.on_return_path(f"{path}/{index}")

        if not input.parallel:
            for index in range(len(items)):
                if stop():
                    break
                # After a return the group starts nothing new but restores what it committed, so a
                # resumed loop reports the iterations before the return as the first run did.
                record(index, await iteration(index))
        else:
            running: dict[asyncio.Task[ScopeOutcome], int] = {}
            next_index = 0
            try:
                while True:
                    while next_index < len(items) and len(running) < input.max_parallel and not stop():
                        if not passed_by_return(next_index):
                            running[asyncio.create_task(iteration(next_index))] = next_index
                        next_index += 1
                    if not running:
                        break
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in sorted(done, key=lambda t: running[t]):
                        index = running.pop(task)
                        error = task.exception()
                        if error is not None:
                            raise error
                        record(index, task.result())
            finally:
                for task in running:
                    task.cancel()
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
        if run.cancellation.cancelled and not run.returned:
            raise RunCancelledError(run.cancellation.reason or "cancelled", run_id=run.run_id)
        errors.sort(key=lambda e: e["index"])
        last = max(processed) if processed else None
        output = {"results": outputs if input.collect_results else [], "errors": errors, "count": len(items),
                  "total_items": total, "processed_items": len(processed),
                  "skipped_items": total - len(processed), "is_complete": len(processed) == len(items),
                  "current_item": items[last] if last is not None else None,
                  "current_index": last if last is not None else 0}
        if input.break_on_error and first_failure is not None:
            return _failed(stage, first_failure[1], output), []
        return _success(stage, output), []

    # -- trycatch ------------------------------------------------------------------------------------
    async def _trycatch(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                        input: Any) -> tuple[ComponentResult, StateUpdates]:
        from flowmasond.engine.dag import Catcher

        withdrawn: StateUpdates = []
        propagate = input.error_scope == "propagate"
        caught = self._caught(run, path)
        uncaught: ComponentResult | None = None
        recovered = False
        failure: tuple[ComponentResult, str | None] | None = None
        stopped: RunCancelledError | None = None
        try:
            if caught is None:
                # A failure in the try phase is committed together with this trycatch's catch state
                # (DAGExecutor.run_stage, through the frame's catcher).
                catcher = Catcher(path=path, propagate=propagate,
                                  error_types=frozenset(input.catch_error_types))
                retry = RetryConfig(max_retries=input.max_retries, initial_delay_ms=input.retry_delay_ms,
                                    max_delay_ms=max(input.retry_delay_ms, 30_000), jitter=False) \
                    if input.max_retries else frame.retry_default
                # A resume that dropped a propagated failure runs the try stages again as they ran
                # first, before the catch and finally stages: a return that fired in those has not
                # fired yet (it fires again, from its committed state, when its phase runs).
                try_run = run.before(f"{path}/", [*input.catch_stages, *input.finally_stages])
                try_scope = await self.engine.run_group(
                    try_run, run.plan.group(input.try_stages),
                    self._child_frame(frame, path, catcher=catcher, retry_default=retry))
                caught = self._caught(run, path) if try_scope.failed is not None else None
                if try_run is not run:
                    if caught is None:
                        run.take_return(try_run)  # the catch phase, and its return, are gone
                        # ... from the journal too, committed with this trycatch's result
                        withdrawn = self._fired_returns(run, f"{path}/", input.catch_stages)
                    else:
                        run.adopt_return(try_run)
                if try_scope.failed is not None and caught is None:
                    uncaught = try_scope.failed
            # What the try stages committed is visible to the catch and finally stages, and those
            # a failure kept from running show None: the same whether the try phase just ran or a
            # resume found it over (then the try stages are not run again).
            run.visibility.publish_nested(frame.upstream, stage.id, frame.prefix, run.committed)
            # After a return run_group starts only what encloses it: on resume, a return that
            # fired inside the catch stages still lets them finish.
            if caught is not None:
                error = {"message": caught.message, "type": caught.error_type, "stage": caught.stage}
                # FlowMason's {{upstream.<trycatch>.error}} inside the catch stages; the trycatch's
                # own result replaces it when the stage completes.
                frame.upstream[stage.id] = {"error": caught.message, "error_message": caught.message,
                                            "error_type": caught.error_type, "failed_stage": caught.stage,
                                            "error_occurred": True}
                catch_frame = self._child_frame(frame, path, variables={**frame.variables, "error": error})
                # Likewise a return that fired in the finally stages came after the catch phase.
                catch_run = run.before(f"{path}/", input.finally_stages)
                catch_scope = await self.engine.run_group(catch_run, run.plan.group(input.catch_stages),
                                                          catch_frame)
                if catch_run is not run:
                    run.take_return(catch_run)  # the finally's return fires again in its phase
                if catch_scope.failed is not None:
                    failure = (catch_scope.failed, catch_scope.failed_path)
                else:
                    # FlowMason's meaning: the error was handled and the run goes on.
                    recovered = not propagate
            else:
                run.visibility.hide_all(frame.upstream, input.catch_stages, f"{path}/")
        except RunCancelledError as exc:
            if run.cancellation.interrupting:
                raise  # the run stops to be resumed later: its finally stages run then
            stopped = exc
        if input.finally_stages:
            # Finally stages run however the try and catch phases ended: a failure, a return that
            # fired, or a cancellation; in a view of the run that lets stages start.
            cleanup = run.shielded(f"{path}/", input.finally_stages)
            fin = await self.engine.run_group(cleanup, run.plan.group(input.finally_stages),
                                              self._child_frame(frame, path))
            run.adopt_return(cleanup)
            if fin.failed is not None and failure is None:
                failure = (fin.failed, fin.failed_path)
        if stopped is not None:
            raise stopped
        if uncaught is not None and failure is None:
            failure = (uncaught, None)
        message = caught.message if caught else (uncaught.error if uncaught is not None else None)
        output = {"status": "caught" if caught else ("error" if uncaught is not None else "success"),
                  "error_occurred": caught is not None or uncaught is not None,
                  "error_message": message, "recovered": recovered, "error": message,
                  "error_type": caught.error_type if caught else (
                      uncaught.error_type.value if uncaught is not None and uncaught.error_type else None),
                  "failed_stage": caught.stage if caught else (uncaught.stage_id if uncaught is not None else None),
                  "try_result": {s: frame.upstream.get(s) for s in input.try_stages},
                  "catch_result": {s: frame.upstream.get(s) for s in input.catch_stages},
                  "data": input.pass_data}
        if failure is not None:
            result = failure[0]
            return ComponentResult(stage_id=stage.id, component_type=stage.component_type,
                                   status=StageStatus.FAILED, output=output,
                                   error=f"stage '{result.stage_id}' failed: {result.error}",
                                   error_type=result.error_type), withdrawn
        if caught is not None and propagate:
            return ComponentResult(stage_id=stage.id, component_type=stage.component_type,
                                   status=StageStatus.FAILED, output=output,
                                   error=f"stage '{caught.stage}' failed: {caught.message}",
                                   error_type=ErrorType(caught.error_type) if caught.error_type
                                   else ErrorType.UNKNOWN), withdrawn
        return _success(stage, output), withdrawn

    @staticmethod
    def _fired_returns(run: ExecutingRun, prefix: str, members: list[str]) -> StateUpdates:
        """Each return that fired inside ``members`` (at ``prefix``), as the state withdrawing it."""
        from flowmasond.engine.dag import _under

        return [(p, ControlFlowState.return_withdrawn()) for p, state in run.flow.items()
                if state.kind == "return" and state.returned and _under(p, prefix, members)]

    @staticmethod
    def _caught(run: ExecutingRun, path: str) -> Any:
        """The failure this trycatch is handling, if its catch phase stands.

        The catch phase stands while the failed try stage's result does: a failure the trycatch
        propagates is not handled, so a resume drops it and runs the try stages again.
        """
        state = run.flow.get(path)
        if state is None or state.phase is not TryPhase.CATCH or state.caught is None:
            return None
        failed = run.committed.get(state.caught.path or "")
        if failed is None or failed.status is not StageStatus.FAILED:
            return None
        return state.caught

    # -- subpipeline ---------------------------------------------------------------------------------
    async def _subpipeline(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                           input: Any) -> tuple[ComponentResult, StateUpdates]:
        from flowmasond.engine.dag import MAX_SUBPIPELINE_DEPTH, new_run_id

        if run.depth >= MAX_SUBPIPELINE_DEPTH:
            return _plain_failure(stage, ErrorType.CONFIGURATION, f"subpipeline nesting deeper than "
                                  f"{MAX_SUBPIPELINE_DEPTH} (a pipeline calling itself?)"), []
        state = run.flow.get(path)
        if state is None or state.child_run_id is None:
            if input.pipeline_version is not None:
                try:
                    found = self.engine.lookup_pipeline(input.pipeline_id).version
                except PipelineNotFoundError as exc:
                    return _plain_failure(stage, ErrorType.CONFIGURATION, exc.message), []
                if found != input.pipeline_version:
                    return _plain_failure(stage, ErrorType.CONFIGURATION,
                                          f"pipeline '{input.pipeline_id}' is version {found}, "
                                          f"not the pipeline_version {input.pipeline_version} asked for"), []
            state = ControlFlowState.child_run(input.pipeline_id, new_run_id())
            await self.engine.commit(run, states=[(path, state)])
        assert state.child_run_id is not None and state.pipeline_id is not None
        started = _now()
        token, timed_out, release = self._child_token(run, input.timeout_ms)
        try:
            child = await self.engine.child_runner(run, path, state.child_run_id, state.pipeline_id,
                                                   dict(input.input_data), cancellation=token)
        finally:
            release()
        elapsed_ms = int((_now() - started) * 1000)
        output: dict[str, Any] = {"pipeline_id": state.pipeline_id, "run_id": child.run_id,
                                  "child_run_id": child.run_id, "execution_time_ms": elapsed_ms}
        if child.status is RunStatus.CANCELLED and timed_out():
            message = (f"child run {child.run_id} of '{state.pipeline_id}' passed timeout_ms "
                       f"({input.timeout_ms} ms)")
            return self._child_failed(stage, input, output, "timeout", message, ErrorType.TIMEOUT), []
        if child.status is RunStatus.CANCELLED:
            raise RunCancelledError("child run cancelled", run_id=run.run_id, child_run_id=child.run_id)
        if child.status is RunStatus.INTERRUPTED:
            err = child.error or {}
            message = err.get("message") or "child run interrupted"
            if err.get("code") == UnsafeToRepeatError.code:
                raise UnsafeToRepeatError(message, run_id=run.run_id, child_run_id=child.run_id, path=path)
            # Anything else (a storage fault, a stop) interrupts the parent the same way, so it is
            # recovered like the child would have been: automatically.
            raise ChildRunInterruptedError(message, cause_code=err.get("code"), run_id=run.run_id,
                                           child_run_id=child.run_id, path=path)
        if child.status is not RunStatus.SUCCEEDED:
            err = child.error or {}
            message = (f"child run {child.run_id} of '{state.pipeline_id}' failed: "
                       f"{err.get('message', 'unknown error')}")
            result = self._child_failed(stage, input, output, "failed", message, ErrorType.COMPONENT)
            result.usage = child.usage
            return result, []
        result = _success(stage, {**output, "status": "completed", "result": child.output, "output": child.output,
                                  "error": None})
        result.usage = child.usage
        return result, []

    def _child_token(self, run: ExecutingRun, timeout_ms: int | None) -> tuple[CancellationToken, Callable[[], bool],
                                                                             Callable[[], None]]:
        """The child's cancellation: the parent's, or with timeout_ms a linked token cancelled on time."""
        if timeout_ms is None:
            return run.cancellation, lambda: False, lambda: None
        parent = run.cancellation
        child = CancellationToken(grace_s=parent.grace_s)
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            # A deadline: in-flight stages of the child stop at once, without the cancel grace.
            child.cancel("subpipeline timeout_ms passed", grace_s=0.0)

        def follow_parent() -> None:
            child.cancel(parent.reason or "cancelled", grace_s=parent.grace_s)

        parent.add_callback(follow_parent)
        if parent.cancelled:
            follow_parent()
        timer = asyncio.get_running_loop().call_later(timeout_ms / 1000, expire)

        def release() -> None:
            timer.cancel()
            parent.remove_callback(follow_parent)

        return child, lambda: fired and not parent.cancelled, release

    @staticmethod
    def _child_failed(stage: StageConfig, input: Any, output: dict[str, Any], status: str, message: str,
                      error_type: ErrorType) -> ComponentResult:
        """A failed child run: this stage fails, or with on_error=continue returns default_result."""
        output = {**output, "status": status, "error": message, "result": input.default_result,
                  "output": input.default_result}
        if input.on_error == "continue":
            return _success(stage, output)
        result = _plain_failure(stage, error_type, message)
        result.output = output
        return result

    # -- return ----------------------------------------------------------------------------------------
    async def _return(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                      input: Any) -> tuple[ComponentResult, StateUpdates]:
        condition = input.condition
        if input.condition_expression is not None:
            try:
                condition = self._expression(run, stage, path, frame, input.condition_expression, {})
            except ExpressionError as exc:
                return _plain_failure(stage, ErrorType.CONFIGURATION, f"condition_expression: {exc}"), []
        if not truthy(condition):
            return _success(stage, {"should_return": False, "return_value": None, "message": input.message,
                                    "status": input.status, "returned": False}), []
        # Committed with this stage's result; the executor sets the run's return flag as it commits,
        # before the commit is awaited, so no sibling starts meanwhile.
        state = ControlFlowState.return_fired(input.return_value, input.message)
        return _success(stage, {"should_return": True, "return_value": input.return_value,
                                "message": input.message, "status": input.status,
                                "returned": True}), [(path, state)]


def _now() -> float:
    import time

    return time.time()


def _success(stage: StageConfig, output: dict[str, Any]) -> ComponentResult:
    return ComponentResult(stage_id=stage.id, component_type=stage.component_type, status=StageStatus.SUCCESS,
                           output=output)


def _plain_failure(stage: StageConfig, error_type: ErrorType, message: str) -> ComponentResult:
    return ComponentResult(stage_id=stage.id, component_type=stage.component_type, status=StageStatus.FAILED,
                           error=message, error_type=error_type)


def _failed(stage: StageConfig, scope: ScopeOutcome, output: dict[str, Any]) -> ComponentResult:
    failed = scope.failed
    assert failed is not None
    return ComponentResult(stage_id=stage.id, component_type=stage.component_type, status=StageStatus.FAILED,
                           output=output, error=f"stage '{failed.stage_id}' failed: {failed.error}",
                           error_type=failed.error_type)
