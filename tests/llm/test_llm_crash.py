"""An LLM call is the most expensive thing a resumed run must not repeat (issue 7, durability).

The real daemon calls the fake chat-completions server of these tests; it is SIGKILLed after the
generator's result is committed and while a later stage is in flight, then started again.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from daemon_support import DaemonProcess

from .fake_chat import FakeChatServer, Reply

CRITIQUE = {"score": 0.9, "feedback": "Vivid.", "strengths": ["imagery"], "weaknesses": []}


def _pipeline(marker: str) -> dict[str, Any]:
    return {
        "id": "write-review",
        "stages": [
            {"id": "write", "component_type": "generator", "provider": "local",
             "config": {"prompt": "Write one sentence about rain"}},
            # Holds the run open after the generator committed, so the kill lands between the two calls.
            {"id": "pause", "component_type": "shell", "depends_on": ["write"],
             "config": {"command": ["sh", "-c", f"touch {marker}; sleep 1"]}},
            {"id": "review", "component_type": "critic", "provider": "local", "depends_on": ["pause"],
             "config": {"content": "{{upstream.write.content}}", "criteria": ["vivid"]}},
        ],
        "output_stage_id": "review",
    }


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_kill_after_the_generator_committed_resumes_without_calling_it_again(
        fake_llm: FakeChatServer, daemon_factory: Callable[..., DaemonProcess],
        write_pipeline: Callable[[dict[str, Any]], Any], tmp_path: Any) -> None:
    """After a SIGKILL between two LLM stages and a restart, the provider saw exactly one generator
    call and one critic call, and the run's usage is the sum of both answers."""
    marker = tmp_path / "pause-started"
    write_pipeline(_pipeline(str(marker)))
    fake_llm.enqueue(Reply.completion("Rain drums on tin.", prompt_tokens=30, completion_tokens=7),
                     Reply.completion(json.dumps(CRITIQUE), prompt_tokens=50, completion_tokens=20))
    config = {"providers": {"local": {"base_url": fake_llm.base_url, "default_model": "test-model",
                                      "price_per_million_input": 2.0, "price_per_million_output": 8.0,
                                      "timeout_s": 5.0}},
              "default_provider": "local", "shutdown_grace_s": 1.0}
    daemon = daemon_factory(config=config).start()
    with daemon.client() as client:
        run_id = client.runs_start("write-review").run_id
    _wait_for(marker.exists)  # the generator's result is committed before its dependent starts
    daemon.kill()
    assert len(fake_llm.requests) == 1

    daemon.restart()
    # Recovery marks the run interrupted, then resumes it: wait for the end, not the first change.
    info = daemon.wait_for_status(run_id, {"succeeded", "failed"})
    assert info["status"] == "succeeded", info
    prompts = [r.body["messages"][-1]["content"] for r in fake_llm.requests]
    assert len(fake_llm.requests) == 2, prompts
    assert "Write one sentence about rain" in prompts[0] and "Rain drums on tin." in prompts[1]
    assert info["usage"]["input_tokens"] == 80 and info["usage"]["output_tokens"] == 27
    assert abs(info["usage"]["cost_usd"] - (80 * 2.0 + 27 * 8.0) / 1e6) < 1e-12
