"""FlowMason's LLM nodes: generator, critic, improver, selector, synthesizer.

Each makes one provider call per attempt. The provider comes from ``context.services["providers"]``
(a ``ProviderRegistry``) by the stage's ``provider`` (None: the executor's ``default_provider``
service, else the registry's default). Settings resolve as stage ``llm_settings`` > the node's own
config fields > the provider's defaults > the node's role default. Usage is handed to ``context.services["usage_sink"]`` as soon as the provider answers, so
tokens billed for an answer that then fails to parse are still counted. A streaming provider's
pieces of the answer go to ``context.services["token_sink"]`` (the daemon's non-durable feed).
"""

from __future__ import annotations

from typing import Any, Literal

import structlog
from pydantic import AliasChoices, Field, field_validator

from flowmasond.components.llm.answers import (
    CriticAnswer,
    SelectorAnswer,
    extract_json,
    optional_json_object,
    parse_answer,
)
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


def _summed_usage(responses: list[LLMResponse]) -> dict[str, Any]:
    """The usage fields of several calls of one stage: the last answer's model, summed tokens."""
    fields = _usage_fields(responses[-1])
    for key in ("input_tokens", "output_tokens", "tokens_used", "cost_usd"):
        fields[key] = sum(_usage_fields(r)[key] for r in responses)
    return fields


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
        criteria: list[str] | None = None  # FlowMason templates also give one string
        context: str | None = None
        rubric: dict[str, str] | None = None  # criterion -> what it means
        strict_mode: bool = False
        pass_threshold: float = Field(default=0.7, ge=0, le=1)

        @field_validator("criteria", mode="before")
        @classmethod
        def _one_string(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

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
        instructions: str | None = None  # extra direction for the editor (FlowMason's templates)
        # Rewrite passes: each pass improves the previous pass's result against the same feedback.
        max_iterations: int = Field(default=1, ge=1, le=10)

    class Output(LLMOutput):
        improved_content: str
        changes_made: list[str] = Field(default_factory=list)
        preserved_aspects: list[str] = Field(default_factory=list)
        improvement_summary: str = ""
        iterations: int = 1

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        content, changes, summary = input.content, [], ""
        responses: list[LLMResponse] = []
        for _ in range(input.max_iterations):
            prompt = improver_prompt(content=content, feedback=input.feedback,
                                     improvements=input.improvements, preserve_aspects=input.preserve_aspects,
                                     improvement_focus=input.improvement_focus, instructions=input.instructions)
            response = await complete(context, prompt, role_temperature=0.5)
            responses.append(response)
            answer = optional_json_object(response.text)
            if answer is not None and isinstance(answer.get("improved_content"), str):
                content = answer["improved_content"].strip()
                changes += [str(c) for c in answer.get("changes_made") or [] if isinstance(c, (str, int, float))]
                summary = str(answer.get("improvement_summary") or summary)
            else:
                content = response.text.strip()  # a model that answered with the text alone
        return self.Output(improved_content=content, changes_made=changes,
                           preserved_aspects=list(input.preserve_aspects or []), improvement_summary=summary,
                           iterations=len(responses), **_summed_usage(responses))


@node("selector", description="Choose the best of several candidates.", timeout_ms=60_000,
      retry=LLM_RETRY)
class Selector:
    """Choose the best candidate; returns its 0-based index, the item itself and the reason."""

    class Input(ComponentInput):
        # `options` is the spelling of some of FlowMason's own templates.
        candidates: list[Any] = Field(min_length=2, validation_alias=AliasChoices("candidates", "options"))
        criteria: list[str] | None = None
        context: str | None = None
        selection_mode: Literal["best", "top_n", "rank_all"] = "best"
        top_n: int = Field(default=1, ge=1)
        explain_choice: bool = True

        @field_validator("criteria", mode="before")
        @classmethod
        def _one_string(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

    class Output(LLMOutput):
        selected_index: int
        selected: Any
        explanation: str
        confidence: float | None = None
        # [{index, candidate, score, reason}], best first: top_n entries, every candidate for
        # rank_all, the selected one alone for best.
        rankings: list[dict[str, Any]] = Field(default_factory=list)
        selected_items: list[Any] = Field(default_factory=list)  # the candidates of `rankings`

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = selector_prompt(candidates=input.candidates, criteria=input.criteria,
                                 context=input.context, selection_mode=input.selection_mode,
                                 top_n=input.top_n, explain_choice=input.explain_choice)
        response = await complete(context, prompt, role_temperature=0.2)
        try:
            answer = parse_answer(SelectorAnswer, response.text)
            if answer.selected_index >= len(input.candidates):
                raise ValueError(f"selected_index {answer.selected_index} is out of range "
                                 f"(there are {len(input.candidates)} candidates)")
        except ValueError as exc:
            raise unparsable(context, response, str(exc)) from None
        rankings = _rankings(answer.rankings, answer.selected_index, input.candidates)
        if input.selection_mode == "best":
            rankings = rankings[:1]
        elif input.selection_mode == "top_n":
            rankings = rankings[:input.top_n]
        return self.Output(
            selected_index=answer.selected_index, selected=input.candidates[answer.selected_index],
            explanation=answer.explanation if input.explain_choice else "", confidence=answer.confidence,
            rankings=rankings, selected_items=[r["candidate"] for r in rankings], **_usage_fields(response),
        )


def _rankings(raw: list[dict[str, Any]], selected: int, candidates: list[Any]) -> list[dict[str, Any]]:
    """The model's ranking with unusable entries dropped; the selected candidate always first."""
    seen: set[int] = set()
    ranked: list[dict[str, Any]] = []
    for entry in [{"index": selected}, *sorted(raw, key=_score_of, reverse=True)]:
        index = entry.get("index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(candidates) \
                and index not in seen:
            seen.add(index)
            match = next((r for r in raw if r.get("index") == index), entry)
            ranked.append({"index": index, "candidate": candidates[index], "score": match.get("score"),
                           "reason": match.get("reason")})
    return ranked


def _score_of(entry: dict[str, Any]) -> float:
    score = entry.get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0


@node("synthesizer", description="Combine several inputs into one text.", timeout_ms=120_000,
      retry=LLM_RETRY)
class Synthesizer:
    """Combine several inputs (parallel branches, sources) into one text."""

    class Input(ComponentInput):
        # `sources` is the spelling of some of FlowMason's own templates.
        inputs: list[Any] = Field(min_length=1, validation_alias=AliasChoices("inputs", "sources"))
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
        key_themes: list[str] = Field(default_factory=list)

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        prompt = synthesizer_prompt(inputs=input.inputs, instructions=input.instructions,
                                    synthesis_strategy=input.synthesis_strategy, context=input.context,
                                    output_format=input.output_format,
                                    preserve_sources=input.preserve_sources, max_length=input.max_length)
        response = await complete(context, prompt, role_temperature=0.5)
        answer = optional_json_object(response.text)
        synthesized, themes = response.text.strip(), []
        if answer is not None and isinstance(answer.get("synthesized"), str):
            synthesized = answer["synthesized"].strip()
            themes = [str(t) for t in answer.get("key_themes") or [] if isinstance(t, (str, int, float))]
        return self.Output(synthesized=synthesized, sources_used=len(input.inputs), key_themes=themes,
                           strategy_applied=input.synthesis_strategy, **_usage_fields(response))
