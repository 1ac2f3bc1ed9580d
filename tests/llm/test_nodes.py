"""The LLM nodes called directly against the local chat-completions server."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

import pytest
from pydantic import ValidationError

from flowmasond.components.llm.providers import ProviderConfig, build_providers
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.interfaces import ErrorType, UsageMetrics
from flowmasond.errors import ComponentError

from .fake_chat import FakeChatServer, Reply

RunStage = Callable[..., Awaitable[tuple[Any, list[UsageMetrics]]]]


def stage(component: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": f"{component}_stage", "component_type": component, "config": config, **extra}


def messages(server: FakeChatServer, index: int = -1) -> dict[str, str]:
    """The request's messages by role."""
    return {m["role"]: m["content"] for m in server.requests[index].body["messages"]}


async def test_generator_sends_prompt_and_returns_content_with_usage(fake_llm: FakeChatServer,
                                                                     run_stage: RunStage) -> None:
    """The generator sends its prompts and returns the text with exact tokens and cost."""
    fake_llm.enqueue(Reply.completion("A poem.", prompt_tokens=120, completion_tokens=45))
    output, usage = await run_stage(stage("generator", {"prompt": "Write a poem", "system_prompt": "Be brief."}))
    assert messages(fake_llm) == {"system": "Be brief.", "user": "Write a poem"}
    assert output.content == "A poem."
    assert (output.input_tokens, output.output_tokens, output.tokens_used) == (120, 45, 165)
    assert output.cost_usd == 0.0006  # (120 * 2 + 45 * 8) / 1e6
    assert (output.provider, output.model, output.finish_reason) == ("local", "test-model", "stop")
    assert usage == [UsageMetrics(input_tokens=120, output_tokens=45, cost_usd=0.0006,
                                  provider="local", model="test-model")]


async def test_llm_settings_override_model_temperature_tokens_and_stop(fake_llm: FakeChatServer,
                                                                       run_stage: RunStage) -> None:
    """Stage llm_settings (FlowMason names) win over the node's config and the defaults."""
    await run_stage(stage(
        "generator", {"prompt": "p", "temperature": 0.9, "max_tokens": 10, "stop_sequences": ["x"]},
        llm_settings={"model": "other-model", "temperature": 0.0, "max_tokens": 99,
                      "stop_sequences": ["END"], "top_p": 0.5}))
    body = fake_llm.requests[0].body
    assert (body["model"], body["temperature"], body["max_tokens"], body["stop"], body["top_p"]) == \
        ("other-model", 0.0, 99, ["END"], 0.5)


async def test_node_config_settings_apply_without_llm_settings(fake_llm: FakeChatServer,
                                                               run_stage: RunStage) -> None:
    """The generator's own temperature/max_tokens/stop_sequences are sent when the stage sets none."""
    await run_stage(stage("generator", {"prompt": "p", "temperature": 0.9, "max_tokens": 10,
                                        "stop_sequences": ["x"]}))
    body = fake_llm.requests[0].body
    assert (body["model"], body["temperature"], body["max_tokens"], body["stop"]) == \
        ("test-model", 0.9, 10, ["x"])


async def test_role_temperature_applies_when_nothing_is_set(fake_llm: FakeChatServer,
                                                            run_stage: RunStage) -> None:
    """With no setting anywhere, each node sends its role's temperature (critic: 0.3) and no max_tokens."""
    fake_llm.enqueue(Reply.completion('{"score": 1, "feedback": "ok"}'))
    await run_stage(stage("critic", {"content": "c"}))
    body = fake_llm.requests[0].body
    assert body["temperature"] == 0.3 and "max_tokens" not in body and "stop" not in body


async def test_provider_default_temperature_beats_the_role_default(
        fake_llm: FakeChatServer, run_stage: RunStage, local_config: Callable[..., ProviderConfig]) -> None:
    """An operator's provider default_temperature replaces the node's role default."""
    registry = build_providers({"local": local_config(default_temperature=1.0)})
    fake_llm.enqueue(Reply.completion('{"score": 1, "feedback": "ok"}'))
    try:
        await run_stage(stage("critic", {"content": "c"}), registry=registry)
    finally:
        await registry.aclose()
    assert fake_llm.requests[0].body["temperature"] == 1.0


async def test_generator_json_format_parses_a_fenced_answer(fake_llm: FakeChatServer,
                                                            run_stage: RunStage) -> None:
    """output_format json asks for JSON and parses the answer, code fence and all, into `data`."""
    fake_llm.enqueue(Reply.completion('```json\n{"title": "T", "tags": ["a"]}\n```'))
    output, _ = await run_stage(stage("generator", {"prompt": "p", "output_format": "json"}))
    assert output.data == {"title": "T", "tags": ["a"]}
    assert "JSON" in messages(fake_llm)["system"]


async def test_generator_json_format_refuses_prose(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """An answer without JSON is a VALIDATION error naming the stage; its tokens are still reported."""
    fake_llm.enqueue(Reply.completion("Sorry, I cannot do that.", prompt_tokens=7, completion_tokens=3))
    usage: list[UsageMetrics] = []
    with pytest.raises(ComponentError) as info:
        await run_stage(stage("generator", {"prompt": "p", "output_format": "json"}), usage=usage)
    assert info.value.error_type is ErrorType.VALIDATION
    assert info.value.context["stage"] == "generator_stage"
    assert "Sorry, I cannot do that." in str(info.value)
    assert [(u.input_tokens, u.output_tokens) for u in usage] == [(7, 3)]


async def test_critic_parses_score_feedback_and_decides_passed(fake_llm: FakeChatServer,
                                                               run_stage: RunStage) -> None:
    """The critic's JSON answer becomes score/feedback/ratings; passed is score >= pass_threshold."""
    answer = {"score": 0.8, "feedback": "Clear but long.", "strengths": ["clear"],
              "improvements": ["shorten"], "criterion_scores": {"clarity": 0.9}}
    fake_llm.enqueue(Reply.completion(f"Here you go:\n```json\n{json.dumps(answer)}\n```"))
    output, _ = await run_stage(stage("critic", {"content": "Draft text", "criteria": ["clarity", "brevity"],
                                                 "rubric": {"brevity": "under 50 words"}}))
    assert (output.score, output.feedback, output.passed, output.passes_threshold) == \
        (0.8, "Clear but long.", True, True)
    assert (output.overall_rating, output.strengths, output.improvements, output.criterion_scores) == \
        ("good", ["clear"], ["shorten"], {"clarity": 0.9})
    user = messages(fake_llm)["user"]
    assert "Draft text" in user and "- clarity" in user and "- brevity: under 50 words" in user


async def test_critic_fails_content_below_its_threshold(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """A score under pass_threshold gives passed=False even if the model claims it passed."""
    fake_llm.enqueue(Reply.completion('{"score": 0.85, "feedback": "fine", "passed": true}'))
    output, _ = await run_stage(stage("critic", {"content": "c", "pass_threshold": 0.9}))
    assert output.passed is False and output.passes_threshold is False


@pytest.mark.parametrize("answer", [
    "It is quite good, 8/10.",
    '{"score": 8, "feedback": "out of ten"}',
    '{"feedback": "no score"}',
    '["a list"]',
])
async def test_critic_refuses_an_answer_without_the_promised_structure(
        fake_llm: FakeChatServer, run_stage: RunStage, answer: str) -> None:
    """Prose, an out-of-range score, a missing key or a non-object is a VALIDATION error."""
    fake_llm.enqueue(Reply.completion(answer))
    with pytest.raises(ComponentError) as info:
        await run_stage(stage("critic", {"content": "c"}))
    assert info.value.error_type is ErrorType.VALIDATION
    assert info.value.context == {"stage": "critic_stage", "provider": "local", "model": "test-model"}


async def test_selector_returns_index_item_and_reason(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """The selector's JSON index selects the candidate itself (any JSON value) and keeps the reason."""
    fake_llm.enqueue(Reply.completion('{"selected_index": 1, "reason": "shorter", "confidence": 0.7}'))
    candidates = ["long answer", {"text": "short"}, "other"]
    output, _ = await run_stage(stage("selector", {"candidates": candidates, "criteria": ["brevity"]}))
    assert (output.selected_index, output.selected, output.explanation, output.confidence) == \
        (1, {"text": "short"}, "shorter", 0.7)
    user = messages(fake_llm)["user"]
    assert '[0]\nlong answer' in user and '[1]\n{"text": "short"}' in user and "- brevity" in user


@pytest.mark.parametrize("answer", ['{"selected_index": 3}', '{"selected_index": "1"}', '{"pick": 0}'])
async def test_selector_refuses_an_index_it_cannot_use(fake_llm: FakeChatServer, run_stage: RunStage,
                                                       answer: str) -> None:
    """An out-of-range, non-integer or missing index is a VALIDATION error."""
    fake_llm.enqueue(Reply.completion(answer))
    with pytest.raises(ComponentError) as info:
        await run_stage(stage("selector", {"candidates": ["a", "b", "c"]}))
    assert info.value.error_type is ErrorType.VALIDATION


async def test_improver_returns_the_rewritten_text(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """The improver sends content and feedback and returns the model's text as improved_content."""
    fake_llm.enqueue(Reply.completion("  Shorter draft.\n"))
    output, _ = await run_stage(stage("improver", {"content": "Long draft", "feedback": "Cut it down",
                                                   "preserve_aspects": ["tone"]}))
    assert output.improved_content == "Shorter draft."
    user = messages(fake_llm)["user"]
    assert "Long draft" in user and "Cut it down" in user and "- tone" in user


async def test_synthesizer_combines_numbered_sources(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """The synthesizer numbers its inputs, passes instructions on and returns the synthesis."""
    fake_llm.enqueue(Reply.completion("Both agree."))
    output, _ = await run_stage(stage("synthesizer", {"inputs": ["view A", {"view": "B"}],
                                                      "instructions": "One paragraph."}))
    assert (output.synthesized, output.sources_used, output.strategy_applied) == ("Both agree.", 2, "integrate")
    user = messages(fake_llm)["user"]
    assert "[Source 1]\nview A" in user and '[Source 2]\n{"view": "B"}' in user and "One paragraph." in user


async def test_stage_provider_chooses_among_configured_providers(
        fake_llm: FakeChatServer, run_stage: RunStage, local_config: Callable[..., ProviderConfig]) -> None:
    """`provider` on the stage picks that provider, with its own model and prices."""
    registry = build_providers({"cheap": local_config(default_model="small"),
                                "premium": local_config(default_model="large", price_per_million_input=10.0,
                                                        price_per_million_output=30.0)}, "cheap")
    fake_llm.enqueue(Reply.completion("x", prompt_tokens=100, completion_tokens=10, model="large"))
    try:
        output, _ = await run_stage(stage("generator", {"prompt": "p"}, provider="premium"), registry=registry)
    finally:
        await registry.aclose()
    assert fake_llm.requests[0].body["model"] == "large"
    assert (output.provider, output.cost_usd) == ("premium", 0.0013)  # (100 * 10 + 10 * 30) / 1e6


async def test_unknown_stage_provider_is_a_configuration_error(fake_llm: FakeChatServer,
                                                               run_stage: RunStage) -> None:
    """A stage naming an unconfigured provider fails with CONFIGURATION, naming it and the known ones."""
    with pytest.raises(ComponentError) as info:
        await run_stage(stage("generator", {"prompt": "p"}, provider="gpt-5"))
    assert info.value.error_type is ErrorType.CONFIGURATION
    assert info.value.context == {"stage": "generator_stage", "provider": "gpt-5", "known": ["local"]}
    assert fake_llm.requests == []


async def test_missing_provider_registry_is_a_configuration_error(run_stage: RunStage) -> None:
    """A node run without `providers` in its services fails with CONFIGURATION."""
    with pytest.raises(ComponentError, match="no LLM providers") as info:
        await run_stage(stage("generator", {"prompt": "p"}), services={})
    assert info.value.error_type is ErrorType.CONFIGURATION


async def test_unknown_llm_settings_key_is_a_configuration_error(fake_llm: FakeChatServer,
                                                                 run_stage: RunStage) -> None:
    """An llm_settings key FlowMason does not define is refused, naming it."""
    with pytest.raises(ComponentError, match="temprature") as info:
        await run_stage(stage("generator", {"prompt": "p"}, llm_settings={"temprature": 0.2}))
    assert info.value.error_type is ErrorType.CONFIGURATION
    assert info.value.context == {"stage": "generator_stage", "field": "llm_settings"}
    assert fake_llm.requests == []


async def test_provider_errors_gain_the_stage(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """A provider's error leaves the node with the stage path added to its context."""
    fake_llm.enqueue(Reply(body="not json"))
    with pytest.raises(ComponentError) as info:
        await run_stage(stage("critic", {"content": "c"}))
    assert info.value.error_type is ErrorType.VALIDATION
    assert info.value.context["stage"] == "critic_stage" and info.value.context["provider"] == "local"


def test_node_inputs_refuse_unknown_config_keys(components: ComponentRegistry) -> None:
    """Every node's Input forbids undeclared keys (FlowMason names only)."""
    for name in ("generator", "critic", "improver", "selector", "synthesizer"):
        with pytest.raises(ValidationError, match="bogus"):
            components.meta(name).input_model.model_validate({"bogus": 1})


def test_nodes_declare_timeouts_and_a_default_retry(components: ComponentRegistry) -> None:
    """LLM nodes are `node`s with their own timeouts and retry retryable failures by default."""
    for name in ("generator", "critic", "improver", "selector", "synthesizer"):
        meta = components.meta(name)
        assert meta.kind == "node" and meta.default_timeout_ms >= 60_000
        assert meta.retry is not None and meta.retry.max_retries == 2


async def test_executor_default_provider_applies_to_a_plain_mapping(
        fake_llm: FakeChatServer, run_stage: RunStage, local_config: Callable[..., ProviderConfig]) -> None:
    """DAGExecutor(providers={...}, default_provider=...) style services select the named default."""
    registry = build_providers({"a": local_config(default_model="model-a"),
                                "b": local_config(default_model="model-b")})
    try:
        output, _ = await run_stage(stage("generator", {"prompt": "p"}), services={
            "providers": dict(registry.providers), "default_provider": "b"})
    finally:
        await registry.aclose()
    assert output.provider == "b" and fake_llm.requests[0].body["model"] == "model-b"
