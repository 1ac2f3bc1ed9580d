"""Python clients for flowmasond's control socket: ``AsyncClient`` and its synchronous twin ``Client``.

One connection per client, opened on first use and reopened after the daemon closed an idle one.
Calls on one client are serialized (the daemon answers a connection's requests in order); use
several clients for parallel calls. Every method of the protocol has a typed helper named after
it (``runs.start`` -> ``runs_start``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flowmason_client.errors import (
    ConnectionLostError, DaemonUnreachableError, ProtocolError, RemoteError, RequestTimeoutError,
)
from flowmason_client.paths import resolve_socket_path
from flowmason_client.protocol import (
    EVENT_NOTIFICATION, MAX_RESPONSE_BYTES, EmptyParams, ErrorResponse, HealthResult, Notification,
    Params, PipelineListResult, PipelineShowParams, PipelineShowResult, PipelineValidateParams,
    PipelineValidateResult, Response, Result, RunEvent, RunEventsParams, RunEventsResult, RunInfo,
    RunListParams, RunListResult, RunOutputParams, RunOutputResult, RunRefParams, RunResumeParams,
    RunStartParams, RunStatus, ScheduleInfo, ScheduleListResult, ScheduleNextParams, ScheduleNextResult,
    ScheduleRefParams, ScheduleTriggerResult, StatusResult, VersionResult, encode, make_request, parse_reply,
)

R = TypeVar("R", bound=Result)
T = TypeVar("T")

# Default wait for one reply. Generous: `runs.start` may wait for the journal's fsync on a slow disk.
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
_USE_DEFAULT: Any = object()

StreamItem = Notification | Response


class AsyncClient:
    """An asyncio client; ``async with AsyncClient() as c: await c.health()``."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.socket_path: Path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_response_bytes = max_response_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (a no-op when one is open and still good)."""
        if self._writer is not None and not self._is_stale():
            return
        self._drop()
        path = str(self.socket_path)
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_unix_connection(
                    path, limit=self.max_response_bytes)
        except FileNotFoundError:
            raise DaemonUnreachableError(path, "no socket there (is the daemon running?)") from None
        except ConnectionRefusedError:
            raise DaemonUnreachableError(path, "connection refused (no daemon listening)") from None
        except PermissionError:
            raise DaemonUnreachableError(
                path, "permission denied (the socket is for its owner and group)") from None
        except TimeoutError:
            raise DaemonUnreachableError(path, f"no answer within {self.connect_timeout} s") from None
        except OSError as exc:
            raise DaemonUnreachableError(path, exc.strerror or str(exc)) from None

    async def close(self) -> None:
        """Close the connection."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def call(self, method: str, params: Mapping[str, Any] | BaseModel | None = None, *,
                   timeout: float | None = _USE_DEFAULT) -> Any:
        """Call ``method`` and return its result; a JSON-RPC error raises :class:`RemoteError`."""
        payload = _params(params)
        limit = self.timeout if timeout is _USE_DEFAULT else timeout
        async with self._lock:
            await self.connect()
            request_id = next(self._ids)
            try:
                async with asyncio.timeout(limit):
                    await self._write(make_request(request_id, method, payload))
                    while True:
                        message = await self._read()
                        if isinstance(message, Notification):
                            continue  # not ours: only streams send notifications
                        return _result_of(message, request_id)
            except RemoteError:
                raise
            except TimeoutError:
                self._drop()
                raise RequestTimeoutError(f"no reply to {method} within {limit} s") from None
            except BaseException:
                # The exchange broke off mid-way; a late reply would be read as the next one's.
                self._drop()
                raise

    async def stream(self, method: str, params: Mapping[str, Any] | BaseModel | None = None
                     ) -> AsyncIterator[StreamItem]:
        """Call a stream method: yields its notifications, then its final :class:`Response`.

        There is no timeout between messages (a followed run can be quiet for long). The
        connection is busy until the stream ends; leaving early drops it.
        """
        payload = _params(params)
        async with self._lock:
            await self.connect()
            request_id = next(self._ids)
            finished = False
            try:
                await self._write(make_request(request_id, method, payload))
                while True:
                    message = await self._read()
                    if isinstance(message, Notification):
                        yield message
                        continue
                    finished = True
                    _result_of(message, request_id)
                    assert isinstance(message, Response)
                    yield message
                    return
            finally:
                if not finished:
                    self._drop()

    # --- typed helpers, one per protocol method -----------------------------------------------

    async def health(self) -> HealthResult:
        """`health`."""
        return _parse(HealthResult, await self.call("health"))

    async def version(self) -> VersionResult:
        """`version`."""
        return _parse(VersionResult, await self.call("version"))

    async def status(self) -> StatusResult:
        """`status`."""
        return _parse(StatusResult, await self.call("status"))

    async def pipelines_list(self) -> PipelineListResult:
        """`pipelines.list`."""
        return _parse(PipelineListResult, await self.call("pipelines.list", EmptyParams()))

    async def pipelines_show(self, pipeline_id: str) -> PipelineShowResult:
        """`pipelines.show`."""
        params = PipelineShowParams(pipeline_id=pipeline_id)
        return _parse(PipelineShowResult, await self.call("pipelines.show", params))

    async def pipelines_validate(self, *, path: str | None = None,
                                 definition: dict[str, Any] | None = None) -> PipelineValidateResult:
        """`pipelines.validate`: exactly one of a path the daemon can read or an inline definition."""
        params = PipelineValidateParams(path=path, definition=definition)
        return _parse(PipelineValidateResult, await self.call("pipelines.validate", params))

    async def runs_start(self, pipeline_id: str, inputs: dict[str, Any] | None = None) -> RunInfo:
        """`runs.start`."""
        params = RunStartParams(pipeline_id=pipeline_id, inputs=inputs or {})
        return _parse(RunInfo, await self.call("runs.start", params))

    async def runs_list(self, *, status: RunStatus | None = None, pipeline_id: str | None = None,
                        limit: int = 50) -> RunListResult:
        """`runs.list`."""
        params = RunListParams(status=status, pipeline_id=pipeline_id, limit=limit)
        return _parse(RunListResult, await self.call("runs.list", params))

    async def runs_show(self, run_id: str) -> RunInfo:
        """`runs.show`."""
        return _parse(RunInfo, await self.call("runs.show", RunRefParams(run_id=run_id)))

    async def runs_events(self, run_id: str, *, after_id: int | None = None,
                          limit: int | None = None) -> RunEventsResult:
        """`runs.events` without follow: one page of the events recorded so far (see ``more``)."""
        params = RunEventsParams(run_id=run_id, after_id=after_id, follow=False, limit=limit)
        result = None
        async for item in self.stream("runs.events", params):
            if isinstance(item, Response):
                result = item.result
        return _parse(RunEventsResult, result)

    async def runs_events_all(self, run_id: str, *, after_id: int | None = None) -> RunEventsResult:
        """`runs.events` page after page until none is left: every event recorded so far."""
        page = await self.runs_events(run_id, after_id=after_id)
        events = list(page.events)
        while page.more:
            page = await self.runs_events(run_id, after_id=page.last_id)
            events.extend(page.events)
        return page.model_copy(update={"events": events})

    async def runs_output(self, run_id: str, path: str | None = None) -> RunOutputResult:
        """`runs.output`: one stage's full output, or the run's."""
        return _parse(RunOutputResult, await self.call("runs.output", RunOutputParams(run_id=run_id, path=path)))

    async def runs_follow(self, run_id: str, *, after_id: int | None = None
                          ) -> AsyncIterator[RunEvent | RunEventsResult]:
        """`runs.events` with follow: yields each :class:`RunEvent`, then the final result."""
        params = RunEventsParams(run_id=run_id, after_id=after_id, follow=True)
        async for item in self.stream("runs.events", params):
            if isinstance(item, Response):
                yield _parse(RunEventsResult, item.result)
            elif item.method == EVENT_NOTIFICATION:
                yield _parse(RunEvent, item.params)

    async def runs_cancel(self, run_id: str) -> RunInfo:
        """`runs.cancel`."""
        return _parse(RunInfo, await self.call("runs.cancel", RunRefParams(run_id=run_id)))

    async def runs_resume(self, run_id: str, *, force: bool = False, pinned: bool = False,
                          accept_changed_definition: bool = False) -> RunInfo:
        """`runs.resume`."""
        params = RunResumeParams(run_id=run_id, force=force, pinned=pinned,
                                 accept_changed_definition=accept_changed_definition)
        return _parse(RunInfo, await self.call("runs.resume", params))

    async def schedules_list(self) -> ScheduleListResult:
        """`schedules.list`."""
        return _parse(ScheduleListResult, await self.call("schedules.list", EmptyParams()))

    async def schedules_next(self, schedule_id: str, count: int = 5, *,
                             pipeline_id: str | None = None) -> ScheduleNextResult:
        """`schedules.next`: the schedule's next ``count`` fire times with their UTC offsets."""
        params = ScheduleNextParams(schedule_id=schedule_id, pipeline_id=pipeline_id, count=count)
        return _parse(ScheduleNextResult, await self.call("schedules.next", params))

    async def schedules_pause(self, schedule_id: str, *, pipeline_id: str | None = None) -> ScheduleInfo:
        """`schedules.pause`: ``schedule_id`` is ``pipeline/schedule`` or an id only one pipeline uses."""
        params = ScheduleRefParams(schedule_id=schedule_id, pipeline_id=pipeline_id)
        return _parse(ScheduleInfo, await self.call("schedules.pause", params))

    async def schedules_unpause(self, schedule_id: str, *, pipeline_id: str | None = None) -> ScheduleInfo:
        """`schedules.unpause`."""
        params = ScheduleRefParams(schedule_id=schedule_id, pipeline_id=pipeline_id)
        return _parse(ScheduleInfo, await self.call("schedules.unpause", params))

    async def schedules_trigger(self, schedule_id: str, *, pipeline_id: str | None = None) -> ScheduleTriggerResult:
        """`schedules.trigger`: fire the schedule now."""
        params = ScheduleRefParams(schedule_id=schedule_id, pipeline_id=pipeline_id)
        return _parse(ScheduleTriggerResult, await self.call("schedules.trigger", params))

    # --- plumbing ----------------------------------------------------------------------------

    async def _write(self, message: dict[str, Any]) -> None:
        assert self._writer is not None
        try:
            self._writer.write(encode(message))
            await self._writer.drain()
        except (ConnectionError, RuntimeError):
            raise ConnectionLostError(self.socket_path, "connection closed while sending") from None

    async def _read(self) -> StreamItem | ErrorResponse:
        assert self._reader is not None
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise ConnectionLostError(self.socket_path) from None
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"reply longer than {self.max_response_bytes} bytes") from None
        except ConnectionError:
            raise ConnectionLostError(self.socket_path) from None
        try:
            return parse_reply(json.loads(line))
        except ValueError as exc:  # JSON errors and pydantic's ValidationError alike
            raise ProtocolError(f"malformed reply from the daemon: {exc}") from None

    def _is_stale(self) -> bool:
        """Whether the daemon closed the connection (idle timeout, restart) since the last call."""
        if self._reader is None or self._writer is None or self._writer.is_closing():
            return True
        if self._reader.at_eof():
            return True
        # Between calls the daemon sends nothing, so anything readable is an EOF (or garbage).
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return True
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
        return bool(readable)

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.transport.abort()


class Client:
    """The synchronous client: the same helpers as :class:`AsyncClient`, on a private event loop.

    Not for use inside a running event loop (use :class:`AsyncClient` there).
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *,
                 timeout: float | None = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncClient(socket_path, timeout=timeout, connect_timeout=connect_timeout)

    @property
    def socket_path(self) -> Path:
        """The socket this client connects to."""
        return self._client.socket_path

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and the private event loop."""
        try:
            self._run(self._client.close())
        finally:
            self._runner.close()

    def connect(self) -> None:
        """Open the connection now instead of on first use."""
        self._run(self._client.connect())

    def call(self, method: str, params: Mapping[str, Any] | BaseModel | None = None, *,
             timeout: float | None = _USE_DEFAULT) -> Any:
        """See :meth:`AsyncClient.call`."""
        return self._run(self._client.call(method, params, timeout=timeout))

    def stream(self, method: str, params: Mapping[str, Any] | BaseModel | None = None
               ) -> Iterator[StreamItem]:
        """See :meth:`AsyncClient.stream`."""
        return self._iterate(self._client.stream(method, params))

    def health(self) -> HealthResult:
        """`health`."""
        return self._run(self._client.health())

    def version(self) -> VersionResult:
        """`version`."""
        return self._run(self._client.version())

    def status(self) -> StatusResult:
        """`status`."""
        return self._run(self._client.status())

    def pipelines_list(self) -> PipelineListResult:
        """`pipelines.list`."""
        return self._run(self._client.pipelines_list())

    def pipelines_show(self, pipeline_id: str) -> PipelineShowResult:
        """`pipelines.show`."""
        return self._run(self._client.pipelines_show(pipeline_id))

    def pipelines_validate(self, *, path: str | None = None,
                           definition: dict[str, Any] | None = None) -> PipelineValidateResult:
        """`pipelines.validate`."""
        return self._run(self._client.pipelines_validate(path=path, definition=definition))

    def runs_start(self, pipeline_id: str, inputs: dict[str, Any] | None = None) -> RunInfo:
        """`runs.start`."""
        return self._run(self._client.runs_start(pipeline_id, inputs))

    def runs_list(self, *, status: RunStatus | None = None, pipeline_id: str | None = None,
                  limit: int = 50) -> RunListResult:
        """`runs.list`."""
        return self._run(self._client.runs_list(status=status, pipeline_id=pipeline_id, limit=limit))

    def runs_show(self, run_id: str) -> RunInfo:
        """`runs.show`."""
        return self._run(self._client.runs_show(run_id))

    def runs_events(self, run_id: str, *, after_id: int | None = None,
                    limit: int | None = None) -> RunEventsResult:
        """`runs.events` without follow: one page."""
        return self._run(self._client.runs_events(run_id, after_id=after_id, limit=limit))

    def runs_events_all(self, run_id: str, *, after_id: int | None = None) -> RunEventsResult:
        """`runs.events`, every page."""
        return self._run(self._client.runs_events_all(run_id, after_id=after_id))

    def runs_output(self, run_id: str, path: str | None = None) -> RunOutputResult:
        """`runs.output`."""
        return self._run(self._client.runs_output(run_id, path))

    def runs_follow(self, run_id: str, *, after_id: int | None = None
                    ) -> Iterator[RunEvent | RunEventsResult]:
        """`runs.events` with follow: each event, then the final result."""
        return self._iterate(self._client.runs_follow(run_id, after_id=after_id))

    def runs_cancel(self, run_id: str) -> RunInfo:
        """`runs.cancel`."""
        return self._run(self._client.runs_cancel(run_id))

    def runs_resume(self, run_id: str, *, force: bool = False, pinned: bool = False,
                    accept_changed_definition: bool = False) -> RunInfo:
        """`runs.resume`."""
        return self._run(self._client.runs_resume(
            run_id, force=force, pinned=pinned, accept_changed_definition=accept_changed_definition))

    def schedules_list(self) -> ScheduleListResult:
        """`schedules.list`."""
        return self._run(self._client.schedules_list())

    def schedules_next(self, schedule_id: str, count: int = 5, *,
                       pipeline_id: str | None = None) -> ScheduleNextResult:
        """`schedules.next`."""
        return self._run(self._client.schedules_next(schedule_id, count, pipeline_id=pipeline_id))

    def schedules_pause(self, schedule_id: str, *, pipeline_id: str | None = None) -> ScheduleInfo:
        """`schedules.pause`."""
        return self._run(self._client.schedules_pause(schedule_id, pipeline_id=pipeline_id))

    def schedules_unpause(self, schedule_id: str, *, pipeline_id: str | None = None) -> ScheduleInfo:
        """`schedules.unpause`."""
        return self._run(self._client.schedules_unpause(schedule_id, pipeline_id=pipeline_id))

    def schedules_trigger(self, schedule_id: str, *, pipeline_id: str | None = None) -> ScheduleTriggerResult:
        """`schedules.trigger`."""
        return self._run(self._client.schedules_trigger(schedule_id, pipeline_id=pipeline_id))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await stream.__anext__()

        try:
            while True:
                try:
                    item = self._run(step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                self._run(aclose())


def _params(params: Mapping[str, Any] | BaseModel | None) -> dict[str, Any] | None:
    if params is None:
        return None
    if isinstance(params, Params):
        return params.model_dump(mode="json", exclude_none=True)
    if isinstance(params, BaseModel):
        return params.model_dump(mode="json")
    return dict(params)


def _result_of(message: StreamItem | ErrorResponse, request_id: int) -> Any:
    if isinstance(message, ErrorResponse):
        # A null id is the daemon refusing a line it could not read an id from: still our reply,
        # since one connection carries one exchange at a time.
        if message.id not in (request_id, None):
            raise ProtocolError(f"reply for request {message.id!r} while waiting for {request_id}")
        raise RemoteError(message.error.code, message.error.message, message.error.data)
    if isinstance(message, Response) and message.id == request_id:
        return message.result
    raise ProtocolError(f"unexpected reply while waiting for request {request_id}")


def _parse(model: type[R], result: Any) -> R:
    try:
        return model.model_validate(result)
    except ValidationError as exc:
        raise ProtocolError(f"the daemon's {model.__name__} does not match this client: {exc}") from None
