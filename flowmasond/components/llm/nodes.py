"""FlowMason's LLM nodes: generator, critic, improver, selector, synthesizer.

Each makes one provider call per attempt. The provider comes from ``context.services["providers"]``
(a ``ProviderRegistry``) by the stage's ``provider`` (None: the executor's ``default_provider``
service, else the registry's default). Settings resolve as stage ``llm_settings`` > the node's own
config fields > the provider's defaults > the node's role default. Usage is handed to ``context.services["usage_sink"]`` as soon as the provider answers, so
tokens billed for an answer that then fails to parse are still counted. A streaming provider's
pieces of the answer go to ``context.services["token_sink"]`` (the daemon's non-durable feed).
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import Field

from flowmasond.components.llm.answers import CriticAnswer, SelectorAnswer, extract_json, parse_answer
from flowmasond.components.llm.prompts import (
    Prompt,
    critic_prompt,
    generator_prompt,
    improver_prompt,
    selector_prompt,
    synthesizer_prompt,
)
from flowmasond.components.llm.providers import LLMProvider, LLMRequest, LLMResponse, ProviderRegistry
from flowmasond.components.llm.settings import stage_settings
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.models import RetryConfig
from flowmasond.engine.registry import ComponentInput, ComponentOutput, node
from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError, ConfigurationError

log = structlog.get_logger("flowmasond.llm")

# Rate limits and provider hiccups are routine for LLM calls: retry them unless the stage says otherwise.
LLM_RETRY = RetryConfig(max_retries=2, initial_delay_ms=1000, max_delay_ms=30_000)
# How much of an unparsable answer an error message quotes.
ANSWER_EXCERPT_CHARS = 200


class LLMOutput(ComponentOutput):
    """Fields every LLM node returns: which model answered and what the call used."""

    model: str
    provider: str
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_used: int = 0  # FlowMason's name for the total
    cost_usd: float = 0.0


def _usage_fields(response: LLMResponse) -> dict[str, Any]:
    return {"model": response.model, "provider": response.provider,
            "finish_reason": response.finish_reason, "input_tokens": response.input_tokens,
            "output_tokens": response.output_tokens, "tokens_used": response.total_tokens,
            "cost_usd": response.cost_usd}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def stage_provider(context: ExecutionContext) -> LLMProvider:
    """The provider the stage names, else the executor's ``default_provider``, else the registry's default."""
    registry = context.services.get("providers")
    if registry is None:
        raise ComponentError("no LLM providers are configured", error_type=ErrorType.CONFIGURATION,
                             stage=context.stage_path)
    if not isinstance(registry, ProviderRegistry):
        # DAGExecutor(providers={name: provider}) as in the seed: a plain mapping.
        providers = dict(registry)
        registry = ProviderRegistry(providers, next(iter(providers)) if len(providers) == 1 else None)
    name = context.stage.provider if context.stage is not None else None
    try:
        return registry.get(name or context.services.get("default_provider"))
    except ConfigurationError as exc:
        raise ComponentError(exc.message, error_type=ErrorType.CONFIGURATION,
                             stage=context.stage_path, **exc.context) from None


async def complete(context: ExecutionContext, prompt: Prompt, *, role_temperature: float | None,
                   temperature: float | None = None, max_tokens: int | None = None,
                   stop_sequences: list[str] | None = None) -> LLMResponse:
    """Call the stage's provider with the stage's settings, report usage, and return the answer.

    ``temperature``/``max_tokens``/``stop_sequences`` are the node's own config values.
    """
    provider = stage_provider(context)
    settings = stage_settings(context)
    stop = _first(settings.stop_sequences, stop_sequences)
    request = LLMRequest(
        prompt=prompt.user,
        system_prompt=prompt.system,
        model=settings.model,
        temperature=_first(settings.temperature, temperature, provider.config.default_temperature,
                           role_temperature),
        max_tokens=_first(settings.max_tokens, max_tokens),
        stop=tuple(stop) if stop else None,
        top_p=settings.top_p,
    )
    tokens = context.services.get("token_sink")
    on_token = None
    if tokens is not None:
        def on_token(text: str) -> None:
            tokens(context.run_id, context.stage_path, context.attempt, text)
    try:
        response = await provider.complete(request, on_token=on_token)
    except ComponentError as exc:
        exc.context.setdefault("stage", context.stage_path)
        raise
    sink = context.services.get("usage_sink")
    if sink is not None:
        sink(response.usage())
    log.debug("llm_call", run_id=context.run_id, stage=context.stage_path, provider=response.provider,
              model=response.model, input_tokens=response.input_tokens,
              output_tokens=response.output_tokens, cost_usd=response.cost_usd)
    return response


def unparsable(context: ExecutionContext, response: LLMResponse, why: str) -> ComponentError:
    """A VALIDATION error for an answer that does not have the promised structure."""
    excerpt = " ".join(response.text.split())[:ANSWER_EXCERPT_CHARS]
    return ComponentError(f"the model's answer is not the expected JSON: {why}; answer: {excerpt!r}",
                          error_type=ErrorType.VALIDATION, stage=context.stage_path,
                          provider=response.provider, model=response.model)


@node("generator", description="Generate text from a prompt with an LLM.", timeout_ms=120_000,
      retry=LLM_RETRY)
class Generator:
    """Generate text (or, with ``output_format: json``, a parsed JSON value) from a prompt."""

    class Input(ComponentInput):
        prompt: str = Field(min_length=1)
        system_prompt: str | None = None
        # "text" (default), "json" (the answer is parsed into `data`), or a hint such as "markdown".
        output_format: str | None = None
        max_tokens: int | None = Field(default=None, ge=1)
        temperature: float | None = Field(default=None, ge=0, le=2)
        stop_sequences: list[str] | None = None

    class Output(LLMOutput):
        content: str
        data: Any = None  # the parsed answer when output_format is "json"

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = generator_prompt(prompt=input.prompt, system_prompt=input.system_prompt,
                                  output_format=input.output_format)
        response = await complete(context, prompt, role_temperature=0.7, temperature=input.temperature,
                                  max_tokens=input.max_tokens, stop_sequences=input.stop_sequences)
        data = None
        if input.output_format == "json":
            try:
                data = extract_json(response.text)
            except ValueError as exc:
                raise unparsable(context, response, str(exc)) from None
        return self.Output(content=response.text, data=data, **_usage_fields(response))


def _rating(score: float) -> str:
    if score >= 0.9:
        return "excellent"
    if score >= 0.75:
        return "good"
    if score >= 0.6:
        return "acceptable"
    if score >= 0.4:
        return "needs_improvement"
    return "poor"


@node("critic", description="Score content against criteria and explain the score.", timeout_ms=60_000,
      retry=LLM_RETRY)
class Critic:
    """Evaluate content; ``passed`` is decided here (score >= pass_threshold), not by the model."""

    class Input(ComponentInput):
        content: str
        criteria: list[str] | None = None
        context: str | None = None
        rubric: dict[str, str] | None = None  # criterion -> what it means
        strict_mode: bool = False
        pass_threshold: float = Field(default=0.7, ge=0, le=1)

    class Output(LLMOutput):
        score: float
        feedback: str
        passed: bool
        passes_threshold: bool  # FlowMason's name for `passed`
        overall_rating: str
        strengths: list[str] = Field(default_factory=list)
        improvements: list[str] = Field(default_factory=list)
        criterion_scores: dict[str, float] = Field(default_factory=dict)

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = critic_prompt(content=input.content, criteria=input.criteria, context=input.context,
                               rubric=input.rubric, strict_mode=input.strict_mode)
        response = await complete(context, prompt, role_temperature=0.3)
        try:
            answer = parse_answer(CriticAnswer, response.text)
        except ValueError as exc:
            raise unparsable(context, response, str(exc)) from None
        passed = answer.score >= input.pass_threshold
        return self.Output(
            score=answer.score, feedback=answer.feedback, passed=passed, passes_threshold=passed,
            overall_rating=answer.overall_rating or _rating(answer.score), strengths=answer.strengths,
            improvements=answer.improvements, criterion_scores=answer.criterion_scores,
            **_usage_fields(response),
        )


@node("improver", description="Rewrite content to address feedback.", timeout_ms=120_000,
      retry=LLM_RETRY)
class Improver:
    """Rewrite content so that it addresses the feedback (typically a critic's)."""

    class Input(ComponentInput):
        content: str
        feedback: str
        improvements: list[str] | None = None
        preserve_aspects: list[str] | None = None
        improvement_focus: str | None = None

    class Output(LLMOutput):
        improved_content: str

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = improver_prompt(content=input.content, feedback=input.feedback,
                                 improvements=input.improvements, preserve_aspects=input.preserve_aspects,
                                 improvement_focus=input.improvement_focus)
        response = await complete(context, prompt, role_temperature=0.5)
        return self.Output(improved_content=response.text.strip(), **_usage_fields(response))


@node("selector", description="Choose the best of several candidates.", timeout_ms=60_000,
      retry=LLM_RETRY)
class Selector:
    """Choose the best candidate; returns its 0-based index, the item itself and the reason."""

    class Input(ComponentInput):
        candidates: list[Any] = Field(min_length=2)
        criteria: list[str] | None = None
        context: str | None = None

    class Output(LLMOutput):
        selected_index: int
        selected: Any
        explanation: str
        confidence: float | None = None

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = selector_prompt(candidates=input.candidates, criteria=input.criteria,
                                 context=input.context)
        response = await complete(context, prompt, role_temperature=0.2)
        try:
            answer = parse_answer(SelectorAnswer, response.text)
            if answer.selected_index >= len(input.candidates):
                raise ValueError(f"selected_index {answer.selected_index} is out of range "
                                 f"(there are {len(input.candidates)} candidates)")
        except ValueError as exc:
            raise unparsable(context, response, str(exc)) from None
        return self.Output(
            selected_index=answer.selected_index, selected=input.candidates[answer.selected_index],
            explanation=answer.explanation, confidence=answer.confidence, **_usage_fields(response),
        )


@node("synthesizer", description="Combine several inputs into one text.", timeout_ms=120_000,
      retry=LLM_RETRY)
class Synthesizer:
    """Combine several inputs (parallel branches, sources) into one text."""

    class Input(ComponentInput):
        inputs: list[Any] = Field(min_length=1)
        instructions: str | None = None
        synthesis_strategy: str = "integrate"  # integrate | summarize | compare | consensus | best_of
        context: str | None = None
        output_format: str | None = None
        preserve_sources: bool = False
        max_length: int | None = Field(default=None, ge=10)  # words

    class Output(LLMOutput):
        synthesized: str
        sources_used: int
        strategy_applied: str

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = synthesizer_prompt(inputs=input.inputs, instructions=input.instructions,
                                    synthesis_strategy=input.synthesis_strategy, context=input.context,
                                    output_format=input.output_format,
                                    preserve_sources=input.preserve_sources, max_length=input.max_length)
        response = await complete(context, prompt, role_temperature=0.5)
        return self.Output(synthesized=response.text.strip(), sources_used=len(input.inputs),
                           strategy_applied=input.synthesis_strategy, **_usage_fields(response))
