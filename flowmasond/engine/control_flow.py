"""ControlFlowHandler: conditional, router, foreach, trycatch, subpipeline and return.

Each decision is journaled before the work it decides starts (a branch taken, a route, the item
list of a loop, a child run id), or together with the result that caused it (a trycatch entering
its catch phase, a return), so a resumed run never takes a decision twice.
"""

from __future__ import annotations

import asyncio
from collections import ChainMap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.expressions import ExpressionError, truthy
from flowmasond.engine.interfaces import ComponentResult, ErrorType, Record, RunStatus, StageStatus
from flowmasond.engine.models import RetryConfig
from flowmasond.engine.templates import evaluate_expression
from flowmasond.errors import PipelineNotFoundError, RunCancelledError, UnsafeToRepeatError

if TYPE_CHECKING:
    from flowmasond.engine.dag import DAGExecutor, Frame, ExecutingRun, ScopeOutcome
    from flowmasond.engine.models import StageConfig
    from flowmasond.engine.registry import ComponentMeta

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
                      frame: Frame, input: Any) -> tuple[ComponentResult, list[Record]]:
        """Run a control-flow stage; returns its result and records to commit with it."""
        handler = getattr(self, f"_{stage.component_type}")
        started = _now()
        if self.engine.hooks is not None:
            await self.engine.hooks.on_stage_start(run.run_id, path, stage, 1)
        result, extra = await handler(run, stage, path, frame, input)
        result.started_at = started
        result.finished_at = _now()
        result.attempts = result.attempts or 1
        return result, extra

    # -- helpers ----------------------------------------------------------------------------------
    def _child_frame(self, frame: Frame, path: str, **changes: Any) -> Frame:
        from flowmasond.engine.dag import Frame

        return Frame(prefix=f"{path}/", upstream=changes.get("upstream", frame.upstream),
                     variables=changes.get("variables", frame.variables),
                     failures_handled=changes.get("failures_handled", False),
                     on_failure=changes.get("on_failure"),
                     retry_default=changes.get("retry_default", frame.retry_default))

    def _expression(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame, source: str,
                    extra: dict[str, Any]) -> Any:
        """A FlowMason expression field evaluated in the stage's template scope (sandboxed)."""
        scope = self.engine.template_scope(run, stage.id, path, frame)
        return evaluate_expression(source, scope, extra)

    async def _branch(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                      decision: dict[str, Any], chosen: list[str], others: list[str],
                      decided: bool) -> ScopeOutcome:
        """Journal a branch decision (with the skip set), then run the chosen stages."""
        if not decided:
            skips = [Record.of_result(f"{path}/{s}", ComponentResult.skipped(
                s, run.plan.stages[s].component_type, f"not selected by {stage.component_type} '{stage.id}'"))
                for s in others if s in run.plan.stages]
            await run.store.commit([Record.of_decision(path, decision), *skips])
            run.decisions[path] = decision
            for record in skips:
                assert record.result is not None
                run.committed[record.path] = record.result
                if self.engine.hooks is not None:
                    await self.engine.hooks.on_stage_skipped(run.run_id, record.path,
                                                             run.plan.stages[record.result.stage_id],
                                                             record.result.error or "")
        for s in others:
            frame.upstream[s] = None
            for _, child in run.plan.flat_descendants(s, f"{path}/"):
                frame.upstream.setdefault(child, None)
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
                           input: Any) -> tuple[ComponentResult, list[Record]]:
        decision = run.decisions.get(path)
        decided = decision is not None
        if decision is None:
            value = input.condition
            if input.condition_expression is not None:
                try:
                    value = self._expression(run, stage, path, frame, input.condition_expression,
                                             {"condition": input.condition, "data": input.pass_data})
                except ExpressionError as exc:
                    return _plain_failure(stage, ErrorType.CONFIGURATION, f"condition_expression: {exc}"), []
            decision = {"type": "conditional", "branch": truthy(value)}
        branch = bool(decision["branch"])
        chosen = input.true_branch_stages if branch else input.false_branch_stages
        others = input.false_branch_stages if branch else input.true_branch_stages
        scope = await self._branch(run, stage, path, frame, decision, chosen, others, decided)
        output = {"branch_taken": "true" if branch else "false", "condition_result": branch,
                  "condition_value": input.condition, "data": input.pass_data, "branch": branch}
        return self._branch_result(stage, scope, output, others), []

    async def _router(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                      input: Any) -> tuple[ComponentResult, list[Record]]:
        decision = run.decisions.get(path)
        decided = decision is not None
        if decision is None:
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
            decision = {"type": "router", "route": route, "stages": list(chosen), "matched_value": matched}
        chosen = list(decision["stages"])
        all_ids = [s for ids in input.routes.values() for s in ids]
        if isinstance(input.default_route, list):
            all_ids += input.default_route
        others = [s for s in dict.fromkeys(all_ids) if s not in chosen]
        scope = await self._branch(run, stage, path, frame, decision, chosen, others, decided)
        route = decision["route"]
        output = {"route_taken": route if route is not None else "default", "original_value": input.value,
                  "matched_value": decision.get("matched_value"),
                  "stages_to_execute": chosen, "stages_to_skip": others, "data": input.pass_data,
                  "route": route}
        return self._branch_result(stage, scope, output, others), []

    # -- foreach -------------------------------------------------------------------------------------
    async def _foreach(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                       input: Any) -> tuple[ComponentResult, list[Record]]:
        decision = run.decisions.get(path)
        if decision is None:
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
            decision = {"type": "foreach", "items": items, "total": total}
            await run.store.commit([Record.of_decision(path, decision)])
            run.decisions[path] = decision
        items = decision["items"]
        total = int(decision.get("total", len(items)))
        group = run.plan.group(input.loop_stages)
        outputs: list[Any] = [None] * len(items)
        processed: set[int] = set()
        errors: list[dict[str, Any]] = []
        first_failure: tuple[int, ScopeOutcome] | None = None

        async def iteration(index: int) -> ScopeOutcome:
            variables = {**frame.variables, input.item_variable: items[index],
                         input.index_variable: index, "item": items[index], "index": index,
                         "loop_item": items[index], "loop_index": index}
            # FlowMason's {{upstream.<foreach>.current_item}} inside the loop body.
            current = {stage.id: {"current_item": items[index], "current_index": index,
                                  "total_items": total}}
            child = self._child_frame(frame, f"{path}/{index}", upstream=ChainMap(current, frame.upstream),
                                      variables=variables, failures_handled=not input.break_on_error)
            return await self.engine.run_group(run, group, child)

        def record(index: int, scope: ScopeOutcome) -> None:
            nonlocal first_failure
            processed.add(index)
            if scope.failed is not None:
                errors.append({"index": index, "stage": scope.failed.stage_id, "path": scope.failed_path,
                               "error": scope.failed.error,
                               "error_type": scope.failed.error_type.value if scope.failed.error_type else None})
                if first_failure is None:
                    first_failure = (index, scope)
                return
            sinks = [s for s in group.sinks if s in scope.results]
            if len(sinks) == 1:
                r = scope.results[sinks[0]]
                outputs[index] = r.output if r.ok else None
            else:
                outputs[index] = {s: (scope.results[s].output if scope.results[s].ok else None) for s in sinks}

        def stop() -> bool:
            return run.returned or run.cancellation.cancelled or (
                input.break_on_error and first_failure is not None)

        if not input.parallel:
            for index in range(len(items)):
                if stop():
                    break
                record(index, await iteration(index))
        else:
            running: dict[asyncio.Task[ScopeOutcome], int] = {}
            next_index = 0
            try:
                while True:
                    while next_index < len(items) and len(running) < input.max_parallel and not stop():
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
                        input: Any) -> tuple[ComponentResult, list[Record]]:
        caught = run.decisions.get(path)
        uncaught: ComponentResult | None = None
        if caught is None:
            def enter_catch(failed_path: str, result: ComponentResult) -> list[Record] | None:
                kind = result.error_type.value if result.error_type else ErrorType.UNKNOWN.value
                if input.catch_error_types and kind not in input.catch_error_types:
                    return None  # not ours to catch: the failure propagates
                decision = {"type": "trycatch", "phase": "catch", "error": result.error,
                            "error_type": result.error_type.value if result.error_type else None,
                            "failed_stage": result.stage_id, "failed_path": failed_path}
                run.decisions[path] = decision
                return [Record.of_decision(path, decision)]

            retry = RetryConfig(max_retries=input.max_retries, initial_delay_ms=input.retry_delay_ms,
                                max_delay_ms=max(input.retry_delay_ms, 30_000), jitter=False) \
                if input.max_retries else frame.retry_default
            try_scope = await self.engine.run_group(
                run, run.plan.group(input.try_stages),
                self._child_frame(frame, path, on_failure=enter_catch, retry_default=retry))
            caught = run.decisions.get(path) if try_scope.failed is not None else None
            if try_scope.failed is not None and caught is None:
                uncaught = try_scope.failed
        else:
            for _, child in run.plan.flat_descendants(stage.id, frame.prefix):
                result = run.committed.get(f"{frame.prefix}{stage.id}/{child}")
                if result is not None:
                    frame.upstream[child] = result.output if result.ok else None
        failure: tuple[ComponentResult, str | None] | None = None
        recovered = False
        if caught is not None and not run.returned:
            error = {"message": caught.get("error"), "type": caught.get("error_type"),
                     "stage": caught.get("failed_stage")}
            # FlowMason's {{upstream.<trycatch>.error}} inside the catch stages; the trycatch's
            # own result replaces it when the stage completes.
            frame.upstream[stage.id] = {"error": caught.get("error"), "error_message": caught.get("error"),
                                        "error_type": caught.get("error_type"),
                                        "failed_stage": caught.get("failed_stage"), "error_occurred": True}
            catch_frame = self._child_frame(frame, path, variables={**frame.variables, "error": error})
            catch_scope = await self.engine.run_group(run, run.plan.group(input.catch_stages), catch_frame)
            if catch_scope.failed is not None:
                failure = (catch_scope.failed, catch_scope.failed_path)
            else:
                # FlowMason's meaning: the error was handled and the run goes on.
                recovered = input.error_scope == "continue"
        else:
            for s in input.catch_stages:
                frame.upstream.setdefault(s, None)
        if input.finally_stages and not run.cancellation.cancelled:
            fin = await self.engine.run_group(run, run.plan.group(input.finally_stages),
                                              self._child_frame(frame, path))
            if fin.failed is not None and failure is None:
                failure = (fin.failed, fin.failed_path)
        if uncaught is not None and failure is None:
            failure = (uncaught, None)
        message = caught.get("error") if caught else (uncaught.error if uncaught is not None else None)
        output = {"status": "caught" if caught else ("error" if uncaught is not None else "success"),
                  "error_occurred": caught is not None or uncaught is not None,
                  "error_message": message, "recovered": recovered, "error": message,
                  "error_type": caught.get("error_type") if caught else (
                      uncaught.error_type.value if uncaught is not None and uncaught.error_type else None),
                  "failed_stage": caught.get("failed_stage") if caught else (
                      uncaught.stage_id if uncaught is not None else None),
                  "try_result": {s: frame.upstream.get(s) for s in input.try_stages},
                  "catch_result": {s: frame.upstream.get(s) for s in input.catch_stages},
                  "data": input.pass_data}
        if failure is not None:
            result = failure[0]
            return ComponentResult(stage_id=stage.id, component_type=stage.component_type,
                                   status=StageStatus.FAILED, output=output,
                                   error=f"stage '{result.stage_id}' failed: {result.error}",
                                   error_type=result.error_type), []
        if caught is not None and input.error_scope == "propagate":
            return ComponentResult(stage_id=stage.id, component_type=stage.component_type,
                                   status=StageStatus.FAILED, output=output,
                                   error=f"stage '{caught.get('failed_stage')}' failed: {caught.get('error')}",
                                   error_type=ErrorType(caught["error_type"]) if caught.get("error_type")
                                   else ErrorType.UNKNOWN), []
        return _success(stage, output), []

    # -- subpipeline ---------------------------------------------------------------------------------
    async def _subpipeline(self, run: ExecutingRun, stage: StageConfig, path: str, frame: Frame,
                           input: Any) -> tuple[ComponentResult, list[Record]]:
        from flowmasond.engine.dag import MAX_SUBPIPELINE_DEPTH, new_run_id

        if run.depth >= MAX_SUBPIPELINE_DEPTH:
            too_deep = f"subpipeline nesting deeper than {MAX_SUBPIPELINE_DEPTH} (a pipeline calling itself?)"
            return _plain_failure(stage, ErrorType.CONFIGURATION, too_deep), []
        decision = run.decisions.get(path)
        if decision is None:
            if input.pipeline_version is not None:
                try:
                    found = self.engine.lookup_pipeline(input.pipeline_id).version
                except PipelineNotFoundError as exc:
                    return _plain_failure(stage, ErrorType.CONFIGURATION, exc.message), []
                if found != input.pipeline_version:
                    return _plain_failure(stage, ErrorType.CONFIGURATION,
                                          f"pipeline '{input.pipeline_id}' is version {found}, "
                                          f"not the pipeline_version {input.pipeline_version} asked for"), []
            decision = {"type": "subpipeline", "pipeline_id": input.pipeline_id, "child_run_id": new_run_id()}
            await run.store.commit([Record.of_decision(path, decision)])
            run.decisions[path] = decision
        started = _now()
        token, timed_out, release = self._child_token(run, input.timeout_ms)
        try:
            child = await self.engine.child_runner(run, path, decision["child_run_id"], decision["pipeline_id"],
                                                   dict(input.input_data), cancellation=token)
        finally:
            release()
        elapsed_ms = int((_now() - started) * 1000)
        output: dict[str, Any] = {"pipeline_id": decision["pipeline_id"], "run_id": child.run_id,
                                  "child_run_id": child.run_id, "execution_time_ms": elapsed_ms}
        if child.status is RunStatus.CANCELLED and timed_out():
            message = (f"child run {child.run_id} of '{decision['pipeline_id']}' passed timeout_ms "
                       f"({input.timeout_ms} ms)")
            return self._child_failed(stage, input, output, "timeout", message, ErrorType.TIMEOUT), []
        if child.status is RunStatus.CANCELLED:
            raise RunCancelledError("child run cancelled", run_id=run.run_id, child_run_id=child.run_id)
        if child.status is RunStatus.INTERRUPTED:
            err = child.error or {}
            raise UnsafeToRepeatError(err.get("message") or "child run interrupted", run_id=run.run_id,
                                      child_run_id=child.run_id, path=path)
        if child.status is not RunStatus.SUCCEEDED:
            err = child.error or {}
            message = (f"child run {child.run_id} of '{decision['pipeline_id']}' failed: "
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
                      input: Any) -> tuple[ComponentResult, list[Record]]:
        condition = input.condition
        if input.condition_expression is not None:
            try:
                condition = self._expression(run, stage, path, frame, input.condition_expression, {})
            except ExpressionError as exc:
                return _plain_failure(stage, ErrorType.CONFIGURATION, f"condition_expression: {exc}"), []
        if not truthy(condition):
            return _success(stage, {"should_return": False, "return_value": None, "message": input.message,
                                    "status": input.status, "returned": False}), []
        decision = {"type": "return", "returned": True, "value": input.return_value, "message": input.message}
        # The flag is set before the commit returns so no sibling starts meanwhile; the decision
        # record is committed with this stage's result.
        run.returned, run.return_value = True, input.return_value
        run.decisions[path] = decision
        return _success(stage, {"should_return": True, "return_value": input.return_value,
                                "message": input.message, "status": input.status,
                                "returned": True}), [Record.of_decision(path, decision)]


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
