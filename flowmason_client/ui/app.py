"""The web view's Starlette application: server-rendered pages over the control socket.

Every page is one or a few control-socket calls made as the user who started ``flowmason ui``,
so the daemon's authorization applies unchanged; the page shows the cancel/resume/rerun buttons
only when the daemon says that uid may mutate (``health.can_mutate``), and the daemon still
refuses a mutating call from anyone else. Stage outputs and errors are hostile input: the
templates autoescape everything, and no value from a run is ever put into a script.
"""

from __future__ import annotations

import hmac
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from flowmason_client.client import AsyncClient
from flowmason_client.errors import ClientError, DaemonUnreachableError, RemoteError
from flowmason_client.protocol import ErrorCode, RunEvent
from flowmason_client.ui.dag import FINISHED_RUN, display_status, format_duration, layout, row_duration_ms

HERE = Path(__file__).resolve().parent
COOKIE = "flowmason_ui"
# The non-durable `runs.event` kind carrying a piece of an LLM answer (flowmasond.streaming).
TOKEN_KIND = "llm.token"  # noqa: S105 - an event kind, not a secret
RUN_STATES = ["pending", "running", "succeeded", "failed", "cancelled", "interrupted"]
# Headers on every answer: the token travels in the first URL, so no Referer may carry it to
# another site (same-origin referrers keep the browser's Origin header, which POSTs are checked on);
# no framing (clickjacking of the cancel button); scripts and styles only from /static.
SECURITY_HEADERS = {
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "Cache-Control": "no-store",
}


class TokenGate:
    """ASGI middleware: every request carries the token, in ``?token=`` once and then in a cookie.

    The first visit with the right ``?token=`` sets an HttpOnly SameSite=Strict cookie and
    redirects to the same URL without the token (so it leaves the address bar and history).
    Comparisons are constant-time. POSTs must also come from our own origin.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self._ok(request.query_params.get("token")):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urlencode(rest) if rest else "")
            response: Response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
            response.set_cookie(COOKIE, self.token.decode(), httponly=True, samesite="strict", path="/")
            await response(scope, receive, send)
            return
        if not self._ok(request.cookies.get(COOKIE)):
            await PlainTextResponse("forbidden: open the URL that `flowmason ui` printed (it carries the token)",
                                    status_code=403, headers=SECURITY_HEADERS)(scope, receive, send)
            return
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            await PlainTextResponse("forbidden: cross-origin request", status_code=403,
                                    headers=SECURITY_HEADERS)(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _when(value: Any) -> str:
    """A journal timestamp (epoch seconds) as local time."""
    if not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    """JSON for a <pre> block (escaped by the template, like everything else)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _money(value: Any) -> str:
    """US dollars; small LLM costs keep their significant digits."""
    if not isinstance(value, (int, float)) or not value:
        return ""
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def _run_duration(run: dict[str, Any], now: float) -> str:
    start, end = run.get("started_at"), run.get("finished_at")
    if not isinstance(start, (int, float)):
        return ""
    if not isinstance(end, (int, float)):
        end = now if run.get("status") == "running" else start
    return format_duration((end - start) * 1000.0)


def _started_by(run: dict[str, Any]) -> dict[str, str | None]:
    """What made the run: a schedule, a parent run, or someone's command."""
    if run.get("schedule_id"):
        return {"kind": "schedule", "text": f"schedule {run['schedule_id']}", "run": None}
    if run.get("parent_run_id"):
        return {"kind": "parent", "text": "child of", "run": run["parent_run_id"]}
    return {"kind": "manual", "text": "manual", "run": None}


def make_environment() -> jinja2.Environment:
    """The template environment: autoescape on for every template (stage outputs are hostile)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(when=_when, pretty=_pretty, money=_money, duration=format_duration,
                       urlpart=lambda v: quote(str(v), safe="/"))
    return env


Handler = Callable[[Request, AsyncClient], Awaitable[Response]]


def create_app(socket_path: str | Path | None, token: str) -> ASGIApp:
    """The web view for the daemon at ``socket_path``, guarded by ``token``."""
    templates = Jinja2Templates(env=make_environment())

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def daemon_page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Open a client for one request; turn daemon errors into readable pages."""
        async def endpoint(request: Request) -> Response:
            try:
                async with AsyncClient(socket_path, timeout=30.0) as client:
                    return await handler(request, client)
            except DaemonUnreachableError as exc:
                return page(request, "error.html", 503, title="daemon not reachable", message=str(exc))
            except RemoteError as exc:
                code = 404 if exc.code in (ErrorCode.RUN_NOT_FOUND, ErrorCode.PIPELINE_NOT_FOUND) else (
                    403 if exc.code == ErrorCode.PERMISSION_DENIED else 409)
                return page(request, "error.html", code, title="the daemon refused", message=exc.message)
            except ClientError as exc:
                return page(request, "error.html", 502, title="daemon error", message=str(exc))
        return endpoint

    async def can_mutate(client: AsyncClient) -> bool:
        # The daemon decides (root, its own uid, the allow list); an older daemon that does not
        # say is treated as "no", which only hides buttons.
        return bool((await client.health()).can_mutate)

    async def runs_page(request: Request, client: AsyncClient) -> Response:
        status = request.query_params.get("status") or None
        pipeline = request.query_params.get("pipeline") or None
        try:
            limit = min(max(int(request.query_params.get("limit", "50")), 1), 500)
        except ValueError:
            limit = 50
        runs = (await client.runs_list(status=status if status in RUN_STATES else None,  # type: ignore[arg-type]
                                       pipeline_id=pipeline, limit=limit)).runs
        pipelines = (await client.pipelines_list()).pipelines
        now = time.time()
        rows = [{**r.model_dump(), "duration": _run_duration(r.model_dump(), now),
                 "started_by": _started_by(r.model_dump())} for r in runs]
        return page(request, "runs.html", title="runs", nav="runs", runs=rows, states=RUN_STATES,
                    status=status or "", pipeline=pipeline or "", limit=limit,
                    pipeline_ids=sorted({p.pipeline_id for p in pipelines}))

    async def run_context(request: Request, client: AsyncClient) -> dict[str, Any]:
        run = (await client.runs_show(request.path_params["run_id"])).model_dump()
        now = time.time()
        rows = run.get("stages") or []
        for row in rows:
            row["shown_status"] = display_status(row, run.get("status"))
            row["duration"] = format_duration(row_duration_ms(row, now))
        return {"run": run, "rows": rows, "now": now, "duration": _run_duration(run, now),
                "started_by": _started_by(run), "live": run.get("status") not in FINISHED_RUN,
                "dag": layout(run.get("graph"), rows, run_status=run.get("status"), now=now),
                "can_mutate": await can_mutate(client)}

    async def run_page(request: Request, client: AsyncClient) -> Response:
        context = await run_context(request, client)
        return page(request, "run.html", title=f"run {context['run']['run_id']}", nav="runs", **context)

    async def run_fragment(request: Request, client: AsyncClient) -> Response:
        return page(request, "_run_live.html", **await run_context(request, client))

    async def stage_page(request: Request, client: AsyncClient) -> Response:
        run_id, path = request.path_params["run_id"], request.path_params["path"]
        run = (await client.runs_show(run_id)).model_dump()
        rows = {r["path"]: r for r in run.get("stages") or []}
        if path not in rows:
            return page(request, "error.html", 404, title="no such stage",
                        message=f"run {run_id} has no stage at path {path!r}")
        row = rows[path]
        stage_id = row.get("stage_id") or path.rsplit("/", 1)[-1]
        definition = next((s for s in (run.get("graph") or {}).get("stages", []) if s["id"] == stage_id), None)
        upstream = {}
        for dep in (definition or {}).get("depends_on", []):
            # A dependency's execution is the sibling at the same nesting level, else the top-level one.
            sibling = path.rsplit("/", 1)[0] + "/" + dep if "/" in path else dep
            dep_row = rows.get(sibling) or rows.get(dep)
            upstream[dep] = dep_row.get("output") if dep_row else None
        if row.get("output_truncated"):  # `runs.show` bounds outputs; this page is about this one
            row["output"] = (await client.runs_output(run_id, path)).output
        events = [e for e in (await client.runs_events_all(run_id)).events if e.stage_id == path]
        now = time.time()
        return page(request, "stage.html", title=f"{path} · run {run_id}", nav="runs", run=run, row=row,
                    path=path, definition=definition, upstream=upstream, events=events,
                    status=display_status(row, run.get("status")),
                    duration=format_duration(row_duration_ms(row, now)))

    async def run_action(request: Request, client: AsyncClient) -> Response:
        run_id, action = request.path_params["run_id"], request.path_params["action"]
        if action == "cancel":
            await client.runs_cancel(run_id)
        elif action == "resume":
            await client.runs_resume(run_id)
        elif action == "rerun":
            old = await client.runs_show(run_id)
            run_id = (await client.runs_start(old.pipeline_id or "", old.inputs or {})).run_id
        else:
            return PlainTextResponse("unknown action", status_code=404)
        return RedirectResponse(f"/runs/{quote(run_id)}", status_code=303)

    async def schedules_page(request: Request, client: AsyncClient) -> Response:
        schedules = (await client.schedules_list()).schedules
        return page(request, "schedules.html", title="schedules", nav="schedules",
                    schedules=[s.model_dump() for s in schedules], can_mutate=await can_mutate(client))

    async def schedule_action(request: Request, client: AsyncClient) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action == "pause":
            await client.schedules_pause(name)
        elif action == "unpause":
            await client.schedules_unpause(name)
        elif action == "trigger":
            await client.schedules_trigger(name)
        else:
            return PlainTextResponse("unknown action", status_code=404)
        return RedirectResponse("/schedules", status_code=303)

    async def pipelines_page(request: Request, client: AsyncClient) -> Response:
        pipelines = (await client.pipelines_list()).pipelines
        return page(request, "pipelines.html", title="pipelines", nav="pipelines",
                    pipelines=[p.model_dump() for p in pipelines], can_mutate=await can_mutate(client))

    async def pipeline_start(request: Request, client: AsyncClient) -> Response:
        form = await request.form()
        raw = str(form.get("inputs") or "{}").strip() or "{}"
        try:
            inputs = json.loads(raw)
        except json.JSONDecodeError as exc:
            return page(request, "error.html", 400, title="inputs are not JSON", message=str(exc))
        if not isinstance(inputs, dict):
            return page(request, "error.html", 400, title="inputs must be a JSON object", message=raw)
        run = await client.runs_start(request.path_params["pipeline_id"], inputs)
        return RedirectResponse(f"/runs/{quote(run.run_id)}", status_code=303)

    async def run_stream(request: Request) -> Response:
        """Server-sent events: one per journal event of the run (``runs.events`` with follow)."""
        run_id = request.path_params["run_id"]

        async def events() -> AsyncIterator[str]:
            try:
                async with AsyncClient(socket_path, timeout=None) as client:
                    async for item in client.runs_follow(run_id):
                        if not isinstance(item, RunEvent):
                            continue
                        if item.kind == TOKEN_KIND:
                            # A piece of an LLM answer as it streams; the page appends it as text.
                            piece = {"path": item.stage_id, "text": (item.data or {}).get("text", "")}
                            yield f"event: token\ndata: {json.dumps(piece)}\n\n"
                            continue
                        # Only what the page needs to decide to refresh: never the event's data.
                        payload = {"id": item.id, "kind": item.kind, "path": item.stage_id}
                        yield f"event: journal\ndata: {json.dumps(payload)}\n\n"
            except ClientError as exc:
                yield f"event: failure\ndata: {json.dumps(str(exc))}\n\n"
            # The run finished (or the daemon went away): tell the page to stop reconnecting.
            yield "event: end\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    routes = [
        Route("/", daemon_page(runs_page)),
        Route("/runs/{run_id}", daemon_page(run_page)),
        Route("/runs/{run_id}/live", daemon_page(run_fragment)),
        Route("/runs/{run_id}/stream", run_stream),
        Route("/runs/{run_id}/stages/{path:path}", daemon_page(stage_page)),
        Route("/runs/{run_id}/{action}", daemon_page(run_action), methods=["POST"]),
        Route("/schedules", daemon_page(schedules_page)),
        Route("/schedules/{action}/{name:path}", daemon_page(schedule_action), methods=["POST"]),
        Route("/pipelines", daemon_page(pipelines_page)),
        Route("/pipelines/{pipeline_id}/start", daemon_page(pipeline_start), methods=["POST"]),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return TokenGate(Starlette(routes=routes), token)


def login_url(base: URL | str, token: str) -> str:
    """The URL to print: the base with the token."""
    return f"{str(base).rstrip('/')}/?token={token}"
