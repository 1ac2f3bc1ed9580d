"""The ``flowmason`` verbs for operating runs after the fact: rerun and fork, stage logs,
breakpoints and stepping, terminate, delete and prune, and the socket method reference.

Kept apart from ``cli.py`` (starting, listing and following runs); ``cli.build_parser`` adds these
subcommands and ``cli.COMMANDS`` dispatches to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any
from collections.abc import Callable

from flowmason_client.client import Client
from flowmason_client.inputs import parse_inputs
from flowmason_client.protocol import METHODS, MethodSpec, Notification, Response

Adder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
STATES = ["pending", "running", "paused", "succeeded", "failed", "cancelled", "interrupted"]


def add_commands(sub: Any, with_json: Adder) -> None:
    """Add the operating subcommands to the ``flowmason`` parser."""
    rerun = with_json(sub.add_parser("rerun", help="a new run of a run's pipeline and inputs; --from STAGE forks"))
    rerun.add_argument("run")
    rerun.add_argument("--from", dest="from_stage", metavar="STAGE",
                       help="reuse the results of every stage not depending on STAGE; run STAGE and what follows")
    rerun.add_argument("--latest", action="store_true",
                       help="use the pipeline's current definition, not the pinned one")
    rerun.add_argument("--input", help="input overrides as a JSON object")
    rerun.add_argument("--input-file", metavar="F", help="a file holding input overrides as a JSON object")
    rerun.add_argument("-i", dest="set", action="append", metavar="KEY=VALUE", help="one input override; repeatable")
    rerun.add_argument("--follow", "-f", action="store_true", help="show progress until the new run ends")

    logs = with_json(sub.add_parser("logs", help="stage logs: shell stdout/stderr and logger messages"))
    logs.add_argument("run")
    logs.add_argument("stage", nargs="?", help="only this stage path (and what is nested under it)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")

    brk = with_json(sub.add_parser("break", help="pause a run before a stage"))
    brk.add_argument("run")
    brk.add_argument("stage")
    brk.add_argument("--remove", action="store_true", help="remove that breakpoint instead")
    with_json(sub.add_parser("continue", help="release a paused run")).add_argument("run")
    with_json(sub.add_parser("step", help="run the next waiting stage, then pause again")).add_argument("run")
    with_json(sub.add_parser("terminate", help="stop a run now, without a grace period")).add_argument("run")
    with_json(sub.add_parser("delete", help="delete a finished run with its children, events and logs")
              ).add_argument("run")
    prune = with_json(sub.add_parser("prune", help="delete finished runs created before a date"))
    prune.add_argument("--before", required=True, metavar="DATE",
                       help="ISO date or date-time in local time (2026-11-30, 2026-11-30T12:00), or with an offset")
    prune.add_argument("--status", action="append", choices=STATES[3:], help="only runs in this status; repeatable")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")

    with_json(sub.add_parser("reload", help="reload every pipeline folder (privileged)"))
    with_json(sub.add_parser("stop", help="stop the daemon: running stages get shutdown_grace_s (privileged)"))
    with_json(sub.add_parser("nodes", help="the nodes sharing a PostgreSQL journal: leases and heartbeat age"))

    methods = sub.add_parser("methods", help="the control socket's methods (no daemon needed)")
    methods.add_argument("--markdown", action="store_true", help="the README's method reference")


OFFLINE = {"methods"}


def cmd_rerun(client: Client, args: argparse.Namespace) -> int:
    from flowmason_client.cli import _follow

    inputs = parse_inputs(input_json=args.input, input_file=args.input_file, pairs=args.set)
    info = client.call("runs.rerun", {"run_id": args.run, "inputs": inputs, "latest": args.latest,
                                      "from_stage": args.from_stage})
    if args.follow:
        print(_rerun_line(info), flush=True)
        return _follow(client, info["run_id"], as_json=args.json)
    _print(info, args.json, _rerun_line)
    return 0


def _rerun_line(info: dict[str, Any]) -> str:
    source = f"rerun of {info.get('forked_from')}"
    if info.get("from_stage"):
        source += f" from stage {info['from_stage']}"
    return f"{info['run_id']}  {info['status']}  ({source})"


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    params = {"run_id": args.run, "stage": args.stage, "follow": args.follow}
    wide = None
    for item in client.stream("runs.logs", params):
        if isinstance(item, Notification):
            _print_chunk(item.params if isinstance(item.params, dict) else {}, args.json)
        elif isinstance(item, Response):
            result = item.result or {}
            for chunk in result.get("logs") or []:
                _print_chunk(chunk, args.json)
            wide = result
    if wide is not None and not args.follow and not (wide.get("logs") or []) and not args.json:
        print(f"no stage logs for run {args.run}" + (f" stage {args.stage}" if args.stage else ""), file=sys.stderr)
    return 0


_last_path: list[str | None] = [None]


def _print_chunk(chunk: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(chunk), flush=True)
        return
    # A header whenever the stage changes; the text itself is printed as the stage wrote it.
    key = f"{chunk.get('path')} {chunk.get('stream')}"
    if _last_path[0] != key:
        _last_path[0] = key
        print(f"==> {chunk.get('path')} ({chunk.get('stream')}) <==", flush=True)
    sys.stdout.write(chunk.get("text") or "")
    sys.stdout.flush()


def cmd_break(client: Client, args: argparse.Namespace) -> int:
    info = client.call("runs.break", {"run_id": args.run, "stage_id": args.stage, "remove": args.remove})
    _print(info, args.json, lambda d: f"{d['run_id']}  {d['status']}  breakpoints: "
                                      f"{', '.join(d.get('breakpoints') or []) or 'none'}")
    return 0


def cmd_continue(client: Client, args: argparse.Namespace) -> int:
    info = client.call("runs.continue", {"run_id": args.run})
    _print(info, args.json, lambda d: f"{d['run_id']}  {d['status']}")
    return 0


def cmd_step(client: Client, args: argparse.Namespace) -> int:
    info = client.call("runs.step", {"run_id": args.run})
    _print(info, args.json, lambda d: f"{d['run_id']}  {d['status']}  (stepping: pauses before the next stage)")
    return 0


def wait_stopped(client: Client, run_id: str) -> dict[str, Any]:
    """Follow the run's events (not printed) until it finished; its final state."""
    for _ in client.runs_follow(run_id):
        pass
    return client.call("runs.show", {"run_id": run_id})


def cmd_terminate(client: Client, args: argparse.Namespace) -> int:
    info = client.call("runs.terminate", {"run_id": args.run})
    if info.get("cancelling"):
        info = wait_stopped(client, args.run)
    _print(info, args.json, lambda d: f"{d['run_id']}  {d['status']}")
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    result = client.call("runs.delete", {"run_id": args.run})
    _print(result, args.json, lambda d: f"deleted {len(d['runs'])} run(s): {' '.join(r['run_id'] for r in d['runs'])}")
    return 0


def parse_date(text: str, *, flag: str = "--before") -> float:
    """A date flag: an ISO date or date-time; local time unless it carries an offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not an ISO date or date-time (e.g. 2026-11-30 or "
                         "2026-11-30T12:00:00+00:00)") from None
    return value.timestamp()


def cmd_prune(client: Client, args: argparse.Namespace) -> int:
    params = {"before": parse_date(args.before), "statuses": args.status, "dry_run": args.dry_run}
    result = client.call("runs.prune", params)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(result['runs'])} run(s)")
    for r in result["runs"]:
        child = f"  child of {r['parent_run_id']}" if r.get("parent_run_id") else ""
        print(f"  {r['run_id']:24} {r['pipeline_id']:20} {r['status']:12} "
              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['created_at']))}{child}")
    return 0


def cmd_reload(client: Client, args: argparse.Namespace) -> int:
    result = client.call("daemon.reload")
    _print(result, args.json, lambda d: f"reloaded: {len(d['changed'])} pipeline(s) changed, "
                                        f"{d['pipelines']} loaded, {d['invalid_files']} invalid file(s)")
    return 0


def cmd_stop(client: Client, args: argparse.Namespace) -> int:
    result = client.call("daemon.stop")
    _print(result, args.json, lambda d: f"flowmasond stopping: {d['active_runs']} running run(s) get "
                                        f"{d['shutdown_grace_s']:g} s, then are interrupted; "
                                        f"{d.get('paused_runs', 0)} paused run(s) stay paused")
    return 0


def cmd_nodes(client: Client, args: argparse.Namespace) -> int:
    result = client.call("nodes.list")
    _print(result, args.json, _nodes_text)
    return 0


def _nodes_text(data: dict[str, Any]) -> str:
    if not data.get("cluster"):
        return "not a cluster: this daemon is alone on its journal"
    lines = [f"{'NODE':32} {'HOST':16} {'PID':>7} {'HEARTBEAT':>10} {'LEASES':>6}  STATE"]
    for node in data["nodes"]:
        live = [lease for lease in node["leases"] if lease["live"]]
        age = node["heartbeat_age_s"]
        if node["stopped"]:
            state = "stopped"
        elif age > (data.get("lease_s") or 0):
            state = "silent (leases expired)"
        else:
            state = "up"
        mark = "*" if node.get("self") else " "
        lines.append(f"{node['node_id'] + mark:32} {str(node['host'])[:16]:16} {node['pid']:>7} "
                     f"{age:>9.1f}s {len(live):>6}  {state}")
        for lease in node["leases"]:
            lines.append(f"    {lease['run_id']}  epoch {lease['epoch']}  expires in {lease['expires_in_s']:.1f}s")
    return "\n".join(lines)


def show_pipeline(client: Client, pipeline_id: str, as_json: bool) -> int:
    """``pipelines show ID``: file, validity, stages drawn as a DAG, schedules, errors and warnings."""
    info = client.call("pipelines.show", {"pipeline_id": pipeline_id})
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"pipeline  {info['pipeline_id']}" + (f"  ({info['name']})" if info.get("name") else ""))
    print(f"file      {info.get('path')}")
    print(f"valid     {'yes' if info.get('valid', True) else 'NO: the last good version is in force'}")
    print(f"stages    {info.get('stage_count')}  ([level] = the wave it can run in; nested stages run "
          "under the stage above them)")
    for row in info.get("dag") or []:
        print("  " + _dag_line(row))
    for sched in info.get("schedules") or []:
        print(f"schedule  {sched['id']}: {sched['cron']} {sched.get('timezone') or 'UTC'}"
              + ("" if sched.get("enabled", True) else " (disabled)"))
    for issue in ((info.get("error") or {}).get("issues") or []):
        where = ", ".join(x for x in (f"stage '{issue['stage']}'" if issue.get("stage") else "",
                                      f"field '{issue['field']}'" if issue.get("field") else "") if x)
        print(f"error     {where + ': ' if where else ''}{issue['message']}")
    for issue in info.get("warnings") or []:  # keys dropped on load (FlowMason compatibility)
        where = ", ".join(x for x in (f"stage '{issue['stage']}'" if issue.get("stage") else "",
                                      f"field '{issue['field']}'" if issue.get("field") else "") if x)
        print(f"warning   {where + ': ' if where else ''}{issue['message']}")
    return 0


def _dag_line(row: dict[str, Any]) -> str:
    indent = "    " * row["depth"]
    head = f"[{row['level']}]" if row["depth"] == 0 else "   "
    branch = f"{row['branch']}: " if row.get("branch") else ""
    deps = f"  <- {', '.join(row['depends_on'])}" if row["depends_on"] else ""
    return f"{head} {indent}{branch}{row['id']} ({row['component_type']}){deps}"


def method_reference(methods: dict[str, MethodSpec] | Any = METHODS) -> str:
    """The README's socket method reference, generated from the protocol's method table."""
    lines = ["| Method | Who may call | Params | What it does |", "|---|---|---|---|"]
    for name in sorted(methods):
        spec = methods[name]
        fields = []
        for field_name, field in spec.params.model_fields.items():
            required = field.is_required()
            fields.append(f"`{field_name}`" + ("" if required else "?"))
        who = "privileged" if spec.mutating else "any peer"
        kind = " (stream)" if spec.stream else ""
        lines.append(f"| `{name}`{kind} | {who} | {', '.join(fields) or '-'} | {spec.summary} |")
    return "\n".join(lines) + "\n"


def cmd_methods(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(method_reference())
        return 0
    for name in sorted(METHODS):
        spec = METHODS[name]
        print(f"{name:20} {'privileged' if spec.mutating else 'read':10} {spec.summary}")
    return 0


def _print(data: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(data, indent=2) if as_json else text(data))


COMMANDS = {
    "rerun": cmd_rerun, "logs": cmd_logs, "break": cmd_break, "continue": cmd_continue, "step": cmd_step,
    "terminate": cmd_terminate, "delete": cmd_delete, "prune": cmd_prune, "reload": cmd_reload, "stop": cmd_stop,
    "nodes": cmd_nodes,
}
