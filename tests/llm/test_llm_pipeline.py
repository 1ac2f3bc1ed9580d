"""LLM nodes run through the engine: summed usage, retries honouring Retry-After, failures, resume."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

import pytest

from flowmasond.components.llm.providers import ProviderConfig, ProviderRegistry, build_providers
from flowmasond.engine.checkpoint import MemoryRunStore
from flowmasond.engine.dag import DAGExecutor, RunOutcome
from flowmasond.engine.interfaces import ErrorType, ExecutionHooks, RunStatus, StageStatus
from flowmasond.engine.models import PipelineConfig, StageConfig
from flowmasond.engine.registry import ComponentRegistry

from .fake_chat import FakeChatServer, Received, Reply

FAST_RETRY = {"max_retries": 2, "initial_delay_ms": 10, "max_delay_ms": 50, "jitter": False}
CRITIQUE = {"score": 0.9, "feedback": "Vivid.", "strengths": ["imagery"]}


class RetryLog(ExecutionHooks):
    """Records every retry the engine schedules."""

    def __init__(self) -> None:
        self.retries: list[tuple[str, int, float]] = []

    async def on_stage_retry(self, run_id: str, path: str, stage: StageConfig, attempt: int,
                             error: str, delay_s: float) -> None:
        self.retries.append((path, attempt, delay_s))


def write_then_review(*, generator: dict[str, Any] | None = None,
                      critic: dict[str, Any] | None = None) -> PipelineConfig:
    """generator -> critic, the critic reviewing the generator's text."""
    return PipelineConfig.model_validate({"id": "write_review", "stages": [
        {"id": "write", "component_type": "generator",
         "config": {"prompt": "Write about {{input.topic}}", "system_prompt": "You are a poet."},
         **(generator or {})},
        {"id": "review", "component_type": "critic", "depends_on": ["write"],
         "config": {"content": "{{upstream.write.content}}", "criteria": ["imagery"]}, **(critic or {})},
    ], "output_stage_id": "review"})


def role(received: Received) -> str:
    """Which stage sent a request, from its system prompt."""
    system = received.body["messages"][0]["content"]
    return "write" if system == "You are a poet." else "review"


@pytest.fixture
def components() -> ComponentRegistry:
    return ComponentRegistry.with_builtins()


@pytest.fixture
async def registry(local_config: Callable[..., ProviderConfig]) -> AsyncIterator[ProviderRegistry]:
    registry = build_providers({"local": local_config(timeout_s=0.3)})
    yield registry
    await registry.aclose()


@pytest.fixture
def retry_log() -> RetryLog:
    return RetryLog()


@pytest.fixture
def executor(components: ComponentRegistry, registry: ProviderRegistry, retry_log: RetryLog) -> DAGExecutor:
    return DAGExecutor(components, providers=registry, hooks=retry_log)


async def run(executor: DAGExecutor, pipeline: PipelineConfig, **kwargs: Any) -> RunOutcome:
    return await executor.execute(pipeline, {"topic": "rain"}, **kwargs)


async def test_two_nodes_sum_their_tokens_and_cost(fake_llm: FakeChatServer, executor: DAGExecutor) -> None:
    """generator -> critic: each stage carries its own usage and the run sums them exactly."""
    fake_llm.enqueue(Reply.completion("Rain on tin roofs.", prompt_tokens=120, completion_tokens=45),
                     Reply.completion(json.dumps(CRITIQUE), prompt_tokens=300, completion_tokens=20))
    outcome = await run(executor, write_then_review())
    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    write, review = outcome.results["write"].usage, outcome.results["review"].usage
    assert (write.input_tokens, write.output_tokens, write.cost_usd) == (120, 45, 0.0006)
    assert (review.input_tokens, review.output_tokens, review.cost_usd) == (300, 20, 0.00076)
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens, outcome.usage.total_tokens) == (420, 65, 485)
    assert outcome.usage.cost_usd == 0.00136  # (420 * 2 + 65 * 8) / 1e6
    assert outcome.output["passed"] is True and outcome.output["feedback"] == "Vivid."
    write_request, review_request = fake_llm.requests
    assert write_request.body["messages"][1]["content"] == "Write about rain"
    assert "Rain on tin roofs." in review_request.body["messages"][1]["content"]


async def test_stage_and_run_usage_name_provider_and_model(fake_llm: FakeChatServer,
                                                          executor: DAGExecutor) -> None:
    """Each LLM stage's usage names its provider and model, and so does the run's when all agree."""
    fake_llm.enqueue(Reply.completion("Rain."), Reply.completion(json.dumps(CRITIQUE)))
    outcome = await run(executor, write_then_review())
    for usage in (outcome.results["write"].usage, outcome.results["review"].usage, outcome.usage):
        assert (usage.provider, usage.model) == ("local", "test-model")


async def test_rate_limit_is_retried_no_sooner_than_retry_after(fake_llm: FakeChatServer, executor: DAGExecutor,
                                                                retry_log: RetryLog) -> None:
    """A 429 with Retry-After: 1 is retried after at least 1 s though the backoff asks for 10 ms."""
    fake_llm.enqueue(Reply(status=429, body={"error": {"message": "rate limited"}}, headers={"Retry-After": "1"}),
                     Reply.completion("Rain.", prompt_tokens=10, completion_tokens=5),
                     Reply.completion(json.dumps(CRITIQUE), prompt_tokens=10, completion_tokens=5))
    outcome = await run(executor, write_then_review(generator={"retry_config": FAST_RETRY}))
    assert outcome.status is RunStatus.SUCCEEDED, outcome.error
    assert outcome.results["write"].attempts == 2
    assert [role(r) for r in fake_llm.requests] == ["write", "write", "review"]
    assert fake_llm.requests[1].at - fake_llm.requests[0].at >= 1.0
    [(path, attempt, delay_s)] = retry_log.retries
    assert (path, attempt, delay_s) == ("write", 1, 1.0)
    assert outcome.usage.total_tokens == 30  # the 429 billed nothing


async def test_5xx_until_retries_are_exhausted_fails_the_run(fake_llm: FakeChatServer,
                                                            executor: DAGExecutor) -> None:
    """A provider answering 500 every time is tried max_retries + 1 times, then the run fails."""
    fake_llm.default = Reply(status=500, body={"error": {"message": "overloaded"}})
    outcome = await run(executor, write_then_review(generator={"retry_config": FAST_RETRY}))
    assert outcome.status is RunStatus.FAILED and outcome.failed_path == "write"
    result = outcome.results["write"]
    assert (result.status, result.error_type, result.attempts) == (StageStatus.FAILED, ErrorType.COMPONENT, 3)
    assert "failed after 3 attempts" in result.error and "overloaded" in result.error
    assert [role(r) for r in fake_llm.requests] == ["write"] * 3
    assert "review" not in outcome.results


async def test_malformed_body_fails_at_once_naming_the_stage(fake_llm: FakeChatServer,
                                                            executor: DAGExecutor) -> None:
    """A malformed 200 is a VALIDATION failure: not retried, and the error names stage and provider."""
    fake_llm.enqueue(Reply(body={"choices": "none"}))
    outcome = await run(executor, write_then_review(generator={"retry_config": FAST_RETRY}))
    result = outcome.results["write"]
    assert (outcome.status, result.error_type, result.attempts) == (RunStatus.FAILED, ErrorType.VALIDATION, 1)
    assert "provider 'local' returned a malformed response" in result.error
    assert "stage=write" in result.error
    assert outcome.error["context"]["stage"] == "write"
    assert len(fake_llm.requests) == 1


async def test_timeouts_are_retried_then_fail(fake_llm: FakeChatServer, executor: DAGExecutor) -> None:
    """A provider slower than its timeout fails each attempt with TIMEOUT; every attempt is retried."""
    fake_llm.default = Reply(delay_s=30)  # released when the server closes
    outcome = await run(executor, write_then_review(generator={"retry_config": {**FAST_RETRY, "max_retries": 1}}))
    result = outcome.results["write"]
    assert (outcome.status, result.error_type, result.attempts) == (RunStatus.FAILED, ErrorType.TIMEOUT, 2)
    assert len(fake_llm.requests) == 2


async def test_tokens_of_an_unparsable_answer_are_still_counted(fake_llm: FakeChatServer,
                                                               executor: DAGExecutor) -> None:
    """A critic answer that is not JSON fails the stage, but the tokens it billed stay on its result."""
    fake_llm.enqueue(Reply.completion("Rain.", prompt_tokens=10, completion_tokens=5),
                     Reply.completion("Lovely!", prompt_tokens=50, completion_tokens=2))
    outcome = await run(executor, write_then_review())
    result = outcome.results["review"]
    assert (result.status, result.error_type) == (StageStatus.FAILED, ErrorType.VALIDATION)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (50, 2)
    assert outcome.usage.total_tokens == 67


async def test_resume_never_calls_a_committed_node_again(fake_llm: FakeChatServer, executor: DAGExecutor) -> None:
    """After the critic failed, resuming runs only the critic: the provider saw one generator call."""
    fake_llm.enqueue(Reply.completion("Rain.", prompt_tokens=10, completion_tokens=5),
                     Reply(status=503, body="down"))
    store = MemoryRunStore()
    pipeline = write_then_review(critic={"retry_config": {"max_retries": 0}})
    first = await run(executor, pipeline, store=store)
    assert first.status is RunStatus.FAILED and first.failed_path == "review"

    fake_llm.enqueue(Reply.completion(json.dumps(CRITIQUE), prompt_tokens=30, completion_tokens=3))
    resumed = await run(executor, pipeline, run_id=first.run_id, store=store,
                        snapshot=store.snapshot.for_resume())
    assert resumed.status is RunStatus.SUCCEEDED, resumed.error
    assert [role(r) for r in fake_llm.requests] == ["write", "review", "review"]
    assert resumed.output["score"] == 0.9
    assert "Rain." in fake_llm.requests[-1].body["messages"][1]["content"]
    assert resumed.usage.total_tokens == 48  # the committed generator's 15 + the critic's 33
