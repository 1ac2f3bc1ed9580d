"""The ``flowmasond`` command: the daemon, plus ``run-once`` and ``validate`` that need no daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

# sysexits.h codes the daemon exits with (documented in README, "Install as a service").
EX_TEMPFAIL = 75  # another flowmasond owns the state directory (its pid is in the message)
EX_CONFIG = 78  # the configuration is invalid; restarting cannot fix it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowmasond", description="Durable pipeline orchestrator daemon. Without a command it runs the daemon.")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (default /etc/flowmason/flowmasond.toml if present)")
    parser.add_argument("--state-dir", metavar="DIR", help="where the journal lives")
    parser.add_argument("--socket", metavar="PATH", help="control socket path")
    parser.add_argument("--pipelines", action="append", metavar="DIR", help="pipeline folder; repeatable")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run-once", help="run one pipeline file in the foreground (no daemon, no journal)")
    run.add_argument("file", help="a *.pipeline.json file")
    run.add_argument("--input", help="run inputs as a JSON object")
    run.add_argument("--input-file", help="a file holding the run inputs as JSON")
    run.add_argument("-i", dest="set", action="append", metavar="KEY=VALUE",
                     help="one input value (JSON or plain text); repeatable")
    run.add_argument("--pipelines", dest="run_pipelines", action="append", metavar="DIR",
                     help="folders searched for subpipelines (default: the file's folder)")
    run.add_argument("--components", action="append", metavar="MODULE",
                     help="extra module of components to load; repeatable")
    run.add_argument("--log-level", dest="run_log_level", default="warning")
    run.add_argument("--strict", action="store_true",
                     help="keys unknown to both FlowMason and flowmasond are errors, not warnings")
    run.add_argument("--config", dest="run_config", metavar="FILE",
                     help="TOML configuration whose [providers.NAME] and default_provider serve LLM stages "
                          "(else OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL from the environment)")

    val = sub.add_parser("validate", help="validate pipeline files")
    val.add_argument("files", nargs="+")
    val.add_argument("--json", action="store_true")
    val.add_argument("--strict", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "validate":
        from flowmasond.pipelines.validate_cli import main as validate_main

        return validate_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run-once":
        from flowmasond import runonce

        args.pipelines = args.run_pipelines
        args.log_level = args.run_log_level
        args.config = args.run_config or args.config
        return runonce.main(args)
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    """Load the configuration and run the daemon until it is stopped."""
    from flowmasond.config import load_config
    from flowmasond.daemon import Daemon
    from flowmasond.errors import ConfigurationError, FlowmasonError, JournalLockedError
    from flowmasond.logs import configure_logging

    try:
        config = load_config(args.config, overrides={
            "state_dir": args.state_dir, "socket": args.socket, "pipeline_dirs": args.pipelines,
            "log_level": args.log_level})
    except FlowmasonError as exc:
        print(f"flowmasond: {exc}", file=sys.stderr)
        return EX_CONFIG  # systemd's RestartPreventExitStatus keeps a bad config from looping
    if args.check_config:
        print(f"configuration ok: state_dir={config.state_dir} socket={config.socket} "
              f"pipelines={[str(p) for p in config.pipeline_dirs]}")
        return 0
    json_logs = None if config.log_format == "auto" else config.log_format == "json"
    configure_logging(level=config.log_level, json=json_logs)
    try:
        return asyncio.run(Daemon(config).run())
    except FlowmasonError as exc:
        import structlog

        structlog.get_logger("flowmasond").error("daemon_failed", error=str(exc), code=exc.code,
                                                 **{k: str(v) for k, v in exc.context.items()})
        print(f"flowmasond: {exc}", file=sys.stderr)
        # A configuration problem (bad socket, unusable activated socket, unknown component module)
        # will not fix itself on a restart: 78 makes systemd stop retrying.
        if isinstance(exc, ConfigurationError):
            return EX_CONFIG
        # Another flowmasond owns the state directory: temporary, it clears when that one exits,
        # so the unit's Restart=on-failure may try again (75 is not in RestartPreventExitStatus).
        return EX_TEMPFAIL if isinstance(exc, JournalLockedError) else 1


if __name__ == "__main__":
    sys.exit(main())
