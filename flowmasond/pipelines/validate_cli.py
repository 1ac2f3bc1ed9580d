"""``validate FILE...``: check pipeline files offline, without a daemon.

Exit status: 0 when every file is valid, 1 when any file has an error, 2 on a usage error
(bad arguments, or a component module that cannot be loaded). Warnings (keys unknown to both
FlowMason and flowmasond) are printed but do not fail a file unless ``--strict``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from flowmasond.errors import FlowmasonError, ValidationIssue
from flowmasond.pipelines.loader import PIPELINE_SUFFIX, PipelineCheck, check_pipeline_file

if TYPE_CHECKING:
    from flowmasond.engine.registry import ComponentRegistry

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def default_registry() -> ComponentRegistry:
    """The built-in components plus those installed under the ``flowmason.components`` entry point."""
    # Imported lazily: `--help` and usage errors must not pay for importing every component.
    from flowmasond.engine.registry import ComponentRegistry

    registry = ComponentRegistry.with_builtins()
    registry.load_entry_points()
    return registry


def main(argv: Sequence[str] | None = None, *,
         registry_factory: Callable[[], ComponentRegistry] = default_registry,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Validate every FILE (a directory means every ``*.pipeline.json`` under it); return the exit status."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        registry = registry_factory()
        for module in args.components:
            registry.register_module(module)
    except FlowmasonError as exc:
        print(f"{parser.prog}: {exc}", file=err)
        return EXIT_USAGE

    checks = [check for target in args.files
              for check in _check_target(Path(target), target, registry, args.strict)]
    if args.json:
        print(json.dumps([_as_json(check) for check in checks], indent=2), file=out)
    else:
        for check in checks:
            if check.ok:
                assert check.config is not None
                print(f"ok  {check.file} ({len(check.config.stages)} stages)", file=out)
            for issue in [*check.issues, *check.warnings]:
                print(f"{check.file}: {issue}", file=out)
    return EXIT_OK if all(check.ok for check in checks) else EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowmason validate",
        description="Check pipeline files (every problem of each file is reported at once).")
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help=f"a pipeline file, or a directory searched for *{PIPELINE_SUFFIX}")
    parser.add_argument("--json", action="store_true", help="print a JSON list of results")
    parser.add_argument("--strict", action="store_true",
                        help="keys unknown to both FlowMason and flowmasond are errors, not warnings")
    parser.add_argument("--components", action="append", default=[], metavar="MODULE",
                        help="also register the components defined in this module (repeatable)")
    return parser


def _check_target(path: Path, shown: str, registry: ComponentRegistry, strict: bool) -> list[PipelineCheck]:
    if not path.is_dir():
        return [check_pipeline_file(shown, registry, strict=strict)]
    files = sorted(path.rglob(f"*{PIPELINE_SUFFIX}"))
    if not files:
        issue = ValidationIssue(f"no *{PIPELINE_SUFFIX} files in this directory", file=shown)
        return [PipelineCheck(file=shown, config=None, issues=[issue])]
    return [check_pipeline_file(str(file), registry, strict=strict) for file in files]


def _as_json(check: PipelineCheck) -> dict[str, Any]:
    return {
        "file": check.file,
        "ok": check.ok,
        "pipeline_id": check.config.id if check.config is not None else None,
        "stages": len(check.config.stages) if check.config is not None else None,
        "issues": [issue.to_dict() for issue in check.issues],
        "warnings": [issue.to_dict() for issue in check.warnings],
    }


if __name__ == "__main__":
    sys.exit(main())
