"""``flowmasond run-once``: run one pipeline file in the foreground, without a daemon or journal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from flowmason_client.inputs import parse_inputs
from flowmasond.engine.cancellation import CancellationToken
from flowmasond.engine.dag import DAGExecutor, RunOutcome
from flowmasond.engine.interfaces import ComponentResult, ExecutionHooks, RunStatus, StageStatus
from flowmasond.engine.models import PipelineConfig, StageConfig
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import ConfigurationError, FlowmasonError, PipelineValidationError
from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.pipelines.loader import check_pipeline_file

if TYPE_CHECKING:
    from flowmasond.components.llm.providers import ProviderConfig


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
            line = (f"  {tag} {path} ({stage.component_type}) [{kind}] "
                    f"after {result.attempts} attempt(s): {result.error}")
        print(line, file=self.out, flush=True)

    async def on_stage_skipped(self, run_id: str, path: str, stage: StageConfig, reason: str) -> None:
        print(f"  skip  {path}: {reason}", file=self.out, flush=True)

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int, error: str,
                             delay_s: float) -> None:
        print(f"  retry {path} attempt {attempt} failed ({error}); next in {delay_s:.2f}s", file=self.out, flush=True)


# The environment convention of OpenAI's own clients, honoured when no configuration names providers.
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
ENV_PROVIDER = "openai"


def provider_configs(config_file: str | None,
                     environ: Mapping[str, str]) -> tuple[dict[str, ProviderConfig], str | None]:
    """The providers for a foreground run: ``[providers.*]`` of ``config_file``, else the environment.

    From the environment: ``OPENAI_API_KEY`` and/or ``OPENAI_BASE_URL`` (a local server may need no
    key) make one provider named ``openai``; ``OPENAI_MODEL`` picks its default model.
    """
    # The providers module is imported only when a provider is named (by --config or the
    # environment): a cold run-once without one skips it (issue 15).
    if config_file is not None:
        # Imported here: the configuration module (tomllib, its models) costs a cold run-once without
        # --config tens of milliseconds (issue 15's cold-start aim).
        from flowmasond.config import load_config

        daemon_config = load_config(config_file, env=dict(environ))
        if daemon_config.providers:
            from flowmasond.components.llm.providers import ProviderConfig

            configs = {name: ProviderConfig.model_validate(raw) for name, raw in daemon_config.providers.items()}
            return configs, daemon_config.default_provider
    key, base_url = environ.get("OPENAI_API_KEY", "").strip(), environ.get("OPENAI_BASE_URL", "").strip()
    if not key and not base_url:
        return {}, None
    from flowmasond.components.llm.providers import ProviderConfig

    config = ProviderConfig(base_url=base_url or OPENAI_DEFAULT_BASE_URL,
                            default_model=environ.get("OPENAI_MODEL", "").strip() or OPENAI_DEFAULT_MODEL,
                            api_key_env="OPENAI_API_KEY" if key else None)
    return {ENV_PROVIDER: config}, ENV_PROVIDER


async def run_file(path: Path, inputs: dict[str, Any], *, registry: ComponentRegistry,
                   pipeline_dirs: list[Path], out: TextIO, max_concurrency: int = 10,
                   providers: dict[str, ProviderConfig] | None = None,
                   default_provider: str | None = None, strict: bool = False) -> RunOutcome:
    """Load and run one file; sibling ``*.pipeline.json`` files serve subpipeline lookups (read at the first).

    Warnings about the file (keys unknown to FlowMason and flowmasond) go to stderr; with
    ``strict`` they are errors.
    """
    check = check_pipeline_file(path, registry, strict=strict)
    for warning in check.warnings:
        print(f"{check.file}: {warning}", file=sys.stderr, flush=True)
    if not check.ok:
        raise PipelineValidationError(check.file, check.issues)
    pipeline: PipelineConfig = check.config  # type: ignore[assignment]
    catalog = PipelineCatalog(registry, pipeline_dirs or [path.parent])
    loaded = False

    def lookup(pipeline_id: str) -> PipelineConfig:
        # The folders are read at the first lookup of another pipeline (a subpipeline stage): a
        # run without one does not parse and validate every file beside it, itself included.
        nonlocal loaded
        if pipeline_id == pipeline.id:
            return pipeline
        if not loaded:
            catalog.load_all()
            loaded = True
        return catalog.get(pipeline_id)

    token = CancellationToken(grace_s=5.0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, token.cancel, f"signal {sig.name}")
    built = None
    if providers:
        from flowmasond.components.llm.providers import build_providers

        built = build_providers(providers, default_provider)
    executor = DAGExecutor(registry, hooks=ConsoleReporter(out), max_concurrency=max_concurrency,
                           pipelines=lookup, providers=built, default_provider=built.default if built else None)
    print(f"run {pipeline.id} ({len(pipeline.stages)} stages)", file=out, flush=True)
    try:
        return await executor.execute(pipeline, inputs, cancellation=token)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if built is not None:
            await built.aclose()


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
        providers, default_provider = provider_configs(getattr(args, "config", None), os.environ)
    except (FlowmasonError, ValidationError) as exc:
        print(f"flowmasond run-once: {exc}", file=sys.stderr)
        return 2
    try:
        outcome = asyncio.run(run_file(Path(args.file), inputs, registry=registry,
                                       pipeline_dirs=[Path(p) for p in args.pipelines or []], out=sys.stdout,
                                       providers=providers, default_provider=default_provider,
                                       strict=bool(getattr(args, "strict", False))))
    except PipelineValidationError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except ConfigurationError as exc:
        print(f"flowmasond run-once: {exc}", file=sys.stderr)
        return 2
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
