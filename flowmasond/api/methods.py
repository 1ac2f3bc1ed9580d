"""The control socket's methods, bound to the run manager, the catalog and the journal."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowmason_client.protocol import (
    PROTOCOL_VERSION,
    EmptyParams,
    ErrorCode,
    PipelineShowParams,
    PipelineValidateParams,
    RunBreakParams,
    RunEventsParams,
    RunListParams,
    RunOutputParams,
    RunLogsParams,
    RunPruneParams,
    RunRerunParams,
    RunRefParams,
    RunResumeParams,
    RunStartParams,
    ScheduleNextParams,
    ScheduleRefParams,
)
from flowmasond import __version__
from flowmasond.api.dispatch import Dispatcher, StreamResult
from flowmasond.api.framing import RpcError
from flowmasond.api.graph import run_graph
from flowmasond.api.peercred import PeerInfo
from flowmasond.engine.interfaces import ErrorType, RunStatus
from flowmasond.errors import LimitExceededError, PermissionDeniedError, StageError, StartingError
from flowmasond.pipelines.loader import FileLimits, check_pipeline_dict, check_pipeline_file, value_depth
from flowmasond.runs import event_dict
from flowmasond.pipelines.dag_text import dag_rows
from flowmasond.scheduling.entries import ScheduleNotFoundError
from flowmasond.streaming import TOKEN_KIND, with_tokens

if TYPE_CHECKING:
    from flowmasond.daemon import Daemon


def run_info(row: Any, *, stages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A journal run row as the protocol's RunInfo."""
    info = {
        "run_id": row.run_id,
        "pipeline_id": row.pipeline_id,
        "status": row.status.value,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "inputs": row.inputs,
        "output": row.output,
        "error": row.error,
        "usage": row.usage.to_dict() if hasattr(row.usage, "to_dict") else row.usage,
        "schedule_id": row.schedule_id,
        "fire_time": row.fire_time,
        "parent_run_id": row.parent_run_id,
        "pipeline_hash": row.pipeline_hash,
        "recovery_attempts": row.recovery_attempts,
        "resumed_count": row.resumed_count,
        "forked_from": row.forked_from,
        "from_stage": row.from_stage,
        "breakpoints": list(row.breakpoints),
        "stepping": row.stepping,
        "paused_at": row.paused_at,
    }
    if stages is not None:
        info["stages"] = stages
    return info


def in_flight_status(run_status: RunStatus) -> str:
    """What a stage that started but committed no result is, given its run's status.

    Only a running run has stages running; in a cancelled run such a stage was killed by the
    cancel, in any other run it was interrupted (and runs again on resume).
    """
    if run_status is RunStatus.RUNNING:
        return "running"
    return "cancelled" if run_status is RunStatus.CANCELLED else "interrupted"


def stage_rows(snapshot: Any, pipeline: Any, run_status: RunStatus) -> list[dict[str, Any]]:
    """Every stage path of a run: committed results, in-flight attempts, and not-yet-run stages."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, result in snapshot.results.items():
        seen.add(path)
        rows.append({
            "path": path, "stage_id": result.stage_id, "component_type": result.component_type,
            "status": result.status.value, "attempts": result.attempts, "error": result.error,
            "error_type": result.error_type.value if result.error_type else None,
            "handled": result.handled, "started_at": result.started_at, "finished_at": result.finished_at,
            "duration_ms": max(result.finished_at - result.started_at, 0.0) * 1000.0,
            "usage": result.usage.to_dict(), "output": result.output,
            "trace_id": result.trace_id, "span_id": result.span_id,
        })
    for path, attempt in snapshot.attempts.items():
        if path not in seen:
            seen.add(path)
            rows.append({"path": path, "stage_id": path.rsplit("/", 1)[-1],
                         "status": in_flight_status(run_status), "attempts": attempt})
    if pipeline is not None:
        for stage in pipeline.stages:
            if stage.id not in seen and not any(p.endswith("/" + stage.id) for p in seen):
                rows.append({"path": stage.id, "stage_id": stage.id, "component_type": stage.component_type,
                             "status": "not_started"})
    return rows


# Built once (json.dumps with options builds an encoder per call).
_SIZE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (what the journal stores and a reply carries)."""
    return len(_SIZE_ENCODER.encode(value).encode())


def bounded_output(holder: dict[str, Any], limit: int, budget: list[int] | None = None) -> None:
    """Replace ``holder['output']`` by None and an ``output_truncated`` note when it exceeds ``limit``,
    or what is left of ``budget`` (a one-element list, decreased by every output kept)."""
    output = holder.get("output")
    if output is None or isinstance(output, (bool, int, float)):
        return
    size = json_size(output)
    if size > limit:
        holder["output"] = None
        holder["output_truncated"] = {"bytes": size, "limit": limit, "limit_name": "max_show_output_bytes"}
    elif budget is not None and size > budget[0]:
        holder["output"] = None
        holder["output_truncated"] = {"bytes": size, "limit": budget[0], "limit_name": "max_show_bytes"}
    elif budget is not None:
        budget[0] -= size


def _decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    """``runs.list``'s cursor back into (created_at, run_id); a malformed one is -32602."""
    if cursor is None:
        return None
    at, sep, run_id = cursor.partition(":")
    try:
        if not sep or not run_id:
            raise ValueError(cursor)
        return float(at), run_id
    except ValueError:
        raise RpcError(ErrorCode.INVALID_PARAMS, "Invalid params: cursor is not one runs.list returned",
                       {"cursor": cursor}) from None


def build_dispatcher(daemon: Daemon) -> Dispatcher:
    """Register every control method of the protocol against ``daemon``."""
    d = Dispatcher()
    manager = daemon.runs
    journal = daemon.journal
    catalog = daemon.catalog
    limits = daemon.config.limits
    file_limits = FileLimits(max_bytes=limits.max_pipeline_file_bytes, max_depth=limits.max_json_depth)

    def run_view(row: Any, *, stages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """run_info with the run's output bounded (runs.output returns it in full)."""
        info = run_info(row, stages=stages)
        bounded_output(info, limits.max_show_output_bytes)
        return info

    async def health(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        state = "stopping" if daemon.stopping else ("ok" if daemon.ready else "starting")
        return {"status": state, "version": __version__,
                "uptime_s": time.monotonic() - daemon.started_monotonic,
                # What the caller's uid may do, so that a viewer shows only the actions it may take.
                "uid": peer.uid, "can_mutate": peer.privileged}

    async def version(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        return {"version": __version__, "protocol_version": PROTOCOL_VERSION,
                "python_version": platform.python_version()}

    async def status(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        counts = manager.counts()
        return {
            "version": __version__, "protocol_version": PROTOCOL_VERSION, "pid": os.getpid(),
            "uptime_s": time.monotonic() - daemon.started_monotonic, "stopping": daemon.stopping,
            "state_dir": str(daemon.config.state_dir), "socket_path": str(daemon.config.socket),
            "runs": await journal.count_runs_by_status(),
            "active_runs": counts["running"], "queued_runs": counts["queued"],
            "max_concurrent_runs": daemon.config.max_concurrent_runs,
            "pipelines": len(catalog.ids()),
            "invalid_pipelines": len(catalog.broken_files()) + sum(1 for e in catalog.entries().values() if e.issues),
            # Loaded pipelines whose file on disk is now invalid (the last good version runs), and
            # files that never loaded: counted apart, so errors are never more than pipelines.
            "pipelines_with_errors": sum(1 for e in catalog.entries().values() if e.issues),
            "invalid_files": len(catalog.broken_files()),
            "schedules": daemon.schedule_count(),
        }

    def pipeline_info(pid: str, entry: Any) -> dict[str, Any]:
        p = entry.pipeline
        return {
            "pipeline_id": pid, "name": p.name, "version": p.version, "description": p.description,
            "path": str(entry.path), "stage_count": len(p.stages),
            "schedules": [s.model_dump(mode="json") for s in p.schedules],
            "valid": not entry.issues, "definition_hash": p.content_hash(),
            "warnings": [i.to_dict() for i in entry.warnings],
            "error": {"message": "the file on disk is invalid; the last good version is in force",
                      "issues": [i.to_dict() for i in entry.issues]} if entry.issues else None,
        }

    async def pipelines_list(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        infos = [pipeline_info(pid, e) for pid, e in sorted(catalog.entries().items()) if e.pipeline is not None]
        for path, issues in sorted(catalog.broken_files().items()):
            infos.append({"pipeline_id": Path(path).name.removesuffix(".pipeline.json"), "path": str(path),
                          "valid": False,
                          "error": {"message": "invalid pipeline file", "issues": [i.to_dict() for i in issues]}})
        return {"pipelines": infos}

    async def pipelines_show(params: PipelineShowParams, peer: PeerInfo) -> dict[str, Any]:
        pipeline = catalog.get(params.pipeline_id)
        entry = catalog.entries()[params.pipeline_id]
        return {**pipeline_info(params.pipeline_id, entry),
                "definition": pipeline.model_dump(mode="json", by_alias=True, exclude_none=True),
                "dag": dag_rows(manager.executor.plan_for(pipeline))}

    async def pipelines_validate(params: PipelineValidateParams, peer: PeerInfo) -> dict[str, Any]:
        if params.path is not None and not peer.privileged:
            # The daemon may run as root: reading an arbitrary path for any peer would leak files.
            raise PermissionDeniedError("validating a file by path needs a privileged peer; send the definition "
                                        "inline instead", uid=peer.uid, path=params.path)
        if params.path is not None:
            check = check_pipeline_file(Path(params.path), catalog.registry, file_limits, strict=catalog.strict)
        else:
            check = check_pipeline_dict(dict(params.definition or {}), catalog.registry, "<request>", file_limits,
                                        strict=catalog.strict)
        warnings = [i.to_dict() for i in check.warnings]
        if not check.ok:
            return {"valid": False, "issues": [i.to_dict() for i in check.issues], "warnings": warnings}
        assert check.config is not None
        return {"valid": True, "pipeline_id": check.config.id, "issues": [], "warnings": warnings}

    async def runs_start(params: RunStartParams, peer: PeerInfo) -> dict[str, Any]:
        depth = value_depth(params.inputs, limits.max_json_depth)
        if depth > limits.max_json_depth:
            raise LimitExceededError(f"the inputs are nested more than {limits.max_json_depth} levels deep",
                                     limit="max_json_depth", value=limits.max_json_depth)
        size = json_size(params.inputs)
        if size > limits.max_run_input_bytes:
            raise LimitExceededError(f"the inputs are {size} bytes as JSON, more than the limit",
                                     limit="max_run_input_bytes", value=limits.max_run_input_bytes)
        try:
            # The row as created (pending or running) answers: no journal read per start.
            row = await manager.start_run(params.pipeline_id, dict(params.inputs), break_at=params.break_at)
        except StageError as exc:
            if exc.error_type is not ErrorType.VALIDATION:
                raise
            # The inputs are this call's params: not matching the input_schema is -32602, not a stage failure.
            raise RpcError(ErrorCode.INVALID_PARAMS, f"Invalid params: {exc.message}", exc.to_dict()) from None
        return run_view(row)

    async def runs_list(params: RunListParams, peer: PeerInfo) -> dict[str, Any]:
        filters = {"status": RunStatus(params.status) if params.status else None,
                   "pipeline_id": params.pipeline_id, "since": params.since, "until": params.until,
                   "schedule_id": params.schedule_id, "parent_run_id": params.parent_run_id}
        cursor = _decode_cursor(params.cursor)
        rows = await journal.list_runs(**filters, limit=params.limit, cursor=cursor)
        result: dict[str, Any] = {"runs": [run_view(r) for r in rows], "next_cursor": None}
        if len(rows) == params.limit:
            # Opaque to clients: the last run's creation time and id, so a page never shifts
            # when new runs arrive (an offset would).
            result["next_cursor"] = f"{rows[-1].created_at!r}:{rows[-1].run_id}"
        if params.count:
            result["count"] = await journal.count_runs(**filters)
        return result

    async def _row(run_id: str) -> Any:
        return await journal.get_run(run_id)  # RunNotFoundError names the run

    async def runs_show(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        row = await _row(params.run_id)
        snapshot = await journal.load_snapshot(params.run_id)
        pipeline = await journal.pinned_definition(params.run_id)
        # Outputs can be megabytes each and a loop makes thousands of stages: show bounds each output,
        # all outputs together, and the number of stage rows; runs.output fetches any one in full.
        stages = stage_rows(snapshot, pipeline, row.status)
        info = run_view(row, stages=stages[:limits.max_show_stages])
        if len(stages) > limits.max_show_stages:
            info["stages_omitted"] = {"count": len(stages) - limits.max_show_stages,
                                      "limit": limits.max_show_stages, "limit_name": "max_show_stages"}
        budget = [limits.max_show_bytes]
        for stage in info["stages"]:
            bounded_output(stage, limits.max_show_output_bytes, budget)
        info["children"] = [run_view(c) for c in await journal.child_runs(params.run_id)]
        info["total_stages"] = len(pipeline.stages)
        # What a follower's [done/total] counts: top-level stages (loop bodies and branches run under them).
        info["top_stages"] = len(manager.executor.plan_for(pipeline).top.members)
        info["log_stages"] = await journal.log_stages(params.run_id)
        if row.forked_from and row.from_stage:
            # The run.forked event (written with the run) lists the results copied from the source.
            first = await journal.events(params.run_id, after_id=0, limit=4)
            reused = {p for e in first if e.kind == "run.forked" for p in (e.data or {}).get("reused", [])}
            for stage in info["stages"]:
                stage["reused"] = stage["path"] in reused
        info["graph"] = run_graph(pipeline)
        return info

    async def runs_output(params: RunOutputParams, peer: PeerInfo) -> dict[str, Any]:
        row = await _row(params.run_id)
        if params.path is None:
            return {"run_id": params.run_id, "path": None, "output": row.output}
        snapshot = await journal.load_snapshot(params.run_id)
        result = snapshot.results.get(params.path)
        if result is None:
            raise StageError("the run has no committed result for this stage path", run_id=params.run_id,
                             path=params.path, known=sorted(snapshot.results)[:20])
        return {"run_id": params.run_id, "path": params.path, "output": result.output}

    async def runs_events(params: RunEventsParams, peer: PeerInfo) -> AsyncIterator[Any]:
        last = params.after_id or 0
        if params.follow:
            # Streamed LLM tokens ride along, as non-durable events (they do not move last_id).
            source = with_tokens(manager.follow(params.run_id, after_id=last, follow=True), daemon.tokens,
                                 params.run_id, after_id=last)
            async for event in source:
                if event["kind"] != TOKEN_KIND:
                    last = int(event["id"])  # the last one sent: ids need not increase (several nodes)
                yield event
            yield StreamResult({"events": [], "last_id": last, "more": False,
                                "run": run_view(await _row(params.run_id))})
            return
        row = await _row(params.run_id)  # RunNotFoundError for an unknown run
        page = min(params.limit or limits.events_page_size, limits.events_page_size)
        # One more than the page: whether another page follows, without a second query.
        # A finished run's events are final: read all of them; a running one's only the settled
        # ones, so that the next page (after last_id) cannot pass an event committing meanwhile.
        rows = await journal.events(params.run_id, after_id=last, limit=page + 1,
                                    settled=not row.status.finished)
        events = [event_dict(e) for e in rows[:page]]
        if events:
            last = int(events[-1]["id"])
        yield StreamResult({"events": events, "last_id": last, "more": len(rows) > page, "run": run_view(row)})

    async def runs_cancel(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        result = await manager.cancel(params.run_id)
        return await _stopping(params.run_id, forwarded=result.get("node"))

    async def _moved_on(run_id: str, before: str, limit_s: float = 5.0) -> Any:
        """The run once its status left ``before`` and ``pending`` (a claimed resume passes through it),
        bounded: replies show the state after the operation."""
        deadline = time.monotonic() + limit_s
        row = await _row(run_id)
        while row.status.value in (before, "pending") and time.monotonic() < deadline:
            await manager.wait_changed(timeout=0.1)
            row = await _row(run_id)
        return row

    async def runs_resume(params: RunResumeParams, peer: PeerInfo) -> dict[str, Any]:
        definition = "current" if params.accept_changed_definition else ("pinned" if params.pinned else None)
        before = (await _row(params.run_id)).status.value
        await manager.resume(params.run_id, force=params.force, definition=definition)
        return run_view(await _moved_on(params.run_id, before))

    async def runs_logs(params: RunLogsParams, peer: PeerInfo) -> AsyncIterator[Any]:
        await _row(params.run_id)
        # What is buffered now is committed first: a reader never misses output already printed.
        await manager.stage_logs.flush()
        cursor = params.after_id
        collected: list[dict[str, Any]] = []
        while True:
            batch = await journal.logs(params.run_id, path=params.stage, after_id=cursor)
            for chunk in batch:
                cursor = chunk.id
                if params.follow:
                    yield chunk.to_dict()
                else:
                    collected.append(chunk.to_dict())
            if batch:
                continue
            if not params.follow:
                break
            row = await _row(params.run_id)
            if row.status.finished and params.run_id not in manager.active:
                # The log store commits the last chunks when the run ends: one more read after that.
                await manager.stage_logs.flush()
                for chunk in await journal.logs(params.run_id, path=params.stage, after_id=cursor):
                    cursor = chunk.id
                    yield chunk.to_dict()
                break
            await manager.wait_changed(timeout=0.5)
        yield StreamResult({"logs": collected, "last_id": cursor,
                            "stages": await journal.log_stages(params.run_id)})

    async def runs_terminate(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        result = await manager.cancel(params.run_id, now=True)
        return await _stopping(params.run_id, forwarded=result.get("node"))

    async def _stopping(run_id: str, forwarded: str | None = None) -> dict[str, Any]:
        """A cancel or terminate reply: the run now, and whether it may still be stopping (the command
        then waits). Executing is checked before the row is read: a run finishing in between is
        reported as stopping (a wait that ends at once), never as running without that flag.
        ``forwarded``: the node the request was passed to (it executes the run)."""
        executing = run_id in manager.active or forwarded is not None
        info = run_view(await _row(run_id))
        info["cancelling"] = executing
        if forwarded is not None:
            info["node"] = forwarded
        return info

    async def runs_rerun(params: RunRerunParams, peer: PeerInfo) -> dict[str, Any]:
        try:
            run_id = await manager.rerun(params.run_id, inputs=dict(params.inputs), latest=params.latest,
                                         from_stage=params.from_stage)
        except StageError as exc:
            if exc.error_type is not ErrorType.VALIDATION:
                raise
            raise RpcError(ErrorCode.INVALID_PARAMS, f"Invalid params: {exc.message}", exc.to_dict()) from None
        return run_view(await _row(run_id))

    async def runs_break(params: RunBreakParams, peer: PeerInfo) -> dict[str, Any]:
        await manager.set_breakpoint(params.run_id, params.stage_id, remove=params.remove)
        return run_view(await _row(params.run_id))

    async def runs_continue(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        await manager.go_on(params.run_id, step=False)
        return run_view(await _moved_on(params.run_id, "paused"))

    async def runs_step(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        await manager.go_on(params.run_id, step=True)
        return run_view(await _row(params.run_id))

    async def runs_delete(params: RunRefParams, peer: PeerInfo) -> dict[str, Any]:
        deleted = await manager.delete(params.run_id)
        return {"runs": [{"run_id": r} for r in deleted], "dry_run": False}

    async def runs_prune(params: RunPruneParams, peer: PeerInfo) -> dict[str, Any]:
        statuses = [RunStatus(s) for s in params.statuses] if params.statuses else None
        if params.dry_run:
            listed = await journal.prune_candidates(params.before, statuses)
        else:
            listed = await journal.prune_before(params.before, statuses)
        return {"runs": listed, "dry_run": params.dry_run}

    async def daemon_reload(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        changed = await daemon.reload()
        return {"changed": sorted(changed), "pipelines": len(catalog.ids()),
                "invalid_files": len(catalog.broken_files())}

    async def daemon_stop(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        # The reply goes out first; the stop itself is the SIGTERM path (grace, interrupted runs).
        daemon.request_stop()
        paused = sum(1 for a in manager.active.values() if a.breaks.waiting)
        return {"stopping": True, "active_runs": manager.counts()["active"] - paused, "paused_runs": paused,
                "shutdown_grace_s": daemon.config.shutdown_grace_s}

    def after_recovery(handler: Any) -> Any:
        """Refuse a state-changing call until startup recovery is done (health says 'ok').

        The socket listens before recovery runs (so that health can say 'starting'); a resume or
        cancel served meanwhile would race recovery for the same runs.
        """
        async def gated(params: Any, peer: PeerInfo) -> Any:
            if not daemon.ready:
                raise StartingError("the daemon is recovering runs after its start; retry once health says ok "
                                    "(flowmason --wait waits for it)", method=getattr(handler, "__name__", None))
            return await handler(params, peer)
        return gated

    def scheduler() -> Any:
        if daemon.scheduler is None:
            raise ScheduleNotFoundError("the scheduler is not running (disabled by scheduler.enabled = false, "
                                        "or still starting)")
        return daemon.scheduler

    async def schedules_list(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        return {"schedules": await daemon.scheduler.list_schedules() if daemon.scheduler is not None else []}

    async def schedules_next(params: ScheduleNextParams, peer: PeerInfo) -> dict[str, Any]:
        return dict(await scheduler().next_fires(params.schedule_id, params.count, params.pipeline_id))

    async def schedules_pause(params: ScheduleRefParams, peer: PeerInfo) -> dict[str, Any]:
        return dict(await scheduler().pause(params.schedule_id, params.pipeline_id))

    async def schedules_unpause(params: ScheduleRefParams, peer: PeerInfo) -> dict[str, Any]:
        return dict(await scheduler().unpause(params.schedule_id, params.pipeline_id))

    async def schedules_trigger(params: ScheduleRefParams, peer: PeerInfo) -> dict[str, Any]:
        return dict(await scheduler().trigger(params.schedule_id, params.pipeline_id))

    async def nodes_list(params: EmptyParams, peer: PeerInfo) -> dict[str, Any]:
        node = daemon.cluster
        if node is None:
            return {"cluster": False, "nodes": []}
        return {"cluster": True, "node_id": node.node_id, "lease_s": node.lease_s, "nodes": await node.nodes()}

    d.register("health", health, EmptyParams, mutating=False)
    d.register("version", version, EmptyParams, mutating=False)
    d.register("status", status, EmptyParams, mutating=False)
    d.register("pipelines.list", pipelines_list, EmptyParams, mutating=False)
    d.register("pipelines.show", pipelines_show, PipelineShowParams, mutating=False)
    d.register("pipelines.validate", pipelines_validate, PipelineValidateParams, mutating=False)
    d.register("runs.start", after_recovery(runs_start), RunStartParams, mutating=True)
    d.register("runs.list", runs_list, RunListParams, mutating=False)
    d.register("runs.show", runs_show, RunRefParams, mutating=False)
    d.register("runs.output", runs_output, RunOutputParams, mutating=False)
    d.register("runs.events", runs_events, RunEventsParams, mutating=False, stream=True)
    d.register("runs.logs", runs_logs, RunLogsParams, mutating=False, stream=True, notification="runs.log")
    d.register("runs.cancel", after_recovery(runs_cancel), RunRefParams, mutating=True)
    d.register("runs.terminate", after_recovery(runs_terminate), RunRefParams, mutating=True)
    d.register("runs.rerun", after_recovery(runs_rerun), RunRerunParams, mutating=True)
    d.register("runs.break", after_recovery(runs_break), RunBreakParams, mutating=True)
    d.register("runs.continue", after_recovery(runs_continue), RunRefParams, mutating=True)
    d.register("runs.step", after_recovery(runs_step), RunRefParams, mutating=True)
    d.register("runs.delete", after_recovery(runs_delete), RunRefParams, mutating=True)
    d.register("runs.prune", after_recovery(runs_prune), RunPruneParams, mutating=True)
    d.register("runs.resume", after_recovery(runs_resume), RunResumeParams, mutating=True)
    d.register("daemon.reload", daemon_reload, EmptyParams, mutating=True)
    d.register("daemon.stop", daemon_stop, EmptyParams, mutating=True)
    d.register("schedules.list", schedules_list, EmptyParams, mutating=False)
    d.register("schedules.next", schedules_next, ScheduleNextParams, mutating=False)
    d.register("schedules.pause", after_recovery(schedules_pause), ScheduleRefParams, mutating=True)
    d.register("schedules.unpause", after_recovery(schedules_unpause), ScheduleRefParams, mutating=True)
    d.register("schedules.trigger", after_recovery(schedules_trigger), ScheduleRefParams, mutating=True)
    d.register("nodes.list", nodes_list, EmptyParams, mutating=False)
    return d

