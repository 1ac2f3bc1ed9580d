"""The ``flowmasond`` command: the daemon, plus ``run-once`` and ``validate`` that need no daemon."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowmasond", description="Durable pipeline orchestrator daemon.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run-once", help="run one pipeline file in the foreground (no daemon, no journal)")
    run.add_argument("file", help="a *.pipeline.json file")
    run.add_argument("--input", help="run inputs as a JSON object")
    run.add_argument("--input-file", help="a file holding the run inputs as JSON")
    run.add_argument("-i", dest="set", action="append", metavar="KEY=VALUE",
                     help="one input value (JSON or plain text); repeatable")
    run.add_argument("--pipelines", action="append", metavar="DIR",
                     help="folders searched for subpipelines (default: the file's folder)")
    run.add_argument("--components", action="append", metavar="MODULE",
                     help="extra module of components to load; repeatable")
    run.add_argument("--log-level", default="warning")

    val = sub.add_parser("validate", help="validate pipeline files")
    val.add_argument("files", nargs="+")
    val.add_argument("--json", action="store_true")
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

        return runonce.main(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
