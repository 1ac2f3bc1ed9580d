"""Single FlowMason behaviours the corpus files do not pin down one by one, and the real commands
(`flowmasond run-once` with providers, a daemon's `flowmason pipelines` and `run`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_support import DaemonProcess, _toml
from flowmasond.engine.dag import DAGExecutor
from flowmasond.engine.registry import ComponentRegistry
from flowmasond.engine.interfaces import StageStatus
from flowmasond.pipelines.loader import load_pipeline_dict
from llm.fake_chat import FakeChatServer

from .corpus_support import CORPUS

REGISTRY = ComponentRegistry.with_builtins()


async def run(stages: list[dict[str, Any]], inputs: dict[str, Any] | None = None,
              pipelines: dict[str, Any] | None = None) -> Any:
    pipeline = load_pipeline_dict({"id": "t", "stages": stages}, REGISTRY)
    loaded = {pid: load_pipeline_dict({"id": pid, **data}, REGISTRY) for pid, data in (pipelines or {}).items()}
    return await DAGExecutor(REGISTRY, pipelines=loaded).execute(pipeline, inputs or {})


async def test_fallback_output_is_what_dependents_see_after_a_continued_failure():
    """on_error=continue with fallback_output: the dependent reads the fallback."""
    outcome = await run([
        {"id": "f", "component_type": "fail", "on_error": "continue", "fallback_output": {"value": 7}},
        {"id": "use", "component_type": "logger", "depends_on": ["f"],
         "config": {"message": "x", "passthrough": "{{upstream.f.value}}"}}])
    assert outcome.status.value == "succeeded", outcome.error
    assert outcome.results["use"].output["passthrough"] == 7


async def test_a_disabled_stage_is_skipped_and_so_is_its_only_dependent():
    """enabled: false skips the stage; a stage depending only on it is skipped too."""
    outcome = await run([
        {"id": "off", "component_type": "fail", "enabled": False},
        {"id": "after", "component_type": "logger", "depends_on": ["off"], "config": {"message": "x"}},
        {"id": "other", "component_type": "logger", "config": {"message": "y"}}])
    assert outcome.status.value == "succeeded", outcome.error
    assert outcome.results["off"].status is StageStatus.SKIPPED
    assert outcome.results["after"].status is StageStatus.SKIPPED


async def test_trycatch_does_not_catch_an_error_type_it_was_not_told_to():
    """catch_error_types without the failure's type: the catch stages never run, the failure propagates."""
    outcome = await run([
        {"id": "tc", "component_type": "trycatch",
         "config": {"try_stages": ["boom"], "catch_stages": ["handler"], "error_scope": "continue",
                    "catch_error_types": ["TIMEOUT"]}},
        {"id": "boom", "component_type": "fail", "config": {"error_type": "VALIDATION"}},
        {"id": "handler", "component_type": "logger", "config": {"message": "caught"}}])
    assert outcome.status.value == "failed"
    assert "tc/handler" not in outcome.results or outcome.results["tc/handler"].status is not StageStatus.SUCCESS
    assert outcome.results["tc"].output["status"] == "error"


async def test_subpipeline_version_mismatch_fails_before_starting_the_child():
    """pipeline_version must equal the child's version; the error names both."""
    outcome = await run([{"id": "sub", "component_type": "subpipeline",
                          "config": {"pipeline_id": "kid", "pipeline_version": "9.9.9"}}],
                        pipelines={"kid": {"version": "1.0.0", "stages": [
                            {"id": "a", "component_type": "logger", "config": {"message": "hi"}}]}})
    assert outcome.status.value == "failed"
    assert "is version 1.0.0, not the pipeline_version 9.9.9" in outcome.error["message"]


async def test_foreach_without_collect_results_keeps_counts_only():
    """collect_results: false leaves results empty; the counts are still there."""
    outcome = await run([
        {"id": "loop", "component_type": "foreach",
         "config": {"items": [1, 2, 3], "loop_stages": ["body"], "collect_results": False}},
        {"id": "body", "component_type": "logger", "config": {"message": "item {{context.loop_item}}"}}])
    assert outcome.status.value == "succeeded", outcome.error
    output = outcome.results["loop"].output
    assert (output["results"], output["processed_items"], output["total_items"]) == ([], 3, 3)


async def test_empty_foreach_succeeds():
    """An empty item list is a complete loop of zero items (FlowMason fails it)."""
    outcome = await run([
        {"id": "loop", "component_type": "foreach", "config": {"items": [], "loop_stages": ["body"]}},
        {"id": "body", "component_type": "logger", "config": {"message": "x"}}])
    assert outcome.status.value == "succeeded", outcome.error
    assert outcome.results["loop"].output["is_complete"] is True


async def test_the_string_false_is_a_false_condition():
    """condition "false" takes the false branch (FlowMason treats any non-empty string as true)."""
    outcome = await run([
        {"id": "c", "component_type": "conditional",
         "config": {"condition": "{{input.flag}}", "true_branch_stages": ["yes"], "false_branch_stages": ["no"]}},
        {"id": "yes", "component_type": "logger", "config": {"message": "y"}},
        {"id": "no", "component_type": "logger", "config": {"message": "n"}}], {"flag": "false"})
    assert outcome.results["c"].output["branch_taken"] == "false"


# -- the real commands -----------------------------------------------------------------------------


def _run_once(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowmasond.cli", "run-once", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "FLOWMASON_"))}
    env.update(extra)
    return env


def test_run_once_uses_the_openai_environment_convention(fake_llm: FakeChatServer):
    """OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL configure run-once's provider; the key is sent."""
    result = _run_once(str(CORPUS / "studio-content-review.pipeline.json"), "-i", "topic=queues",
                       env=_clean_env(OPENAI_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-test",
                                      OPENAI_MODEL="env-model"))
    assert result.returncode == 0, result.stderr
    assert "status: succeeded" in result.stdout
    assert {r.headers.get("authorization") for r in fake_llm.requests} == {"Bearer sk-test"}
    # The stage that names a model keeps it; the others use OPENAI_MODEL.
    assert {r.body["model"] for r in fake_llm.requests} == {"env-model", "test-model"}


def test_run_once_takes_providers_from_a_config_file(tmp_path: Path, fake_llm: FakeChatServer):
    """--config FILE: its [providers.NAME] and default_provider serve the LLM stages."""
    config = tmp_path / "flowmasond.toml"
    config.write_text(_toml({"default_provider": "mine", "providers": {
        "mine": {"base_url": fake_llm.base_url, "default_model": "cfg-model"}}}))
    result = _run_once("--config", str(config), str(CORPUS / "studio-content-review.pipeline.json"),
                       "-i", "topic=queues", env=_clean_env())
    assert result.returncode == 0, result.stderr
    assert "cfg-model" in {r.body["model"] for r in fake_llm.requests}


def test_run_once_without_a_provider_fails_the_llm_stage_clearly():
    """No configuration and no OPENAI_* variables: the LLM stage fails saying no provider is configured."""
    result = _run_once(str(CORPUS / "studio-content-review.pipeline.json"), "-i", "topic=x", env=_clean_env())
    assert result.returncode == 1
    assert "no LLM providers are configured" in result.stdout


def test_daemon_lists_warnings_and_runs_a_flowmason_file(daemon_factory: Callable[..., DaemonProcess],
                                                         pipelines_dir: Path, fake_llm: FakeChatServer):
    """A daemon loads corpus files, shows a typo as a warning in `flowmason pipelines`, and runs them."""
    for name in ("hello-expressions", "studio-content-review"):
        shutil.copy(CORPUS / f"{name}.pipeline.json", pipelines_dir)
    typo = json.loads((CORPUS / "hello-expressions.pipeline.json").read_text())
    typo["id"], typo["descripton"] = "typo", "misspelt"
    (pipelines_dir / "typo.pipeline.json").write_text(json.dumps(typo))
    daemon = daemon_factory(config={"providers": {"local": {"base_url": fake_llm.base_url,
                                                            "default_model": "test-model"}}}).start()
    listing = daemon.cli("pipelines")
    assert listing.returncode == 0, listing.stderr
    assert "warning: field 'descripton': unknown top-level key 'descripton' is ignored (did you mean " \
           "'description'?)" in listing.stdout
    warned = [e for e in daemon.log_events() if e.get("event") == "pipeline_warnings"]
    assert [e["pipeline_id"] for e in warned] == ["typo"]
    started = daemon.cli("run", "studio-content-review", "-i", "topic=queues", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr + daemon.log()[-3000:]
    inputs = {"scores": [1, 2], "orders": [{"sku": "A", "qty": 1}]}
    hello = daemon.cli("run", "hello-expressions", "--input", json.dumps(inputs), "--follow")
    assert hello.returncode == 0, hello.stdout + hello.stderr


def test_pipelines_show_lists_a_dropped_key_as_a_warning(daemon_factory: Callable[..., DaemonProcess],
                                                       pipelines_dir: Path):
    """`flowmason pipelines show ID` prints the keys dropped on load, as `pipelines` does."""
    typo = json.loads((CORPUS / "hello-expressions.pipeline.json").read_text())
    typo["id"], typo["descripton"] = "typo", "misspelt"
    (pipelines_dir / "typo.pipeline.json").write_text(json.dumps(typo))
    daemon = daemon_factory().start()
    shown = daemon.cli("pipelines", "show", "typo")
    assert shown.returncode == 0, shown.stderr
    assert "warning   field 'descripton': unknown top-level key 'descripton' is ignored (did you mean " \
           "'description'?)" in shown.stdout
