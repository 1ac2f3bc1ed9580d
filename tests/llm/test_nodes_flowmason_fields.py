"""LLM nodes with FlowMason's fields and outputs: critic criteria as one string, selector
selection_mode / top_n / explain_choice with rankings, improver max_iterations with changes_made,
synthesizer key_themes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from flowmasond.engine.interfaces import UsageMetrics

from .fake_chat import FakeChatServer, Reply

RunStage = Callable[..., Awaitable[tuple[Any, list[UsageMetrics]]]]


def stage(component: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{component}_stage", "component_type": component, "config": config}


def user_message(server: FakeChatServer, index: int = -1) -> str:
    return next(m["content"] for m in server.requests[index].body["messages"] if m["role"] == "user")


RANKED = {"selected_index": 2, "explanation": "clearest", "confidence": 0.8,
          "rankings": [{"index": 0, "score": 0.4, "reason": "long"}, {"index": 2, "score": 0.9, "reason": "clear"},
                       {"index": 1, "score": 0.6, "reason": "ok"}, {"index": 7, "score": 1.0, "reason": "no such"}]}


async def test_critic_takes_criteria_as_one_string(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """`criteria: "clarity and tone"` is one criterion, as FlowMason's templates write it."""
    fake_llm.enqueue(Reply.completion('{"score": 0.9, "feedback": "fine"}'))
    output, _ = await run_stage(stage("critic", {"content": "c", "criteria": "clarity and tone"}))
    assert output.passes_threshold and "- clarity and tone" in user_message(fake_llm)


async def test_selector_top_n_returns_the_n_best_with_the_selected_first(fake_llm: FakeChatServer,
                                                                         run_stage: RunStage) -> None:
    """top_n keeps n rankings, best first, dropping entries naming no candidate."""
    fake_llm.enqueue(Reply.completion(json.dumps(RANKED)))
    output, _ = await run_stage(stage("selector", {"candidates": ["a", "b", "c"], "selection_mode": "top_n",
                                                   "top_n": 2}))
    assert [(r["index"], r["candidate"], r["score"]) for r in output.rankings] == [(2, "c", 0.9), (1, "b", 0.6)]
    assert (output.selected, output.selected_items) == ("c", ["c", "b"])


async def test_selector_rank_all_ranks_every_candidate(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """rank_all returns every candidate once, in score order."""
    fake_llm.enqueue(Reply.completion(json.dumps(RANKED)))
    output, _ = await run_stage(stage("selector", {"candidates": ["a", "b", "c"], "selection_mode": "rank_all"}))
    assert [r["index"] for r in output.rankings] == [2, 1, 0]


async def test_selector_without_explain_choice_returns_no_explanation(fake_llm: FakeChatServer,
                                                                      run_stage: RunStage) -> None:
    """explain_choice false: the explanation is empty and the prompt does not ask for one."""
    fake_llm.enqueue(Reply.completion(json.dumps(RANKED)))
    output, _ = await run_stage(stage("selector", {"candidates": ["a", "b", "c"], "explain_choice": False}))
    assert output.explanation == "" and [r["index"] for r in output.rankings] == [2]
    system = fake_llm.requests[-1].body["messages"][0]["content"]
    assert '"explanation": ""' in system


async def test_improver_iterates_and_collects_changes(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """max_iterations passes each result to the next pass; changes_made and usage add up."""
    fake_llm.enqueue(Reply.completion('{"improved_content": "v2", "changes_made": ["cut"]}', prompt_tokens=10),
                     Reply.completion('{"improved_content": "v3", "changes_made": ["polish"]}', prompt_tokens=20))
    output, usage = await run_stage(stage("improver", {"content": "v1", "feedback": "shorter", "max_iterations": 2,
                                                       "instructions": "Keep the title."}))
    assert (output.improved_content, output.changes_made, output.iterations) == ("v3", ["cut", "polish"], 2)
    assert "<<<\nv2\n>>>" in user_message(fake_llm, -1) and "Instructions: Keep the title." in user_message(fake_llm)
    assert output.input_tokens == 30 and len(usage) == 2


async def test_synthesizer_returns_key_themes(fake_llm: FakeChatServer, run_stage: RunStage) -> None:
    """A JSON answer gives the synthesis and its key_themes; `sources` is accepted for inputs."""
    fake_llm.enqueue(Reply.completion('{"synthesized": "Both agree.", "key_themes": ["cost", "speed"]}'))
    output, _ = await run_stage(stage("synthesizer", {"sources": ["a", "b"]}))
    assert (output.synthesized, output.key_themes, output.sources_used) == ("Both agree.", ["cost", "speed"], 2)
