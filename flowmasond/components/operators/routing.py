"""FlowMason's ``loop`` (batching), ``output_router`` and ``error_router`` operators.

The routers deliver a payload to webhook destinations over HTTP (httpx). FlowMason also names
``email``, ``database`` and ``message_queue`` destinations; flowmasond has no such transports,
so a delivery to one of them is reported as failed with that reason (``fail_on_error`` decides
whether the stage fails), never silently skipped.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowmasond.components.operators.http import DEFAULT_TIMEOUT_S, _tls_context
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.expressions import ExpressionError
from flowmasond.engine.registry import ComponentInput, ComponentOutput, operator
from flowmasond.engine.templates import render_expressions
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError

if TYPE_CHECKING:
    import httpx  # imported where a delivery is made (see operators.http)

# How much of a destination's answer a delivery result quotes.
RESPONSE_CHARS = 500


@operator("loop", description="Split items into batches (FlowMason's loop operator).")
class Loop:
    """``batches`` of ``batch_size`` items from ``start_index``, at most ``max_iterations`` of them."""

    class Input(ComponentInput):
        items: list[Any]
        batch_size: int = Field(default=1, ge=1, le=1000)
        max_iterations: int | None = Field(default=None, ge=1)
        start_index: int = Field(default=0, ge=0)
        include_metadata: bool = True

    class Output(ComponentOutput):
        batches: list[list[Any]]
        total_items: int
        total_batches: int
        has_more: bool = False  # items remain after max_iterations batches
        metadata: dict[str, Any] = Field(default_factory=dict)

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        rest = input.items[input.start_index:]
        batches = [rest[i:i + input.batch_size] for i in range(0, len(rest), input.batch_size)]
        has_more = input.max_iterations is not None and len(batches) > input.max_iterations
        if has_more:
            batches = batches[:input.max_iterations]
        metadata = {"batch_size": input.batch_size, "start_index": input.start_index,
                    "items_in_batches": sum(len(b) for b in batches)} if input.include_metadata else {}
        return self.Output(batches=batches, total_items=len(input.items), total_batches=len(batches),
                           has_more=has_more, metadata=metadata)


class Destination(BaseModel):
    """One FlowMason destination; ``config`` of a webhook: ``url``, ``method``, ``headers``."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["webhook", "email", "database", "message_queue"]
    name: str | None = None
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    on_success: bool = True
    on_error: bool = False
    payload_template: str | None = None


@operator("output_router", description="Deliver data to webhook destinations.")
class OutputRouter:
    """Send ``data`` to each enabled destination whose on_success/on_error matches ``is_error``."""

    class Input(ComponentInput):
        data: Any
        destinations: list[Destination]
        is_error: bool = False
        error_message: str | None = None
        metadata: dict[str, Any] | None = None
        parallel: bool = True
        fail_on_error: bool = False

    class Output(ComponentOutput):
        total_destinations: int
        successful_deliveries: int
        failed_deliveries: int
        skipped_deliveries: int
        results: list[dict[str, Any]]
        all_succeeded: bool

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        payload = {"data": input.data, "is_error": input.is_error, "error_message": input.error_message,
                   "metadata": input.metadata, "run_id": context.run_id, "pipeline_id": context.pipeline_id}
        chosen = [d for d in input.destinations
                  if d.enabled and (d.on_error if input.is_error else d.on_success)]
        results = await _deliver_all(chosen, payload, input.parallel, context)
        failed = [r for r in results if not r["success"]]
        if failed and input.fail_on_error:
            raise ComponentError(f"{len(failed)} of {len(results)} deliveries failed: {failed[0]['error']}",
                                 error_type=ErrorType.COMPONENT, stage=context.stage_path, results=results)
        return self.Output(total_destinations=len(input.destinations), successful_deliveries=len(results) - len(failed),
                           failed_deliveries=len(failed), skipped_deliveries=len(input.destinations) - len(chosen),
                           results=results, all_succeeded=not failed)


@operator("error_router", description="Send an error notification to webhook destinations.")
class ErrorRouter:
    """Notify every enabled destination of an error (typically inside a trycatch's catch stages)."""

    class Input(ComponentInput):
        error_type: str
        error_message: str
        stage_id: str | None = None
        pipeline_id: str | None = None
        run_id: str | None = None
        destinations: list[Destination]
        include_stack_trace: bool = False  # accepted; flowmasond records no stack traces in outputs
        severity: Literal["critical", "error", "warning", "info"] = "error"

    class Output(ComponentOutput):
        notifications_sent: int
        failed_notifications: int
        results: list[dict[str, Any]]

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        payload = {"error_type": input.error_type, "error_message": input.error_message,
                   "stage_id": input.stage_id, "pipeline_id": input.pipeline_id or context.pipeline_id,
                   "run_id": input.run_id or context.run_id, "severity": input.severity}
        results = await _deliver_all([d for d in input.destinations if d.enabled], payload, True, context)
        failed = sum(1 for r in results if not r["success"])
        return self.Output(notifications_sent=len(results) - failed, failed_notifications=failed, results=results)


async def _deliver_all(destinations: list[Destination], payload: dict[str, Any], parallel: bool,
                       context: ExecutionContext) -> list[dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT_S, verify=_tls_context()) as client:
        if parallel:
            return list(await asyncio.gather(*(_deliver(client, d, payload, context) for d in destinations)))
        return [await _deliver(client, d, payload, context) for d in destinations]


async def _deliver(client: httpx.AsyncClient, dest: Destination, payload: dict[str, Any],
                   context: ExecutionContext) -> dict[str, Any]:
    result: dict[str, Any] = {"destination_id": dest.id, "destination_name": dest.name or dest.id,
                              "type": dest.type, "success": False, "status_code": None, "response": None,
                              "error": None}
    if dest.type != "webhook":
        result["error"] = f"destination type '{dest.type}' is not supported by flowmasond (only webhook)"
        return result
    url = dest.config.get("url")
    if not isinstance(url, str) or not url:
        result["error"] = "webhook destination needs config.url"
        return result
    import httpx

    try:
        body: Any = payload
        if dest.payload_template is not None:
            body = render_expressions(dest.payload_template, payload)
        headers = {"Idempotency-Key": f"{context.idempotency_key}/{dest.id}",
                   **{str(k): str(v) for k, v in (dest.config.get("headers") or {}).items()}}
        method = str(dest.config.get("method") or "POST").upper()
        if isinstance(body, str):
            response = await client.request(method, url, content=body.encode(), headers=headers)
        else:
            response = await client.request(method, url, json=body, headers=headers)
    except ExpressionError as exc:
        result["error"] = f"payload_template: {exc}"
        return result
    except httpx.HTTPError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    result["status_code"] = response.status_code
    result["response"] = response.text[:RESPONSE_CHARS]
    result["success"] = 200 <= response.status_code < 300
    if not result["success"]:
        result["error"] = f"HTTP {response.status_code}"
    return result
