"""The ``flowmason`` command: talk to a running flowmasond over its control socket.

Exit status: 0 success (for ``run --follow``/``resume --follow``: the run succeeded), 1 the run or
the request failed, 2 usage error, 3 the run was cancelled or interrupted, 69 the daemon is not
reachable (one line naming the socket path tried).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, UTC
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowmason_client import cli_ops
from flowmason_client.client import Client
from flowmason_client.errors import ClientError, DaemonUnreachableError, RemoteError
from flowmason_client.inputs import parse_inputs
from flowmason_client.protocol import RunEvent, RunEventsResult, RunInfo

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_UNREACHABLE = 69
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}
# The kind of the non-durable events carrying an LLM answer as it streams (see flowmasond.streaming).
TOKEN_KIND = "llm.token"  # noqa: S105 - an event kind, not a secret


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowmason", description="Control a running flowmasond.")
    parser.add_argument("--socket", metavar="PATH",
                        help="daemon socket (default: $FLOWMASON_SOCKET or the standard path)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for the daemon to answer (e.g. right after starting it)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_json(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # Accepted before or after the subcommand: SUPPRESS keeps the value given before it.
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
        p.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    run = with_json(sub.add_parser("run", help="start a run of a pipeline"))
    run.add_argument("pipeline")
    run.add_argument("--input", help="inputs as a JSON object")
    run.add_argument("--input-file", metavar="F", help="a file holding the inputs as a JSON object")
    run.add_argument("-i", dest="set", action="append", metavar="KEY=VALUE",
                     help="one input (JSON or text); repeatable")
    run.add_argument("--follow", "-f", action="store_true", help="show progress until the run ends")
    run.add_argument("--break-at", action="append", default=[], metavar="STAGE",
                     help="pause the run before this stage (flowmason continue / step); repeatable")

    runs = with_json(sub.add_parser("runs", help="list runs, newest first"))
    runs.add_argument("--status", choices=["pending", "running", "paused", "succeeded", "failed", "cancelled",
                                           "interrupted"])
    runs.add_argument("--pipeline")
    runs.add_argument("--limit", type=_limit, default=50, help="1 to 1000 (default 50)")
    runs.add_argument("--since", metavar="DATE", help="created at or after (ISO date or date-time, local time)")
    runs.add_argument("--until", metavar="DATE", help="created before (ISO date or date-time, local time)")
    runs.add_argument("--schedule", metavar="ID", help="started by this schedule")
    runs.add_argument("--parent", metavar="RUN", help="subpipeline runs of this run")
    runs.add_argument("--cursor", help="continue after the page that printed this cursor")
    runs.add_argument("--count", action="store_true", help="print how many runs match, not the runs")

    show = with_json(sub.add_parser("show", help="a run with every stage"))
    show.add_argument("run")
    show.add_argument("--output", metavar="STAGE_PATH", dest="stage_output",
                      help="print one stage's full output (`show` cuts long outputs short); 'run' for the run's")
    events = with_json(sub.add_parser("events", help="a run's journal events"))
    events.add_argument("run")
    events.add_argument("--follow", "-f", action="store_true")
    events.add_argument("--after", type=int, default=None, metavar="ID", help="only events after this event id")
    cancel = with_json(sub.add_parser("cancel", help="cancel a running run; waits until it stopped "
                                                     "(in-flight stages get cancel_grace_s)"))
    cancel.add_argument("run")
    cancel.add_argument("--no-wait", action="store_true", help="return at once; the run stops in the background")
    resume = with_json(sub.add_parser("resume", help="continue a failed, cancelled or interrupted run"))
    resume.add_argument("run")
    resume.add_argument("--force", action="store_true", help="re-run a stage that is not safe to repeat")
    which = resume.add_mutually_exclusive_group()
    which.add_argument("--pinned", action="store_true", help="use the definition the run started with")
    which.add_argument("--accept-changed", action="store_true", help="use the pipeline's current definition")
    resume.add_argument("--follow", "-f", action="store_true")
    pipes = with_json(sub.add_parser("pipelines", help="pipelines the daemon knows, with file errors; "
                                                       "'pipelines show ID' for one, with its DAG"))
    pipes.add_argument("action", nargs="?", choices=["show"])
    pipes.add_argument("pipeline", nargs="?", metavar="ID")
    val = with_json(sub.add_parser("validate", help="validate pipeline files (no daemon needed)"))
    val.add_argument("files", nargs="+")
    val.add_argument("--strict", action="store_true",
                     help="keys unknown to both FlowMason and flowmasond are errors, not warnings")
    with_json(sub.add_parser("status", help="the daemon's status"))
    schedules = with_json(sub.add_parser("schedules", help="cron schedules: next and last fire, last run's status, "
                                                           "paused; --next N ID lists a schedule's next N fires"))
    schedules.add_argument("--next", type=int, metavar="N", help="list the next N fire times of schedule ID, "
                                                                 "with their UTC offsets")
    schedules.add_argument("schedule", metavar="ID", nargs="?",
                           help="pipeline/schedule, or a schedule id only one pipeline uses (with --next)")
    schedule = with_json(sub.add_parser("schedule", help="pause, unpause or fire a schedule now"))
    schedule.add_argument("action", choices=["pause", "unpause", "trigger"])
    schedule.add_argument("schedule", metavar="ID", help="pipeline/schedule, or a schedule id only one pipeline uses")
    cli_ops.add_commands(sub, with_json)
    ui = sub.add_parser("ui", help="a local web view of runs (prints its URL; needs the 'ui' extra)")
    ui.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ui.add_argument("--open", action="store_true", help="open the URL in a browser")
    return parser


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..1000")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args)
    if args.command == "ui":
        return _ui(args)
    if args.command in cli_ops.OFFLINE:
        return cli_ops.cmd_methods(args)
    try:
        if args.wait > 0:
            _wait_for_daemon(args.socket, args.wait)
        with Client(args.socket) as client:
            return COMMANDS[args.command](client, args)
    except DaemonUnreachableError as exc:
        print(f"flowmason: daemon not reachable at {exc.socket_path}: {exc.reason}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RemoteError as exc:
        print(f"flowmason: {exc.describe()}", file=sys.stderr)
        return EXIT_FAILED
    except ClientError as exc:
        print(f"flowmason: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"flowmason: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        sys.stderr.close()
        return 0


def _ui(args: argparse.Namespace) -> int:
    """Serve the web view until interrupted; the daemon need not be up yet (pages say so)."""
    from flowmason_client import ui

    problem = ui.missing_dependencies()
    if problem is not None:
        print(f"flowmason: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = ui.bind(args.port)
    except OSError as exc:
        print(f"flowmason: cannot listen on {ui.HOST}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Client(args.socket, timeout=5.0, connect_timeout=2.0) as client:
            client.health()
    except ClientError as exc:
        print(f"flowmason: warning: {exc} (the pages will say so until it answers)", file=sys.stderr)
    try:
        ui.serve(args.socket, sock, open_browser=args.open)
    except KeyboardInterrupt:
        pass
    return 0


def _wait_for_daemon(socket_path: str | None, seconds: float) -> None:
    """Poll ``health`` until the daemon answers or ``seconds`` pass (then the last error is raised)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with Client(socket_path, timeout=2.0, connect_timeout=1.0) as client:
                if client.health().status != "starting":
                    return
        except DaemonUnreachableError:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            return  # answering but still recovering: go ahead, the daemon accepts requests
        time.sleep(0.1)


# -- commands ------------------------------------------------------------------------------------
def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    return parse_inputs(input_json=args.input, input_file=args.input_file, pairs=args.set)


def cmd_run(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"pipeline_id": args.pipeline, "inputs": _inputs(args)}
    if args.break_at:
        params["break_at"] = args.break_at
    info = RunInfo.model_validate(client.call("runs.start", params))
    if args.follow:
        # The id first, so an operator can act on the run (cancel, logs) while it is followed.
        if args.json:
            print(json.dumps({"run_id": info.run_id, "status": info.status}), flush=True)
        else:
            print(f"run {info.run_id} started", flush=True)
        return _follow(client, info.run_id, as_json=args.json)
    _print(info.model_dump(mode="json"), args.json, lambda d: f"{d['run_id']}  {d['status']}")
    return 0


def cmd_runs(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"status": args.status, "pipeline_id": args.pipeline, "limit": args.limit,
                              "schedule_id": args.schedule, "parent_run_id": args.parent, "cursor": args.cursor,
                              "count": args.count}
    if args.since:
        params["since"] = cli_ops.parse_date(args.since, flag="--since")
    if args.until:
        params["until"] = cli_ops.parse_date(args.until, flag="--until")
    result = client.call("runs.list", {k: v for k, v in params.items() if v is not None})
    if args.count:
        _print(result, args.json, lambda d: str(d["count"]))
        return 0
    rows = result["runs"]
    if args.json:
        print(json.dumps(rows, indent=2))
        if result.get("next_cursor"):
            print(f"next page: flowmason runs --cursor {result['next_cursor']}", file=sys.stderr)
        return 0
    print(f"{'RUN':24} {'PIPELINE':20} {'STATUS':12} {'CREATED':20} {'TRIGGER'}")
    for r in rows:
        if r.get("schedule_id"):
            trigger = f"schedule {r.get('schedule_id')} @ {_ts(r.get('fire_time'))}"
        elif r.get("parent_run_id"):
            trigger = f"child of {r['parent_run_id']}"
        elif r.get("forked_from"):
            trigger = f"rerun of {r['forked_from']}" + (f" from {r['from_stage']}" if r.get("from_stage") else "")
        else:
            trigger = "manual"
        print(f"{r['run_id']:24} {r.get('pipeline_id')!s:20} {r.get('status')!s:12} "
              f"{_ts(r.get('created_at')):20} {trigger}")
    if result.get("next_cursor"):
        print(f"next page: flowmason runs --cursor {result['next_cursor']} (same filters)")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    if args.stage_output:
        path = None if args.stage_output == "run" else args.stage_output
        print(json.dumps(client.runs_output(args.run, path).output, indent=2))
        return 0
    info = client.runs_show(args.run).model_dump(mode="json")
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"run       {info['run_id']}")
    print(f"pipeline  {info.get('pipeline_id')}")
    print(f"status    {info.get('status')}")
    if info.get("schedule_id"):
        print(f"schedule  {info['schedule_id']} fired at {_ts(info.get('fire_time'))}")
    if info.get("forked_from"):
        source = f"rerun of {info['forked_from']}"
        if info.get("from_stage"):
            reused = sum(1 for st in info.get("stages") or [] if st.get("reused"))
            source += f" from stage {info['from_stage']} ({reused} stage results reused)"
        print(f"source    {source}")
    if info.get("breakpoints") or info.get("stepping"):
        print(f"breaks    {', '.join(info.get('breakpoints') or []) or '-'}"
              + ("  (stepping)" if info.get("stepping") else ""))
    print(f"created   {_ts(info.get('created_at'))}   finished {_ts(info.get('finished_at'))}")
    usage = info.get("usage") or {}
    if usage.get("input_tokens") or usage.get("output_tokens"):
        print(f"usage     {usage.get('input_tokens', 0)} in + {usage.get('output_tokens', 0)} out tokens, "
              f"${usage.get('cost_usd', 0):.6f}")
    print("stages:")
    for stage in info.get("stages") or []:
        line = f"  {stage.get('status', '?'):12} {stage['path']}"
        if stage.get("duration_ms") is not None:
            line += f"  {stage['duration_ms']:.0f} ms"
        if stage.get("attempts"):
            line += f"  attempts={stage['attempts']}"
        if stage.get("reused"):
            line += "  (reused from the source run)"
        su = stage.get("usage") or {}
        if su.get("input_tokens") or su.get("output_tokens"):
            line += f"  tokens={su.get('input_tokens', 0)}+{su.get('output_tokens', 0)} ${su.get('cost_usd', 0):.6f}"
        if stage.get("error"):
            line += f"  error: {stage['error']}"
        if stage.get("output_truncated"):
            line += f"  output: {stage['output_truncated']['bytes']} bytes (--output {stage['path']})"
        print(line)
    if info.get("error"):
        err = info["error"]
        print(f"error     {err.get('message') if isinstance(err, dict) else err}")
    for path, waiting in (info.get("paused_at") or {}).items():
        print(f"paused before {path}; it will receive:")
        print(json.dumps(waiting.get("inputs"), indent=2))
    if info.get("log_stages"):
        listed = ", ".join(x["path"] for x in info["log_stages"])
        print(f"logs      {listed}  (flowmason logs {info['run_id']} [STAGE])")
    if info.get("stages_omitted"):
        omitted = info["stages_omitted"]
        print(f"  ... {omitted['count']} more stages not shown (limit {omitted['limit_name']} = {omitted['limit']}); "
              f"`flowmason events {info['run_id']}` lists them all")
    if info.get("output_truncated"):
        cut = info["output_truncated"]
        print(f"output:   {cut['bytes']} bytes, more than `show` returns; "
              f"`flowmason show {info['run_id']} --output run` prints it all")
    elif info.get("status") == "succeeded":
        print("output:")
        print(json.dumps(info.get("output"), indent=2))
    return 0


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        return _follow(client, args.run, as_json=args.json, show_all=True, after_id=args.after)
    result = client.runs_events_all(args.run, after_id=args.after)  # every page: a long run has more than one
    for event in result.events:
        _print_event(event.model_dump(mode="json"), args.json)
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    info = client.call("runs.cancel", {"run_id": args.run})
    if info.get("cancelling") and not args.no_wait:
        info = cli_ops.wait_stopped(client, args.run)
    _print(info, args.json, lambda d: f"{d['run_id']}  {d['status']}")
    return 0


def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    info = client.runs_resume(args.run, force=args.force, pinned=args.pinned,
                              accept_changed_definition=args.accept_changed)
    if args.follow:
        return _follow(client, args.run, as_json=args.json)
    _print(info.model_dump(mode="json"), args.json, lambda d: f"{d['run_id']}  {d['status']} (resumed)")
    return 0


def cmd_pipelines(client: Client, args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.pipeline:
            raise ValueError("pipelines show: name the pipeline (flowmason pipelines show ID)")
        return cli_ops.show_pipeline(client, args.pipeline, args.json)
    result = client.pipelines_list().model_dump(mode="json")
    if args.json:
        print(json.dumps(result["pipelines"], indent=2))
        return 0
    for p in result["pipelines"]:
        state = "ok" if p.get("valid", True) else "INVALID"
        schedules = ", ".join(s["id"] for s in p.get("schedules") or [])
        print(f"{p['pipeline_id']:24} {state:8} {p.get('stage_count') or '-':>4} stages  {p.get('path')}"
              + (f"  schedules: {schedules}" if schedules else ""))
        for issue in [*((p.get("error") or {}).get("issues") or []), *(p.get("warnings") or [])]:
            where = ", ".join(x for x in (f"stage '{issue['stage']}'" if issue.get("stage") else "",
                                          f"field '{issue['field']}'" if issue.get("field") else "") if x)
            tag = "warning: " if issue.get("severity") == "warning" else ""
            print(f"    {issue.get('file') or p.get('path')}: {tag}{where + ': ' if where else ''}{issue['message']}")
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    status = client.status().model_dump(mode="json")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"flowmasond {status.get('version')} pid {status.get('pid')}, up {status.get('uptime_s', 0):.0f} s"
          + (" (stopping)" if status.get("stopping") else ""))
    by_status = ", ".join(f"{n} {name}" for name, n in sorted((status.get("runs") or {}).items())) or "none"
    print(f"runs: {status.get('active_runs')} active, {status.get('queued_runs')} queued "
          f"(limit {status.get('max_concurrent_runs')}); in the journal: {by_status}")
    line = f"pipelines: {status.get('pipelines')} loaded"
    if status.get("pipelines_with_errors"):
        line += f" ({status['pipelines_with_errors']} running their last good version)"
    if status.get("invalid_files"):
        line += f", {status['invalid_files']} invalid file(s)"
    print(f"{line}, schedules: {status.get('schedules')}")
    print(f"state: {status.get('state_dir')}  socket: {status.get('socket_path')}")
    return 0


def cmd_schedules(client: Client, args: argparse.Namespace) -> int:
    if args.next is not None or args.schedule is not None:
        return _next_fires(client, args)
    rows = [s.model_dump(mode="json") for s in client.schedules_list().schedules]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'SCHEDULE':32} {'CRON':16} {'ZONE':18} {'NEXT FIRE':25} {'LAST FIRE':25} {'LAST RUN':36} PAUSED")
    for r in rows:
        last_run = r.get("last_run_status") or "-"
        if r.get("last_run_id"):
            last_run += f" {r['last_run_id']}"
        state = "yes" if r.get("paused") else ("disabled" if not r.get("enabled", True) else "no")
        print(f"{r.get('name') or r['pipeline_id'] + '/' + r['id']:32} {r.get('cron')!s:16} "
              f"{r.get('timezone')!s:18} {_zoned(r.get('next_fire'), r.get('timezone')):25} "
              f"{_zoned(r.get('last_fire'), r.get('timezone')):25} {last_run:36} {state}")
    return 0


def _next_fires(client: Client, args: argparse.Namespace) -> int:
    if args.schedule is None or args.next is None:
        raise ValueError("give both --next N and a schedule ID, e.g. flowmason schedules --next 10 nightly/0230")
    if not 1 <= args.next <= 1000:
        raise ValueError("--next takes a number from 1 to 1000")
    result = client.schedules_next(args.schedule, args.next).model_dump(mode="json")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    schedule = result["schedule"]
    state = " (paused: these are the times it would fire)" if schedule.get("paused") else (
        " (disabled: these are the times it would fire)" if not schedule.get("enabled", True) else "")
    print(f"{schedule.get('name')}  {schedule.get('cron')}  {schedule.get('timezone')}{state}")
    for fire in result["fires"]:
        utc = datetime.fromtimestamp(fire["time"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        print(f"  {fire['local']}  (UTC{fire['utc_offset']}, {utc})")
    if len(result["fires"]) < args.next:
        print("  (no further fire times: the expression stops matching)")
    return 0


def cmd_schedule(client: Client, args: argparse.Namespace) -> int:
    if args.action == "trigger":
        result = client.schedules_trigger(args.schedule).model_dump(mode="json")
        _print(result, args.json, lambda d: f"{(d.get('schedule') or {}).get('name', args.schedule)}  {d['action']}"
               + (f" run {d['run_id']}" if d.get("run_id") else "") + (f" ({d['reason']})" if d.get("reason") else ""))
        return 0 if result["action"] in ("started", "queued", "skipped") else EXIT_FAILED
    verb = client.schedules_pause if args.action == "pause" else client.schedules_unpause
    info = verb(args.schedule).model_dump(mode="json")
    _print(info, args.json, lambda d: f"{d.get('name')}  {'paused' if d['paused'] else 'active'}"
           + (f", next fire {_zoned(d.get('next_fire'), d.get('timezone'))}" if d.get("next_fire") else ""))
    return 0


def _zoned(value: Any, zone: Any) -> str:
    """A fire time in the schedule's own zone, where its cron expression is read."""
    if not isinstance(value, (int, float)):
        return "-"
    try:
        return datetime.fromtimestamp(value, ZoneInfo(str(zone))).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (ZoneInfoNotFoundError, ValueError):
        return _ts(value)


def _validate(args: argparse.Namespace) -> int:
    # Validation needs the component registry, which lives in the daemon package installed beside
    # this client; it runs locally so that files can be checked before any daemon sees them.
    try:
        from flowmasond.pipelines.validate_cli import main as validate_main
    except ImportError:
        print("flowmason validate: the flowmasond package is not installed here", file=sys.stderr)
        return EXIT_FAILED
    return validate_main([*args.files, *(["--json"] if args.json else []),
                          *(["--strict"] if args.strict else [])])


COMMANDS = {
    "run": cmd_run, "runs": cmd_runs, "show": cmd_show, "events": cmd_events, "cancel": cmd_cancel,
    "resume": cmd_resume, "pipelines": cmd_pipelines, "status": cmd_status,
    "schedules": cmd_schedules, "schedule": cmd_schedule, **cli_ops.COMMANDS,
}


# -- follow ----------------------------------------------------------------------------------------
def _follow(client: Client, run_id: str, *, as_json: bool, show_all: bool = False,
            after_id: int | None = None) -> int:
    """Print stage progress (done/total, durations) until the run ends; exit status from the run."""
    total = None
    try:
        shown = client.call("runs.show", {"run_id": run_id})
        total = shown.get("top_stages") or shown.get("total_stages")
    except RemoteError:
        pass
    # Top-level stages finished, each once: a retried or resumed stage, a loop body or a branch
    # (paths with '/') never counts twice or beyond the total.
    finished: set[str] = set()
    reused: set[str] = set()  # a fork's copied results (its run.forked event lists them)
    done = 0
    final: RunEventsResult | None = None
    streaming: str | None = None  # the stage whose LLM tokens are being printed on the current line
    for item in client.runs_follow(run_id, after_id=after_id):
        if isinstance(item, RunEvent):
            event = item.model_dump(mode="json")
            if event["kind"] == TOKEN_KIND:
                # Not durable: printed as it arrives, on one line per stage, never counted.
                if as_json:
                    print(json.dumps(event), flush=True)
                    continue
                path = event.get("stage_id") or ""
                if streaming != path:
                    print(("\n" if streaming else "") + f"        llm     {path}: ", end="", flush=True)
                    streaming = path
                print((event.get("data") or {}).get("text", ""), end="", flush=True)
                continue
            path = event.get("stage_id") or ""
            if event["kind"] in ("stage.completed", "stage.failed", "stage.skipped") and "/" not in path:
                finished.add(path)
                done = len(finished)
            if as_json:
                print(json.dumps(event), flush=True)
            else:
                if event["kind"] == "run.forked":
                    reused.update((event.get("data") or {}).get("reused") or [])
                line = _event_line(event, done, total, show_all)
                if line and event.get("stage_id") in reused and event["kind"] == "stage.completed":
                    line = line.replace(" ok      ", " reused  ", 1)
                if line:
                    if streaming is not None:  # end the line of tokens first
                        print(flush=True)
                        streaming = None
                    print(line, flush=True)
        else:
            final = item
    if streaming is not None:
        print(flush=True)
    run = final.run.model_dump(mode="json") if final and final.run else client.runs_show(run_id).model_dump(mode="json")
    if run.get("output_truncated"):
        run["output"] = client.runs_output(run_id).output  # replies bound outputs; this one was asked for
    status = run.get("status")
    if as_json:
        print(json.dumps({"run_id": run_id, "status": status, "output": run.get("output"), "error": run.get("error")}))
    else:
        print(f"run {run_id} {status}")
        if status == "succeeded":
            print(json.dumps(run.get("output"), indent=2))
        elif run.get("error"):
            err = run["error"]
            print(f"error: {err.get('message') if isinstance(err, dict) else err}")
    if status == "succeeded":
        return 0
    if status in ("cancelled", "interrupted"):
        return EXIT_STOPPED
    return EXIT_FAILED


def _event_line(event: dict[str, Any], done: int, total: int | None, show_all: bool) -> str | None:
    kind = event["kind"]
    path = event.get("stage_id") or event.get("path") or ""
    data = event.get("data") or {}
    count = f"[{done}/{total}]" if total else f"[{done}]"
    if "/" in path:
        count = " " * len(count)  # nested (loop body, branch): the counter counts top-level stages
    if kind == "stage.completed":
        return f"{count} ok      {path}  {_ms(data)}"
    if kind == "stage.failed":
        return f"{count} FAILED  {path}  {_ms(data)}  {data.get('error_type') or ''} {data.get('error') or ''}".rstrip()
    if kind == "stage.skipped":
        return f"{count} skipped {path}"
    if kind == "stage.retry":
        return f"        retry   {path} attempt {data.get('attempt')}"
    if kind == "run.status":
        return f"        run {data.get('status')}"
    if show_all:
        return f"        {kind} {path}"
    return None


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event))
    else:
        print(f"{event['id']:>6} {_ts(event.get('at'))} {event['kind']:16} {event.get('stage_id') or ''} "
              f"{json.dumps(event.get('data')) if event.get('data') else ''}".rstrip())


def _ms(data: dict[str, Any]) -> str:
    ms = data.get("duration_ms")
    return f"{ms:.0f} ms" if isinstance(ms, (int, float)) else ""


def _ts(value: Any) -> str:
    if isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return str(value or "-")


def _print(data: dict[str, Any], as_json: bool, text: Any) -> None:
    print(json.dumps(data, indent=2) if as_json else text(data))




if __name__ == "__main__":
    sys.exit(main())
