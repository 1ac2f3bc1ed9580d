"""FlowMason-format pipelines (written for these tests in the styles FlowMason documents) load
unchanged, pass strict validation, and run end to end with the outputs in expected/."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowmasond.engine.dag import DAGExecutor
from flowmasond.engine.interfaces import StageStatus
from flowmasond.pipelines.catalog import PipelineCatalog

from .corpus_support import CORPUS, LocalApi

EXPECTED = Path(__file__).resolve().parent / "expected"
CASES = [(path.stem, index, case) for path in sorted(EXPECTED.glob("*.json"))
         for index, case in enumerate(json.loads(path.read_text()))]


def _substitute(value: Any, api: str) -> Any:
    if value == "$API":
        return api
    if isinstance(value, dict):
        return {k: _substitute(v, api) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, api) for v in value]
    return value


def _matches(actual: Any, expected: Any) -> bool:
    """Equality, with "$ISO_DATETIME" and "$CONTAINS:<text>" standing for values that vary per run."""
    if expected == "$ISO_DATETIME":
        return isinstance(actual, str) and datetime.datetime.fromisoformat(actual).tzinfo is not None
    if isinstance(expected, str) and expected.startswith("$CONTAINS:"):
        return isinstance(actual, str) and expected[len("$CONTAINS:"):] in actual
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            _matches(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(
            _matches(a, e) for a, e in zip(actual, expected, strict=True))
    return actual == expected and type(actual) is type(expected)


def test_every_corpus_file_loads_strictly_without_warnings(catalog: PipelineCatalog) -> None:
    """Each FlowMason file is accepted with no error and not even a warning under strict validation."""
    files = sorted(CORPUS.glob("*.pipeline.json"))
    assert catalog.broken_files() == {}
    assert sorted(catalog.ids()) == sorted(p.name.removesuffix(".pipeline.json") for p in files)
    assert all(not entry.warnings and not entry.issues for entry in catalog.entries().values())


def test_every_corpus_file_has_expected_outputs() -> None:
    """The corpus and its expectations stay in step (helper children are run through their parents)."""
    helpers = {"child-double", "child-broken", "child-slow"}
    runnable = {p.name.removesuffix(".pipeline.json") for p in CORPUS.glob("*.pipeline.json")} - helpers
    assert runnable == {p.stem for p in EXPECTED.glob("*.json")}


@pytest.mark.parametrize(("pipeline_id", "index", "case"), CASES,
                         ids=[f"{pid}-{case['scenario']}" for pid, _, case in CASES])
async def test_corpus_pipeline_runs_to_its_expected_output(pipeline_id: str, index: int, case: dict[str, Any],
                                                          executor: DAGExecutor, catalog: PipelineCatalog,
                                                          api: LocalApi) -> None:
    """The pipeline runs end to end (LLM stages against the fake provider) to the expected outcome."""
    outcome = await executor.execute(catalog.get(pipeline_id), _substitute(case["inputs"], api.url))
    assert outcome.status.value == case["status"], outcome.error
    if "output" in case:
        assert _matches(outcome.output, case["output"]), json.dumps(outcome.output, indent=2, default=str)
    if "output_subset" in case:
        assert _matches({k: outcome.output.get(k) for k in case["output_subset"]}, case["output_subset"]), \
            outcome.output
    for text in case.get("error_contains", []):
        assert text in json.dumps(outcome.error), outcome.error


async def test_studio_export_calls_each_llm_role_once_per_use(executor: DAGExecutor, catalog: PipelineCatalog,
                                                             fake_llm: Any) -> None:
    """Two generators, a critic, two improver passes, a selector and a synthesizer: seven calls."""
    outcome = await executor.execute(catalog.get("studio-content-review"), {"topic": "durable pipelines"})
    assert outcome.status.value == "succeeded", outcome.error
    assert len(fake_llm.requests) == 7
    models = {r.body["model"] for r in fake_llm.requests}
    assert models == {"test-model"}
    review = next(r for r in fake_llm.requests if "expert reviewer" in r.body["messages"][0]["content"])
    assert review.body["temperature"] == 0.1  # the stage's llm_settings
    assert "clarity, accuracy and brevity" in review.body["messages"][-1]["content"]  # criteria as one string


async def test_webhooks_receive_the_router_payloads(executor: DAGExecutor, catalog: PipelineCatalog,
                                                    api: LocalApi) -> None:
    """output_router posts its data once (disabled and email destinations send nothing); error_router
    posts the error."""
    first = await executor.execute(catalog.get("http-integrations"), {"api": api.url})
    assert first.status.value == "succeeded", first.error
    assert [hook["data"] for hook in api.hooks] == [{"user": "Ada"}]
    assert api.flaky_calls == 2  # error_handling retry: 503, then 200
    api.hooks.clear()
    second = await executor.execute(catalog.get("control-flow"),
                                    {"api": api.url, "priority": "high", "items": [{"n": 1}, {"n": 2}, {"n": 3}]})
    assert second.status.value == "succeeded", second.error
    [hook] = api.hooks
    assert (hook["error_type"], hook["severity"], hook["stage_id"]) == ("COMPONENT", "warning", "risky")
    assert "upstream exploded" in hook["error_message"]


async def test_control_flow_skips_the_branches_not_taken(executor: DAGExecutor, catalog: PipelineCatalog,
                                                         api: LocalApi) -> None:
    """The route and branch not taken, and the stage after return, are skipped; the try stage ran twice."""
    outcome = await executor.execute(catalog.get("control-flow"), {
        "api": api.url, "priority": "High", "items": [{"n": 1}, {"n": 2}, {"n": 3}]})
    assert outcome.status.value == "succeeded", outcome.error
    skipped = {p for p, r in outcome.results.items() if r.status is StageStatus.SKIPPED}
    assert {"classify/log-ticket", "check/skip-note", "after-return"} <= skipped
    assert outcome.results["guard/risky"].attempts == 2  # max_retries: 1
    assert outcome.returned


async def test_propagating_trycatch_ran_its_catch_stage_first(executor: DAGExecutor,
                                                              catalog: PipelineCatalog) -> None:
    """With FlowMason's default error_scope the catch stage runs and reads {{upstream.guard.error}}."""
    outcome = await executor.execute(catalog.get("propagate-default"), {})
    assert outcome.status.value == "failed"
    note = outcome.results["guard/note"]
    assert note.ok and note.output["passthrough"].startswith("disk on fire")


def test_validate_command_accepts_the_corpus_strictly() -> None:
    """`flowmasond validate --strict` over the corpus folder exits 0 and prints one ok line per file."""
    proc = subprocess.run([sys.executable, "-m", "flowmasond.cli", "validate", "--strict", str(CORPUS)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([line for line in proc.stdout.splitlines() if line.startswith("ok  ")]) == \
        len(list(CORPUS.glob("*.pipeline.json")))
