"""``flowmasond run-once``: run one pipeline file in the foreground, without a daemon or journal."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from flowmason_client.inputs import parse_inputs
from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.dag import DAGExecutor, RunOutcome
from flowmasond.engine.interfaces import ComponentResult, ExecutionHooks, RunStatus, StageStatus
from flowmasond.engine.models import PipelineConfig, StageConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import PipelineValidationError
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.pipelines.loader import load_pipeline_file


class ConsoleReporter(ExecutionHooks):
    """Prints one line per finished, skipped or retried stage."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig, result: ComponentResult) -> None:
        ms = max(result.finished_at - result.started_at, 0.0) * 1000
        if result.status is StageStatus.SUCCESS:
            line = f"  ok    {path} ({stage.component_type}) {ms:.0f} ms"
            if result.usage.total_tokens:
                line += f", {result.usage.total_tokens} tokens, ${result.usage.cost_usd:.6f}"
        else:
            kind = result.error_type.value if result.error_type else "ERROR"
            tag = "failed (continued)" if result.handled else "FAILED"
            line = f"  {tag} {path} ({stage.component_type}) [{kind}] after {result.attempts} attempt(s): {result.error}"
        print(line, file=self.out, flush=True)

    async def on_stage_skipped(self, run_id: str, path: str, stage: StageConfig, reason: str) -> None:
        print(f"  skip  {path}: {reason}", file=self.out, flush=True)

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int, error: str,
                             delay_s: float) -> None:
        print(f"  retry {path} attempt {attempt} failed ({error}); next in {delay_s:.2f}s", file=self.out, flush=True)


async def run_file(path: Path, inputs: dict[str, Any], *, registry: ComponentRegistry,
                   pipeline_dirs: list[Path], out: TextIO, max_concurrency: int = 10) -> RunOutcome:
    """Load and run one file; sibling ``*.pipeline.json`` files serve subpipeline lookups."""
    pipeline: PipelineConfig = load_pipeline_file(path, registry)
    catalog = PipelineCatalog(registry, pipeline_dirs or [path.parent])
    catalog.load_all()

    def lookup(pipeline_id: str) -> PipelineConfig:
        return pipeline if pipeline_id == pipeline.id else catalog.get(pipeline_id)

    token = CancellationToken(grace_s=5.0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, token.cancel, f"signal {sig.name}")
    executor = DAGExecutor(registry, hooks=ConsoleReporter(out), max_concurrency=max_concurrency,
                           pipelines=lookup)
    print(f"run {pipeline.id} ({len(pipeline.stages)} stages)", file=out, flush=True)
    try:
        return await executor.execute(pipeline, inputs, cancellation=token)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: Any) -> int:
    """Entry point used by ``flowmasond run-once``."""
    from flowmasond.logs import configure_logging

    configure_logging(level=args.log_level, stream=sys.stderr)
    try:
        inputs = _parse_inputs(args)
    except ValueError as exc:
        print(f"flowmasond run-once: {exc}", file=sys.stderr)
        return 2
    registry = ComponentRegistry.with_builtins()
    for module in args.components or []:
        registry.register_module(module)
    try:
        outcome = asyncio.run(run_file(Path(args.file), inputs, registry=registry,
                                       pipeline_dirs=[Path(p) for p in args.pipelines or []], out=sys.stdout))
    except PipelineValidationError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"flowmasond run-once: {exc}", file=sys.stderr)
        return 1
    totals = outcome.usage
    print(f"status: {outcome.status.value}")
    if totals.total_tokens:
        print(f"usage: {totals.input_tokens} input + {totals.output_tokens} output tokens, ${totals.cost_usd:.6f}")
    if outcome.status is RunStatus.SUCCEEDED:
        print(json.dumps(outcome.output, indent=2, default=str))
        return 0
    print(f"error: {(outcome.error or {}).get('message')}", file=sys.stderr)
    return 1


def _parse_inputs(args: Any) -> dict[str, Any]:
    return parse_inputs(input_json=args.input, input_file=args.input_file, pairs=args.set)
