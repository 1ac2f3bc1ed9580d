"""Execution hooks: how the journal, the CLI and the API observe a run without the engine knowing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import structlog

if TYPE_CHECKING:
    from flowmasond.engine.models import PipelineConfig, StageConfig
    from flowmasond.engine.types import ComponentResult

log = structlog.get_logger("flowmasond.engine")


class ExecutionHooks:
    """Callbacks around a run; every method is optional (the base does nothing).

    A hook's exception is logged and swallowed: observing a run must never break it.
    """

    async def on_run_start(self, run_id: str, pipeline: PipelineConfig, inputs: dict[str, Any]) -> None: ...

    async def on_stage_start(self, run_id: str, path: str, stage: StageConfig, attempt: int) -> None: ...

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None: ...

    async def on_stage_complete(self, run_id: str, path: str, stage: StageConfig,
                                result: ComponentResult) -> None: ...

    async def on_stage_skipped(self, run_id: str, path: str, stage: StageConfig, reason: str) -> None: ...

    async def on_run_complete(self, run_id: str, outcome: Any) -> None: ...


class CompositeHooks(ExecutionHooks):
    """Fans each callback out to several hooks, isolating their failures."""

    def __init__(self, hooks: Sequence[ExecutionHooks]) -> None:
        self.hooks = [h for h in hooks if h is not None]

    async def _each(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            try:
                await getattr(hook, name)(*args)
            except Exception:  # noqa: BLE001 - by contract a hook cannot kill the run
                log.exception("hook_failed", hook=type(hook).__name__, callback=name)

    async def on_run_start(self, *args: Any) -> None:
        await self._each("on_run_start", *args)

    async def on_stage_start(self, *args: Any) -> None:
        await self._each("on_stage_start", *args)

    async def on_stage_retry(self, *args: Any) -> None:
        await self._each("on_stage_retry", *args)

    async def on_stage_complete(self, *args: Any) -> None:
        await self._each("on_stage_complete", *args)

    async def on_stage_skipped(self, *args: Any) -> None:
        await self._each("on_stage_skipped", *args)

    async def on_run_complete(self, *args: Any) -> None:
        await self._each("on_run_complete", *args)
