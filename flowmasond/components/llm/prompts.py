"""The prompts each LLM node sends, built from its config.

Nodes that promise structure (critic, selector, generator with ``output_format="json"``) ask for a
bare JSON object with named keys; ``answers.py`` parses it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

JSON_ONLY = "Answer with one JSON object and nothing else: no prose, no code fences."


@dataclass(frozen=True, slots=True)
class Prompt:
    """A system prompt and the user message."""

    system: str | None
    user: str


def render_item(value: Any) -> str:
    """A candidate or input as prompt text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _bullets(title: str, items: Sequence[str] | None, notes: Mapping[str, str] | None = None) -> str:
    if not items:
        return ""
    lines = []
    for item in items:
        note = (notes or {}).get(item)
        lines.append(f"- {item}: {note}" if note else f"- {item}")
    return f"\n\n{title}\n" + "\n".join(lines)


def _context(context: str | None) -> str:
    return f"\n\nContext: {context}" if context else ""


def generator_prompt(*, prompt: str, system_prompt: str | None, output_format: str | None) -> Prompt:
    """The generator sends the prompt as is; a format asks for it, ``json`` demands bare JSON."""
    if not output_format or output_format == "text":
        return Prompt(system_prompt, prompt)
    if output_format == "json":
        hint = "Answer with valid JSON only: no prose, no code fences."
    else:
        hint = f"Format the answer as {output_format}."
    system = f"{system_prompt}\n\n{hint}" if system_prompt else hint
    return Prompt(system, prompt)


def critic_prompt(*, content: str, criteria: Sequence[str] | None, context: str | None,
                  rubric: Mapping[str, str] | None, strict_mode: bool) -> Prompt:
    """Ask for a 0.0-1.0 score, feedback and per-criterion scores as JSON."""
    strict = "\nApply strict standards: reserve high scores for content without flaws." if strict_mode else ""
    system = (
        "You are an expert reviewer. Evaluate the content you are given." + strict + "\n\n"
        + JSON_ONLY + " Use these keys:\n"
        '{"score": <number from 0.0 (worst) to 1.0 (best)>, '
        '"feedback": "<what is good and what must change>", '
        '"overall_rating": "excellent|good|acceptable|needs_improvement|poor", '
        '"strengths": ["..."], "improvements": ["..."], '
        '"criterion_scores": {"<criterion>": <number from 0.0 to 1.0>}}'
    )
    user = (f"Content to evaluate:\n<<<\n{content}\n>>>"
            + _bullets("Evaluate against these criteria:", criteria, rubric) + _context(context))
    return Prompt(system, user)


def improver_prompt(*, content: str, feedback: str, improvements: Sequence[str] | None,
                    preserve_aspects: Sequence[str] | None, improvement_focus: str | None,
                    instructions: str | None = None) -> Prompt:
    """Ask for the improved content and a list of the changes, as JSON (plain text is tolerated)."""
    system = ("You are an expert editor. Rewrite the content so that it addresses the feedback while "
              "keeping its intent and voice.\n\n" + JSON_ONLY + " Use these keys:\n"
              '{"improved_content": "<the rewritten content>", "changes_made": ["<one change>", "..."], '
              '"improvement_summary": "<one sentence>"}')
    focus = f"\n\nPrimary focus: {improvement_focus}" if improvement_focus else ""
    if instructions:
        focus += f"\n\nInstructions: {instructions}"
    user = (f"Original content:\n<<<\n{content}\n>>>\n\nFeedback:\n{feedback}"
            + _bullets("Make these specific improvements:", improvements)
            + _bullets("Preserve these aspects:", preserve_aspects) + focus)
    return Prompt(system, user)


def selector_prompt(*, candidates: Sequence[Any], criteria: Sequence[str] | None,
                    context: str | None, selection_mode: str = "best", top_n: int = 1,
                    explain_choice: bool = True) -> Prompt:
    """Ask for the 0-based index of the best candidate, the reason and a ranking, as JSON."""
    tasks = {"best": "Choose the single best candidate.",
             "top_n": f"Choose the best candidate and rank the {top_n} best.",
             "rank_all": "Choose the best candidate and rank every candidate."}
    task = tasks.get(selection_mode, tasks["best"])
    why = '"<why it is the best>"' if explain_choice else '""'
    system = (
        f"You are an expert judge. {task}\n\n"
        + JSON_ONLY + " Use these keys:\n"
        '{"selected_index": <0-based index of the best candidate>, '
        f'"explanation": {why}, "confidence": <number from 0.0 to 1.0>, '
        '"rankings": [{"index": <0-based index>, "score": <number from 0.0 to 1.0>, "reason": "..."}, ...]}'
    )
    listed = "\n\n".join(f"[{i}]\n{render_item(c)}" for i, c in enumerate(candidates))
    user = (f"Candidates (numbered from 0):\n\n{listed}"
            + _bullets("Judge them by these criteria:", criteria) + _context(context))
    return Prompt(system, user)


# FlowMason's synthesis strategies; an unknown name is passed to the model as it is.
STRATEGIES: dict[str, str] = {
    "integrate": "Combine all inputs into one coherent text, removing redundancy and keeping every unique point.",
    "summarize": "Write a concise summary of the key points the inputs make.",
    "compare": "Compare the inputs: where they agree, where they differ, and why.",
    "consensus": "State what the inputs agree on, and only that.",
    "best_of": "Take the strongest parts of each input and combine them.",
}


def synthesizer_prompt(*, inputs: Sequence[Any], instructions: str | None, synthesis_strategy: str,
                       context: str | None, output_format: str | None, preserve_sources: bool,
                       max_length: int | None) -> Prompt:
    """Ask for one synthesis of the numbered inputs, as plain text."""
    strategy = STRATEGIES.get(synthesis_strategy, f"Strategy: {synthesis_strategy}.")
    system = ("You synthesize information from several sources. " + strategy + "\n\n" + JSON_ONLY
              + ' Use these keys:\n{"synthesized": "<the synthesis>", "key_themes": ["<theme>", "..."]}')
    listed = "\n\n".join(f"[Source {i}]\n{render_item(x)}" for i, x in enumerate(inputs, 1))
    extra = []
    if instructions:
        extra.append(f"Instructions: {instructions}")
    if output_format:
        extra.append(f"Output format: {output_format}")
    if max_length:
        extra.append(f"Length: at most about {max_length} words")
    if preserve_sources:
        extra.append("Attribute points to their sources (e.g. 'according to Source 1').")
    tail = ("\n\n" + "\n".join(extra)) if extra else ""
    return Prompt(system, f"Sources:\n\n{listed}" + _context(context) + tail)
