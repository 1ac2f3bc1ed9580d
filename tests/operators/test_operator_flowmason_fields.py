"""Operators with FlowMason's field names and defaults: filter, json_transform, logger, loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import ComponentError

RunOperator = Callable[..., Awaitable[Any]]


@pytest.fixture
def registry(registry: ComponentRegistry) -> ComponentRegistry:
    """The operator registry plus FlowMason's loop/output_router/error_router."""
    registry.register_module("flowmasond.components.operators.routing")
    return registry


ORDERS = [{"sku": "a", "qty": 1, "ok": True}, {"sku": "b", "qty": 5, "ok": False}, {"sku": "c", "qty": 3}]


async def test_filter_pass_fail_reads_data(run_operator: RunOperator) -> None:
    """pass_fail (the default) evaluates the condition over `data` and returns it when it passes."""
    out = await run_operator("filter", {"data": {"score": 0.9}, "condition": "data['score'] > 0.8"})
    assert (out.passed, out.data) == (True, {"score": 0.9})
    out = await run_operator("filter", {"data": {"score": 0.5}, "condition": "data.score > 0.8"})
    assert (out.passed, out.data) == (False, None)


async def test_filter_array_keeps_matching_items(run_operator: RunOperator) -> None:
    """filter_array evaluates the condition per `item` and counts what it dropped."""
    out = await run_operator("filter", {"data": ORDERS, "condition": "item.qty > 2", "filter_mode": "filter_array"})
    assert ([o["sku"] for o in out.data], out.filtered_count, out.passed) == (["b", "c"], 1, True)


async def test_filter_invert_and_field_conditions(run_operator: RunOperator) -> None:
    """field_conditions must all match; invert negates the outcome per item."""
    out = await run_operator("filter", {"data": ORDERS, "field_conditions": {"ok": True},
                                        "filter_mode": "filter_array", "invert": True})
    assert [o["sku"] for o in out.data] == ["b", "c"]


async def test_filter_missing_key_follows_pass_if_missing(run_operator: RunOperator) -> None:
    """A condition reading a key an item lacks is false, or true with pass_if_missing."""
    config = {"data": ORDERS, "condition": "item.ok", "filter_mode": "filter_array"}
    assert [o["sku"] for o in (await run_operator("filter", config)).data] == ["a"]
    config["pass_if_missing"] = True
    assert [o["sku"] for o in (await run_operator("filter", config)).data] == ["a", "c"]


def test_filter_condition_syntax_error_is_a_config_error(registry: ComponentRegistry) -> None:
    """A malformed condition is rejected when the config is validated, naming the field."""
    with pytest.raises(ValidationError, match="condition"):
        registry.meta("filter").input_model.model_validate({"data": [], "condition": "item.qty >"})


@given(values=st.lists(st.integers(-50, 50), max_size=12), bound=st.integers(-50, 50))
def test_both_filter_spellings_agree(values: list[int], bound: int) -> None:
    """`condition: item > n` (FlowMason) keeps exactly what `op: gt, value: n` (flowmasond) keeps."""
    import asyncio

    from flowmasond.engine.cancellation import CancellationToken
    from flowmasond.engine.context import ExecutionContext

    registry = ComponentRegistry.with_builtins()
    meta, instance = registry.meta("filter"), registry.instance("filter")

    def run(config: dict[str, Any]) -> Any:
        context = ExecutionContext(run_id="r", pipeline_id="p", stage_id="s", stage_path="s", attempt=1,
                                   cancellation=CancellationToken())
        return asyncio.run(instance.execute(meta.input_model.model_validate(config), context))

    flowmason = run({"data": values, "condition": f"item > {bound}", "filter_mode": "filter_array"})
    ours = run({"items": values, "op": "gt", "value": bound})
    assert flowmason.data == ours.items == [v for v in values if v > bound]


async def test_json_transform_jmespath_then_mapping(run_operator: RunOperator) -> None:
    """jmespath_expression runs first; the mapping reads its result."""
    out = await run_operator("json_transform", {"data": {"orders": ORDERS},
                                                "jmespath_expression": "orders[?qty > `2`] | [0]",
                                                "mapping": {"sku": "sku", "double": "{{data.qty * 2}}"}})
    assert (out.result, out.fields_mapped, out.fields_missing) == ({"sku": "b", "double": 10}, 2, [])


async def test_json_transform_defaults_fill_missing_fields(run_operator: RunOperator) -> None:
    """A missing path takes its `defaults` entry and is listed in fields_missing."""
    out = await run_operator("json_transform", {"data": {"a": 1}, "mapping": {"a": "a", "b": "nope"},
                                                "defaults": {"b": "fallback"}})
    assert (out.result, out.fields_missing) == ({"a": 1, "b": "fallback"}, ["b"])


async def test_json_transform_template_keys_are_output_fields(run_operator: RunOperator) -> None:
    """A template object renders over data; its keys are readable as fields of the output."""
    out = await run_operator("json_transform", {"data": {"id": 7, "tags": []},
                                                "template": {"id": "{{data.id}}",
                                                             "tag": "{{data.tags[0] if data.tags else 'none'}}",
                                                             "label": "item {{id}}"}})
    assert out.result == {"id": 7, "tag": "none", "label": "item 7"}
    assert (out.model_extra["id"], out.model_extra["tag"]) == (7, "none")


async def test_json_transform_bad_jmespath_is_reported(registry: ComponentRegistry) -> None:
    """A JMESPath syntax error is a config error naming the field."""
    with pytest.raises(ValidationError, match="jmespath_expression"):
        registry.meta("json_transform").input_model.model_validate({"data": {}, "jmespath_expression": "a[?"})


async def test_logger_binds_tags_and_returns_passthrough(run_operator: RunOperator) -> None:
    """tags go onto the log line; passthrough comes back unchanged with logged and a log_id."""
    with structlog.testing.capture_logs() as logs:
        out = await run_operator("logger", {"message": "hi", "tags": {"team": "ops"}, "passthrough": [1, 2]})
    assert logs[0]["tags"] == {"team": "ops"}
    assert (out.logged, out.passthrough, out.log_id) == (True, [1, 2], "run-1/step/1")


async def test_variable_set_extracts_a_path(run_operator: RunOperator) -> None:
    """name/value with extract_path returns the extracted value under the name."""
    out = await run_operator("variable_set", {"name": "first", "value": ORDERS, "extract_path": "0.sku"})
    assert (out.name, out.value, out.variables, out.was_set) == ("first", "a", {"first": "a"}, True)


async def test_variable_set_bad_extract_path_fails(run_operator: RunOperator) -> None:
    """An extract_path that does not exist fails the stage naming it."""
    with pytest.raises(ComponentError, match=r"extract_path '9\.sku'"):
        await run_operator("variable_set", {"name": "x", "value": ORDERS, "extract_path": "9.sku"})


@given(items=st.lists(st.integers(), max_size=30), size=st.integers(1, 7), start=st.integers(0, 5),
       cap=st.none() | st.integers(1, 6))
def test_loop_batches_match_a_reference(items: list[int], size: int, start: int, cap: int | None) -> None:
    """loop's batches equal slicing by hand; has_more says whether the cap cut any off."""
    import asyncio

    from flowmasond.engine.cancellation import CancellationToken
    from flowmasond.engine.context import ExecutionContext

    registry = ComponentRegistry.with_builtins()
    config = {"items": items, "batch_size": size, "start_index": start, "max_iterations": cap}
    context = ExecutionContext(run_id="r", pipeline_id="p", stage_id="s", stage_path="s", attempt=1,
                               cancellation=CancellationToken())
    out = asyncio.run(registry.instance("loop").execute(registry.meta("loop").input_model.model_validate(config),
                                                        context))
    rest = items[start:]
    expected = [rest[i:i + size] for i in range(0, len(rest), size)]
    assert out.batches == (expected[:cap] if cap is not None else expected)
    assert out.has_more == (cap is not None and len(expected) > cap)
    assert out.total_items == len(items)


async def test_output_router_with_fail_on_error_fails_on_an_unsupported_destination(run_operator: RunOperator) -> None:
    """An email destination cannot be delivered: with fail_on_error the stage fails saying why."""
    with pytest.raises(ComponentError, match="destination type 'email' is not supported"):
        await run_operator("output_router", {"data": 1, "fail_on_error": True, "destinations": [
            {"id": "m", "type": "email", "config": {"to": "x@example.com"}}]})
