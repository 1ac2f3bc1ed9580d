"""UniversalExecutor: one stage, every attempt: timeout, retry with backoff, classification."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping

from pydantic import BaseModel, ValidationError

from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.models import RetryConfig
from flowmasond.engine.retry import NO_RETRY, backoff_delay_s
from flowmasond.engine.interfaces import ComponentResult, ErrorType, StageStatus, UsageMetrics
from flowmasond.errors import ComponentError, RunCancelledError, StageError

if TYPE_CHECKING:
    from flowmasond.engine.cancellation import CancellationToken
    from flowmasond.engine.interfaces import ExecutionHooks, RunStore
    from flowmasond.engine.models import StageConfig
    from flowmasond.engine.registry import ComponentMeta


def classify(exc: BaseException) -> tuple[ErrorType, str, float | None]:
    """Map an attempt's exception to (ErrorType, message, retry-after seconds)."""
    if isinstance(exc, StageError):
        return exc.error_type, str(exc), exc.retry_after_s
    if isinstance(exc, TimeoutError):
        return ErrorType.TIMEOUT, str(exc) or "timed out", None
    if isinstance(exc, ValidationError):
        return ErrorType.VALIDATION, _pydantic_summary(exc), None
    if isinstance(exc, PermissionError):
        return ErrorType.PERMISSION, f"{type(exc).__name__}: {exc}", None
    if isinstance(exc, (ConnectionError, OSError)) and not isinstance(exc, FileNotFoundError):
        return ErrorType.CONNECTIVITY, f"{type(exc).__name__}: {exc}", None
    return ErrorType.UNKNOWN, f"{type(exc).__name__}: {exc}", None


def _pydantic_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def dump_output(value: Any, output_model: type[BaseModel] | None) -> Any:
    """A component's return value as JSON-safe data, validated against its Output model."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if value is None:
        value = {}
    if output_model is not None and isinstance(value, Mapping):
        return output_model.model_validate(value).model_dump(mode="json")
    return value


class UniversalExecutor:
    """Runs one leaf stage through all its attempts and returns its ``ComponentResult``.

    Timeout priority: stage ``timeout_ms`` > component metadata > kind default. Retries apply only to
    retryable ``ErrorType``s. Cancellation is not a result: ``CancelledError`` propagates so that
    nothing is committed and the stage runs again on resume.
    """

    def __init__(self, *, hooks: ExecutionHooks | None = None,
                 services: Mapping[str, Any] | None = None) -> None:
        self.hooks = hooks
        self.services = dict(services or {})

    async def execute(self, *, run_id: str, pipeline_id: str, path: str, stage: StageConfig,
                      meta: ComponentMeta, instance: Any, input: BaseModel,
                      cancellation: CancellationToken, store: RunStore, attempt_base: int = 0,
                      variables: Mapping[str, Any] | None = None, logger: Any = None) -> ComponentResult:
        policy: RetryConfig = stage.retry_config or meta.retry or NO_RETRY
        timeout_s = (stage.timeout_ms or meta.default_timeout_ms) / 1000.0
        max_attempts = policy.max_retries + 1
        usage = UsageMetrics()
        started_at = time.time()
        t0 = time.perf_counter()
        error_type, message = ErrorType.UNKNOWN, ""
        hooks = self.hooks
        n = 0
        for n in range(1, max_attempts + 1):
            attempt = attempt_base + n
            await store.mark_started(path, attempt, durable=not meta.safe_to_repeat)
            if hooks is not None:
                await hooks.on_stage_start(run_id, path, stage, attempt)
            attempt_usage: list[UsageMetrics] = []
            services = self.services
            if meta.kind == "node":
                services = {**services, "usage_sink": attempt_usage.append}
            context = ExecutionContext(
                run_id=run_id, pipeline_id=pipeline_id, stage_id=stage.id, stage_path=path,
                attempt=attempt, cancellation=cancellation, stage=stage,
                variables=variables or {}, services=services, logger=logger,
            )
            retry_after: float | None = None
            try:
                async with asyncio.timeout(timeout_s):
                    value = await instance.execute(input, context)
                output = dump_output(value, meta.output_model)
                _check_output_size(output, self.services.get("max_stage_output_bytes"))
            except asyncio.CancelledError:
                raise
            except TimeoutError as exc:
                if not isinstance(exc, StageError):
                    error_type, message = ErrorType.TIMEOUT, f"attempt {attempt} timed out after {timeout_s:g}s"
                else:
                    error_type, message, retry_after = classify(exc)
            except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes
                error_type, message, retry_after = classify(exc)
            else:
                for u in attempt_usage:
                    usage = usage + u
                usage.duration_ms = (time.perf_counter() - t0) * 1000.0
                # attempts counts every start of this path, earlier runs before a resume included
                # (attempt numbers continue across resumes), not just this execution's.
                return ComponentResult(
                    stage_id=stage.id, component_type=stage.component_type, status=StageStatus.SUCCESS,
                    output=output, usage=usage, attempts=attempt, started_at=started_at,
                    finished_at=time.time(),
                )
            for u in attempt_usage:
                usage = usage + u
            if n >= max_attempts or not error_type.retryable or cancellation.cancelled:
                break
            delay = backoff_delay_s(policy, n, retry_after_s=retry_after)
            if hooks is not None:
                await hooks.on_stage_retry(run_id, path, stage, attempt, message, delay)
            await _sleep_unless_cancelled(delay, cancellation)
            if cancellation.cancelled:
                # Cancelled between attempts: nothing is in flight and nothing is committed.
                raise RunCancelledError(cancellation.reason or "cancelled", run_id=run_id, path=path)
        if n > 1:
            message = f"failed after {n} attempts: {message}"
        usage.duration_ms = (time.perf_counter() - t0) * 1000.0
        return ComponentResult(
            stage_id=stage.id, component_type=stage.component_type, status=StageStatus.FAILED,
            error=message, error_type=error_type, usage=usage, attempts=attempt_base + n,
            started_at=started_at,
            finished_at=time.time(),
        )


# Built once (json.dumps with options builds an encoder per call): every stage's output is measured.
_SIZE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _check_output_size(output: Any, limit: int | None) -> None:
    """Refuse an output larger than ``limit`` bytes of JSON: it would be journaled and held by the run."""
    if limit is None or output is None:
        return
    size = len(_SIZE_ENCODER.encode(output).encode())
    if size > limit:
        raise ComponentError(f"the stage's output is {size} bytes as JSON, more than the limit "
                             f"max_stage_output_bytes = {limit}", error_type=ErrorType.VALIDATION,
                             limit="max_stage_output_bytes", output_bytes=size)


async def _sleep_unless_cancelled(delay_s: float, cancellation: CancellationToken) -> None:
    if delay_s <= 0:
        return
    waiter = asyncio.ensure_future(cancellation.wait())
    try:
        await asyncio.wait([waiter], timeout=delay_s)
    finally:
        waiter.cancel()
