"""The control-socket wire protocol, shared by the daemon and its clients.

Newline-delimited JSON-RPC 2.0 over a Unix stream socket: one JSON object per line, in each
direction. Requests are validated with ``extra="forbid"`` and strict types; the run and stage
payloads the daemon returns are owned by the daemon and kept loosely typed (extra keys allowed),
so a newer daemon can add fields without breaking an older client.

This module must never import ``flowmasond``: the daemon imports it, not the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

JSONRPC_VERSION = "2.0"
# Bumped when a method changes incompatibly; `version` reports it so a client can refuse early.
PROTOCOL_VERSION = "1"
# A request line (without its newline) may be at most this long. Pipeline definitions sent to
# `pipelines.validate` and run inputs are the largest legitimate requests; 1 MiB is far above them
# and small enough that a hostile peer cannot make the daemon buffer much.
MAX_LINE_BYTES = 1024 * 1024
# Replies are not capped by the daemon (a run's output can be large); the client refuses lines
# beyond this so that a confused peer cannot exhaust its memory.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Containers nested deeper than this are refused before any handler sees them: it keeps the
# daemon's JSON encoder, logging and pydantic far from Python's recursion limit.
MAX_JSON_DEPTH = 64
# The method of the notifications a `runs.events` stream sends before its final reply.
EVENT_NOTIFICATION = "runs.event"

RequestId = StrictInt | StrictStr | None
# A run's lifecycle state; the same values as the daemon's flowmasond.engine.interfaces.RunStatus.
RunStatus = Literal["pending", "running", "paused", "succeeded", "failed", "cancelled", "interrupted"]


class ErrorCode(IntEnum):
    """JSON-RPC error codes: the standard ones, then the daemon's stable application codes."""

    PARSE_ERROR = -32700  # the line is not valid UTF-8 JSON
    INVALID_REQUEST = -32600  # valid JSON, but not a request (wrong shape, batch, too deep, too long)
    METHOD_NOT_FOUND = -32601  # no such method
    INVALID_PARAMS = -32602  # params failed the method's model
    INTERNAL_ERROR = -32603  # an unexpected daemon bug; the daemon keeps running
    APPLICATION_ERROR = -32000  # a daemon error without a dedicated code (see data.code)
    PERMISSION_DENIED = -32001  # the peer's uid may not call this method
    RUN_NOT_FOUND = -32002  # no run with that id
    PIPELINE_NOT_FOUND = -32003  # no pipeline with that id
    INVALID_STATE = -32004  # the run's state does not allow the operation
    PIPELINE_INVALID = -32005  # the pipeline definition failed validation
    DEFINITION_CHANGED = -32006  # resume needs accept_changed_definition
    UNSAFE_TO_REPEAT = -32007  # resume needs force: an unrepeatable stage was in flight
    CONFIGURATION_ERROR = -32008  # the daemon is configured wrongly for this request
    SHUTTING_DOWN = -32009  # the daemon is stopping and accepts no new work
    STORAGE_ERROR = -32010  # the journal could not be read or written (disk full, I/O error)
    REQUEST_TIMEOUT = -32011  # the handler ran past the daemon's request timeout
    SERVER_BUSY = -32012  # too many connections; try again
    SCHEDULE_NOT_FOUND = -32013  # no schedule with that id (or the id is ambiguous)
    LIMIT_EXCEEDED = -32014  # a configured size limit refused the request (data.context.limit names it)
    RUN_CONFLICT = -32015  # another resume, cancel or recovery of the run won the race; this one did nothing
    STARTING = -32016  # the daemon is recovering runs after its start; retry once health says ok
    STAGE_NOT_FOUND = -32017  # no stage with that id in the run's pipeline


# flowmasond error code string (``FlowmasonError.code``) -> JSON-RPC code. Every application error
# also carries ``data: {code, message, context}`` so a client can match on the string.
APP_ERROR_CODES: Mapping[str, ErrorCode] = {
    "permission_denied": ErrorCode.PERMISSION_DENIED,
    "run_not_found": ErrorCode.RUN_NOT_FOUND,
    "pipeline_not_found": ErrorCode.PIPELINE_NOT_FOUND,
    "invalid_state": ErrorCode.INVALID_STATE,
    "pipeline_invalid": ErrorCode.PIPELINE_INVALID,
    "component_not_found": ErrorCode.PIPELINE_INVALID,
    "template_error": ErrorCode.PIPELINE_INVALID,
    "definition_changed": ErrorCode.DEFINITION_CHANGED,
    "unsafe_to_repeat": ErrorCode.UNSAFE_TO_REPEAT,
    "configuration_error": ErrorCode.CONFIGURATION_ERROR,
    "shutting_down": ErrorCode.SHUTTING_DOWN,
    "journal_error": ErrorCode.STORAGE_ERROR,
    "storage_full": ErrorCode.STORAGE_ERROR,
    "schema_too_new": ErrorCode.STORAGE_ERROR,
    "request_timeout": ErrorCode.REQUEST_TIMEOUT,
    "server_busy": ErrorCode.SERVER_BUSY,
    "schedule_not_found": ErrorCode.SCHEDULE_NOT_FOUND,
    "limit_exceeded": ErrorCode.LIMIT_EXCEEDED,
    "run_conflict": ErrorCode.RUN_CONFLICT,
    "starting": ErrorCode.STARTING,
    "stage_not_found": ErrorCode.STAGE_NOT_FOUND,
}


def rpc_code_for(error_code: str) -> int:
    """The JSON-RPC code for a flowmasond error code string (-32000 when it has no dedicated one)."""
    return int(APP_ERROR_CODES.get(error_code, ErrorCode.APPLICATION_ERROR))


# --- envelopes -------------------------------------------------------------------------------


class _Wire(BaseModel):
    """Envelope fields are fixed by JSON-RPC 2.0: unknown keys are an error, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Request(_Wire):
    """A call; without an ``id`` key it is a notification and gets no reply."""

    jsonrpc: Literal["2.0"]
    id: RequestId = None
    method: StrictStr = Field(min_length=1, max_length=256)
    params: dict[str, Any] | list[Any] | None = None

    @property
    def is_notification(self) -> bool:
        """True when the request had no ``id`` member (``"id": null`` still gets a reply)."""
        return "id" not in self.model_fields_set


class Notification(_Wire):
    """A message without an id: the daemon's stream events (``runs.event``)."""

    jsonrpc: Literal["2.0"]
    method: StrictStr
    params: dict[str, Any] | list[Any] | None = None


class Response(_Wire):
    """A successful reply."""

    jsonrpc: Literal["2.0"]
    id: RequestId
    result: Any


class ErrorObject(_Wire):
    """The ``error`` member of an error reply."""

    code: StrictInt
    message: StrictStr
    data: Any = None


class ErrorResponse(_Wire):
    """A failed reply; ``id`` is null when the request's id could not be read."""

    jsonrpc: Literal["2.0"]
    id: RequestId
    error: ErrorObject


class AppErrorData(BaseModel):
    """The ``data`` of an application error: the daemon's own error code, message and context."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    context: dict[str, Any] = Field(default_factory=dict)


def make_request(request_id: RequestId, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A request object ready for :func:`encode`."""
    message: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method}
    if params is not None:
        message["params"] = dict(params)
    return message


def make_response(request_id: RequestId, result: Any) -> dict[str, Any]:
    """A success reply ready for :func:`encode`."""
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result}


def make_error(request_id: RequestId, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """An error reply ready for :func:`encode`; ``data`` is omitted when None."""
    error: dict[str, Any] = {"code": int(code), "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error}


def make_notification(method: str, params: Any) -> dict[str, Any]:
    """A notification ready for :func:`encode`."""
    return {"jsonrpc": JSONRPC_VERSION, "method": method, "params": params}


# Built once: json.dumps with any option builds a new encoder on every call (about 1 µs of the
# 7 µs a run's reply takes to encode).
_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a UTF-8 JSON line.

    ASCII escapes keep lone surrogates (legal in JSON text, illegal in UTF-8) encodable; NaN and
    infinities are refused because they are not JSON.
    """
    return _ENCODER.encode(message).encode("ascii") + b"\n"


def parse_reply(message: Any) -> Response | ErrorResponse | Notification:
    """Classify and validate one decoded message from the daemon."""
    if isinstance(message, dict):
        if "error" in message:
            return ErrorResponse.model_validate(message)
        if "id" in message:
            return Response.model_validate(message)
        return Notification.model_validate(message)
    raise ValueError(f"expected a JSON object, got {type(message).__name__}")


# --- method params ---------------------------------------------------------------------------


class Params(BaseModel):
    """Base of every method's params: unknown keys and loose types are refused at the boundary."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EmptyParams(Params):
    """For methods that take no parameters."""


class PipelineShowParams(Params):
    """`pipelines.show`."""

    pipeline_id: str = Field(min_length=1)


class PipelineValidateParams(Params):
    """`pipelines.validate`: a pipeline file the daemon can read, or a definition sent inline."""

    path: str | None = Field(default=None, min_length=1)
    definition: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PipelineValidateParams:
        if (self.path is None) == (self.definition is None):
            raise ValueError("give exactly one of 'path' or 'definition'")
        return self


class RunStartParams(Params):
    """`runs.start`."""

    pipeline_id: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    # Stage ids the run pauses before (breakpoints); each must be a stage of the pipeline.
    break_at: list[str] = Field(default_factory=list, max_length=1000)


class RunListParams(Params):
    """`runs.list`: newest first, filtered by status and pipeline."""

    status: RunStatus | None = None
    pipeline_id: str | None = Field(default=None, min_length=1)
    limit: int = Field(default=50, ge=1, le=1000)
    since: float | None = None  # created at or after (Unix time)
    until: float | None = None  # created before (Unix time)
    schedule_id: str | None = Field(default=None, min_length=1)
    parent_run_id: str | None = Field(default=None, min_length=1)
    cursor: str | None = Field(default=None, min_length=1)  # next_cursor of the previous page
    count: bool = False  # also return how many runs match (without paging)


class RunRefParams(Params):
    """Methods that name one run: `runs.show`, `runs.cancel`."""

    run_id: str = Field(min_length=1)


class RunEventsParams(Params):
    """`runs.events`: the run's journal events after ``after_id``; ``follow`` streams new ones.

    Without ``follow`` the reply is one page (at most ``limit`` events, capped by the daemon's page
    size); ``more`` says whether another page follows, read with ``after_id = last_id``.
    """

    run_id: str = Field(min_length=1)
    after_id: int | None = Field(default=None, ge=0)
    follow: bool = False
    limit: int | None = Field(default=None, ge=1)


class RunOutputParams(Params):
    """`runs.output`: one stage's full output (``path`` as in `runs.show`), or the run's without it."""

    run_id: str = Field(min_length=1)
    path: str | None = Field(default=None, min_length=1)


class RunResumeParams(Params):
    """`runs.resume`: ``force`` re-runs a stage not safe to repeat; the other opts into a changed definition."""

    run_id: str = Field(min_length=1)
    force: bool = False
    # When the pipeline changed since the run started, say which definition to continue with:
    # the pinned one the run started with, or (accept_changed_definition) the current one.
    pinned: bool = False
    accept_changed_definition: bool = False

    @model_validator(mode="after")
    def _one_definition(self) -> RunResumeParams:
        if self.pinned and self.accept_changed_definition:
            raise ValueError("give at most one of 'pinned' and 'accept_changed_definition'")
        return self


class RunRerunParams(Params):
    """`runs.rerun`: a new run of the same definition and inputs; ``from_stage`` forks."""

    run_id: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)  # overrides of single inputs
    latest: bool = False  # the pipeline's current definition instead of the pinned one
    from_stage: str | None = Field(default=None, min_length=1)


class RunLogsParams(Params):
    """`runs.logs`: stage logs after ``after_id`` (of one stage and what is nested under it); ``follow`` streams."""

    run_id: str = Field(min_length=1)
    stage: str | None = Field(default=None, min_length=1)
    after_id: int = Field(default=0, ge=0)
    follow: bool = False


class RunBreakParams(Params):
    """`runs.break`: add (or with ``remove``, drop) a breakpoint before a stage."""

    run_id: str = Field(min_length=1)
    stage_id: str = Field(min_length=1)
    remove: bool = False


class RunPruneParams(Params):
    """`runs.prune`: finished runs created before ``before`` (Unix time), optionally only some statuses."""

    before: float
    statuses: list[RunStatus] | None = None
    dry_run: bool = False


class ScheduleRefParams(Params):
    """Methods that name one schedule: ``pipeline/schedule``, or a schedule id only one pipeline uses."""

    schedule_id: str = Field(min_length=1)
    pipeline_id: str | None = Field(default=None, min_length=1)


class ScheduleNextParams(ScheduleRefParams):
    """`schedules.next`: how many upcoming fire times to list."""

    count: int = Field(default=5, ge=1, le=1000)


# --- method results --------------------------------------------------------------------------


class Result(BaseModel):
    """Base of every result: the daemon owns the shape, so unknown keys are kept, not refused."""

    model_config = ConfigDict(extra="allow")


class HealthResult(Result):
    """`health`: ``status`` is "ok"; "starting" while it recovers runs; "stopping" while it shuts down."""

    status: str = "ok"
    version: str | None = None
    uptime_s: float | None = None
    uid: int | None = None  # the caller's uid as the daemon saw it
    can_mutate: bool | None = None  # whether that uid may call mutating methods (None: older daemon)


class VersionResult(Result):
    """`version`."""

    version: str
    protocol_version: str = PROTOCOL_VERSION
    python_version: str | None = None


class StatusResult(Result):
    """`status`: the daemon as a whole (every field optional; the daemon may add more)."""

    version: str | None = None
    protocol_version: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    stopping: bool = False
    state_dir: str | None = None
    socket_path: str | None = None
    runs: dict[str, int] = Field(default_factory=dict)  # count per run status
    active_runs: int | None = None
    queued_runs: int | None = None
    max_concurrent_runs: int | None = None
    pipelines: int | None = None
    invalid_pipelines: int | None = None
    schedules: int | None = None


class PipelineInfo(Result):
    """One pipeline of the catalog; ``error`` is set when its file is currently invalid."""

    pipeline_id: str
    name: str | None = None
    version: str | None = None
    description: str | None = None
    path: str | None = None
    stage_count: int | None = None
    schedules: list[dict[str, Any]] = Field(default_factory=list)
    valid: bool = True
    error: dict[str, Any] | None = None
    definition_hash: str | None = None
    # Keys unknown to FlowMason and flowmasond, dropped when the version in force loaded.
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class PipelineListResult(Result):
    """`pipelines.list`."""

    pipelines: list[PipelineInfo] = Field(default_factory=list)


class PipelineShowResult(PipelineInfo):
    """`pipelines.show`: the catalog entry plus its full definition."""

    definition: dict[str, Any] | None = None


class PipelineValidateResult(Result):
    """`pipelines.validate`: an invalid definition is a result (``valid`` false), not an error."""

    valid: bool
    pipeline_id: str | None = None
    issues: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(default_factory=list)  # keys unknown to FlowMason and us


Timestamp = float | str | None


class RunInfo(Result):
    """One run as the daemon reports it; ``stages`` is filled by `runs.show`."""

    run_id: str
    pipeline_id: str | None = None
    status: str | None = None
    created_at: Timestamp = None
    started_at: Timestamp = None
    finished_at: Timestamp = None
    inputs: dict[str, Any] | None = None
    output: Any = None
    error: Any = None
    stages: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] | None = None
    schedule_id: str | None = None
    fire_time: Timestamp = None
    forked_from: str | None = None
    from_stage: str | None = None
    breakpoints: list[str] = Field(default_factory=list)
    stepping: bool = False
    paused_at: dict[str, Any] | None = None


class RunListResult(Result):
    """`runs.list`: a page of runs; ``next_cursor`` continues after it (None: the last page)."""

    runs: list[RunInfo] = Field(default_factory=list)
    next_cursor: str | None = None
    count: int | None = None  # with ``count``: how many runs match the filters


class ScheduleInfo(Result):
    """One schedule: its definition, pause state, next fire, and its last fire with that run's status.

    ``last_run_status`` is a run status, ``skipped`` (the overlap policy started no run), or
    ``not_started`` (the run could not be created, or was pruned); None before the first fire.
    """

    id: str
    pipeline_id: str
    name: str | None = None  # pipeline/schedule
    cron: str | None = None
    timezone: str | None = None
    enabled: bool = True
    paused: bool = False
    misfire: str | None = None
    overlap: str | None = None
    next_fire: Timestamp = None
    last_fire: Timestamp = None
    last_run_id: str | None = None
    last_run_status: str | None = None
    active_runs: int | None = None


class ScheduleListResult(Result):
    """`schedules.list`."""

    schedules: list[ScheduleInfo] = Field(default_factory=list)


class ScheduleTriggerResult(Result):
    """`schedules.trigger`: what the fire did (``started``, ``queued``, ``skipped``...) and the schedule."""

    fire_time: Timestamp = None
    action: str
    run_id: str | None = None
    reason: str | None = None
    schedule: ScheduleInfo | None = None


class ScheduleFire(Result):
    """One upcoming fire: the instant, and the wall time with its UTC offset in the schedule's zone."""

    time: Timestamp = None
    local: str  # ISO 8601 with the offset, e.g. 2026-03-08T03:00:00-04:00
    utc_offset: str  # e.g. -04:00


class ScheduleNextResult(Result):
    """`schedules.next`: the schedule and its next fire times (the first is its ``next_fire``)."""

    schedule: ScheduleInfo
    fires: list[ScheduleFire] = Field(default_factory=list)


class RunEvent(Result):
    """One journal event of a run; ``after_id`` = the last ``id`` received resumes a stream without gaps.

    Ids increase with one writing daemon; with several cluster nodes a stream follows their commits,
    so an id may be smaller than the one before it: resume after the last one, not the largest.
    """

    id: int
    run_id: str | None = None
    kind: str
    stage_id: str | None = None
    at: Timestamp = None
    data: Any = None


class RunEventsResult(Result):
    """`runs.events`: the events (empty when they were streamed as notifications) and the run."""

    events: list[RunEvent] = Field(default_factory=list)
    last_id: int | None = None
    more: bool = False  # another page follows: ask again with after_id = last_id
    run: RunInfo | None = None


class RunOutputResult(Result):
    """`runs.output`: the full output `runs.show` may have cut short."""

    run_id: str
    path: str | None = None
    output: Any = None


class RunLogsResult(Result):
    """`runs.logs`: the chunks (``id``, ``path``, ``stream``, ``ts``, ``text``) and the cursor to continue from."""

    logs: list[dict[str, Any]] = Field(default_factory=list)
    last_id: int = 0
    stages: list[dict[str, Any]] = Field(default_factory=list)  # stage paths with logs


class RunDeleteResult(Result):
    """`runs.delete` and `runs.prune`: the runs deleted (or, for a dry run, that would be)."""

    runs: list[dict[str, Any]] = Field(default_factory=list)
    dry_run: bool = False


class NodesListResult(Result):
    """`nodes.list`: the nodes sharing the journal, each with its heartbeat age and live leases.

    ``cluster`` is false for a daemon alone on its journal (``nodes`` is then empty).
    """

    cluster: bool = False
    node_id: str | None = None  # the node that answered
    lease_s: float | None = None
    nodes: list[dict[str, Any]] = Field(default_factory=list)


# --- the method table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodSpec:
    """A method's contract: params and result models, and whether it needs a privileged peer."""

    name: str
    params: type[Params]
    result: type[Result]
    mutating: bool  # changes state: allowed for root, the daemon's uid and the allow list only
    stream: bool = False  # may send notifications before its reply
    summary: str = ""  # one line for the README's method reference


METHODS: Mapping[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(name="health", params=EmptyParams, result=HealthResult, mutating=False,
                   summary="liveness: `ok`, `starting` (recovering) or `stopping`"),
        MethodSpec(name="version", params=EmptyParams, result=VersionResult, mutating=False,
                   summary="daemon, protocol and Python versions"),
        MethodSpec(name="status", params=EmptyParams, result=StatusResult, mutating=False,
                   summary="runs by status, active and queued runs, pipelines, schedules, paths"),
        MethodSpec(name="pipelines.list", params=EmptyParams, result=PipelineListResult, mutating=False,
                   summary="loaded pipelines and every invalid file with its errors"),
        MethodSpec(name="pipelines.show", params=PipelineShowParams, result=PipelineShowResult,
                   mutating=False, summary="one pipeline with its full definition"),
        MethodSpec(name="pipelines.validate", params=PipelineValidateParams,
                   result=PipelineValidateResult, mutating=False,
                   summary="validate a definition (inline, or a file path for privileged peers)"),
        MethodSpec(name="runs.start", params=RunStartParams, result=RunInfo, mutating=True,
                   summary="start a run; `break_at` pauses it before those stages"),
        MethodSpec(name="runs.list", params=RunListParams, result=RunListResult, mutating=False,
                   summary="runs newest first, by status and pipeline"),
        MethodSpec(name="runs.show", params=RunRefParams, result=RunInfo, mutating=False,
                   summary="one run with every stage, its source if it is a rerun, and what a paused run waits on"),
        MethodSpec(name="runs.events", params=RunEventsParams, result=RunEventsResult,
                   mutating=False, stream=True, summary="a run's journal events; `follow` streams them"),
        MethodSpec(name="runs.logs", params=RunLogsParams, result=RunLogsResult,
                   mutating=False, stream=True,
                   summary="stage logs (shell stdout/stderr, logger messages); `follow` streams them"),
        MethodSpec(name="runs.output", params=RunOutputParams, result=RunOutputResult, mutating=False,
                   summary="one stage's (or the run's) full output, which `runs.show` may cut short"),
        MethodSpec(name="runs.cancel", params=RunRefParams, result=RunInfo, mutating=True,
                   summary="stop a run; in-flight stages get `cancel_grace_s`"),
        MethodSpec(name="runs.terminate", params=RunRefParams, result=RunInfo, mutating=True,
                   summary="stop a run now: in-flight stages are killed without grace; it ends `cancelled`"),
        MethodSpec(name="runs.resume", params=RunResumeParams, result=RunInfo, mutating=True,
                   summary="continue a failed, cancelled or interrupted run from its last commit"),
        MethodSpec(name="runs.rerun", params=RunRerunParams, result=RunInfo, mutating=True,
                   summary="a new run of the same definition and inputs; `from_stage` reuses the results "
                           "of stages not depending on it"),
        MethodSpec(name="runs.break", params=RunBreakParams, result=RunInfo, mutating=True,
                   summary="add or remove a breakpoint before a stage of a run"),
        MethodSpec(name="runs.continue", params=RunRefParams, result=RunInfo, mutating=True,
                   summary="release a paused run (and stop stepping)"),
        MethodSpec(name="runs.step", params=RunRefParams, result=RunInfo, mutating=True,
                   summary="release the next waiting stage and pause before the one after"),
        MethodSpec(name="runs.delete", params=RunRefParams, result=RunDeleteResult, mutating=True,
                   summary="delete a finished run with its children, events and logs"),
        MethodSpec(name="runs.prune", params=RunPruneParams, result=RunDeleteResult, mutating=True,
                   summary="delete finished runs created before a date; `dry_run` lists them only"),
        MethodSpec(name="daemon.reload", params=EmptyParams, result=Result, mutating=True,
                   summary="reload every pipeline folder (as SIGHUP)"),
        MethodSpec(name="daemon.stop", params=EmptyParams, result=Result, mutating=True,
                   summary="stop the daemon as SIGTERM does: grace for running stages, the rest interrupted"),
        MethodSpec(name="schedules.list", params=EmptyParams, result=ScheduleListResult, mutating=False,
                   summary="schedules with next and last fire, last run's status, paused"),
        MethodSpec(name="schedules.next", params=ScheduleNextParams, result=ScheduleNextResult, mutating=False,
                   summary="the next N fire times of one schedule, with UTC offsets"),
        MethodSpec(name="schedules.pause", params=ScheduleRefParams, result=ScheduleInfo, mutating=True,
                   summary="pause a schedule (persisted)"),
        MethodSpec(name="schedules.unpause", params=ScheduleRefParams, result=ScheduleInfo, mutating=True,
                   summary="unpause a schedule"),
        MethodSpec(name="schedules.trigger", params=ScheduleRefParams, result=ScheduleTriggerResult,
                   mutating=True, summary="fire a schedule now"),
        MethodSpec(name="nodes.list", params=EmptyParams, result=NodesListResult, mutating=False,
                   summary="the nodes sharing a PostgreSQL journal, their leases and heartbeat age"),
    )
}
