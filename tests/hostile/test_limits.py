"""Every size limit, each with a clear error naming it: run inputs, stored outputs, show, events, LLM bodies."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_support import DaemonProcess
from flowmason_client.errors import RemoteError
from flowmasond.components.llm.providers import LLMRequest, ProviderConfig, build_providers
from flowmasond.engine.interfaces import RunStatus
from flowmasond.environment import AllowedEnvironment
from flowmasond.errors import ComponentError
from flowmasond.testing import run_pipeline
from llm.fake_chat import FakeChatServer, Reply

SMALL = {"max_run_input_bytes": 1024, "max_stage_output_bytes": 4096, "max_show_output_bytes": 512,
         "max_show_bytes": 2048, "max_show_stages": 30, "events_page_size": 25}
LOOP = {"id": "loop", "stages": [
    {"id": "each", "component_type": "foreach",
     "config": {"items": "{{input.items}}", "loop_stages": ["say"]}},
    # Padded so that 30 outputs overrun a 2 KiB show budget.
    {"id": "say", "component_type": "logger", "config": {"message": "{{context.item}} " + "p" * 100}}]}
PRINT = {"id": "print", "stages": [
    {"id": "print", "component_type": "shell",
     "config": {"command": ["sh", "-c", "head -c \"$N\" /dev/zero | tr '\\0' x"], "env": {"N": "{{input.n}}"}}}]}


@pytest.fixture
def small(daemon_factory: Callable[..., DaemonProcess],
          write_pipeline: Callable[[dict[str, Any]], Path]) -> DaemonProcess:
    """A daemon with small limits and the loop and print pipelines."""
    write_pipeline(LOOP)
    write_pipeline(PRINT)
    return daemon_factory(config={"limits": SMALL, "shutdown_grace_s": 2.0}).start()


def finished(daemon: DaemonProcess, run_id: str) -> dict[str, Any]:
    return daemon.wait_for_status(run_id, {"succeeded", "failed"})


def test_events_are_paged_and_the_cli_follows_every_page(small: DaemonProcess, state_dir: Path) -> None:
    """A run with many pages of events: one call returns a page and says more; the CLI prints all,
    exactly the rows the journal file holds."""
    with small.client() as client:
        run_id = client.runs_start("loop", {"items": [f"item {i}" for i in range(40)]}).run_id
        assert finished(small, run_id)["status"] == "succeeded"
        page = client.runs_events(run_id)
    assert (len(page.events), page.more) == (25, True)
    done = small.cli("events", run_id, "--json")
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line)["id"] for line in done.stdout.splitlines()]
    with sqlite3.connect(f"file:{state_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        stored = [row[0] for row in db.execute("SELECT id FROM run_events WHERE run_id = ? ORDER BY id", (run_id,))]
    assert len(stored) > 3 * 25
    assert printed == stored


def test_show_bounds_outputs_and_output_fetches_one_in_full(small: DaemonProcess) -> None:
    """An output over max_show_output_bytes is left out of show (with its size); runs.output and
    `flowmason show --output` return it whole."""
    with small.client() as client:
        run_id = client.runs_start("print", {"n": 3000}).run_id
        assert finished(small, run_id)["status"] == "succeeded"
        shown = client.call("runs.show", {"run_id": run_id})
        (stage,) = [s for s in shown["stages"] if s["path"] == "print"]
        assert stage["output"] is None and stage["output_truncated"]["limit"] == 512
        assert stage["output_truncated"]["bytes"] > 3000
        assert shown["output"] is None and shown["output_truncated"]["bytes"] > 3000
        full = client.runs_output(run_id, "print").output
    assert full["stdout"] == "x" * 3000
    done = small.cli("show", run_id, "--output", "print")
    assert json.loads(done.stdout)["stdout"] == "x" * 3000
    assert "--output print" in small.cli("show", run_id).stdout


def test_a_stage_output_over_the_limit_fails_the_stage(small: DaemonProcess) -> None:
    """An output larger than max_stage_output_bytes fails its stage with an error naming the limit."""
    with small.client() as client:
        run_id = client.runs_start("print", {"n": 5000}).run_id
    info = finished(small, run_id)
    assert info["status"] == "failed"
    (stage,) = [s for s in info["stages"] if s["path"] == "print"]
    assert "max_stage_output_bytes = 4096" in stage["error"]


def test_run_inputs_over_the_limit_are_refused(small: DaemonProcess) -> None:
    """runs.start with inputs over max_run_input_bytes gets -32014 naming the limit; no run is created."""
    with small.client() as client:
        with pytest.raises(RemoteError) as info:
            client.runs_start("loop", {"items": ["y" * 100] * 12})
        assert info.value.code == -32014
        assert info.value.data["context"]["limit"] == "max_run_input_bytes"
        assert client.runs_list(pipeline_id="loop").runs == []


async def test_llm_responses_over_max_response_bytes_fail_clearly() -> None:
    """A provider answer larger than max_response_bytes is refused with an error naming the limit."""
    fake = FakeChatServer()
    try:
        fake.default = Reply.completion("z" * 50_000)
        config = ProviderConfig(base_url=fake.base_url, default_model="m", max_response_bytes=10_000)
        providers = build_providers({"local": config}, environ={})
        with pytest.raises(ComponentError) as info:
            await providers.get("local").complete(LLMRequest(prompt="hi"))
        assert "max_response_bytes (10000 bytes)" in info.value.message
        fake.default = Reply.completion("short")
        assert (await providers.get("local").complete(LLMRequest(prompt="hi"))).text == "short"
        await providers.aclose()
    finally:
        fake.close()


async def test_env_templates_resolve_only_allowed_names() -> None:
    """{{env.X}} reads a name env_allow matches; any other name fails, saying env_allow decides."""
    env = AllowedEnvironment(["FM_OK_*"], environ={"FM_OK_REGION": "eu", "SECRET_TOKEN": "s3cr3t"})
    ok = await run_pipeline({"stages": [{"id": "a", "component": "logger",
                                         "config": {"message": "{{env.FM_OK_REGION}}"}}]}, env=env)
    assert ok.status is RunStatus.SUCCEEDED
    hidden = await run_pipeline({"stages": [{"id": "a", "component": "logger",
                                             "config": {"message": "{{env.SECRET_TOKEN}}"}}]}, env=env)
    assert hidden.status is RunStatus.FAILED
    error = hidden.results["a"].error
    assert "not allowed" in error and "env_allow" in error and "s3cr3t" not in error


def test_run_follow_prints_a_long_output_in_full(small: DaemonProcess) -> None:
    """`flowmason run --follow` fetches the whole output when replies carry only its size."""
    done = small.cli("run", "print", "-i", "n=2000", "--follow", "--json")
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout.splitlines()[-1])
    assert final["status"] == "succeeded" and final["output"]["stdout"] == "x" * 2000
    with small.client() as client:
        listed = client.call("runs.list", {"pipeline_id": "print"})["runs"][0]
    assert listed["output"] is None and listed["output_truncated"]["limit"] == 512


def test_show_bounds_the_stage_rows_and_all_outputs_together(small: DaemonProcess) -> None:
    """A 40-iteration loop: show lists max_show_stages rows and says how many it left out; outputs
    that each fit are kept only until max_show_bytes is spent."""
    items = [f"item {i:03}" for i in range(40)]
    with small.client() as client:
        run_id = client.runs_start("loop", {"items": items}).run_id
        assert finished(small, run_id)["status"] == "succeeded"
        shown = client.call("runs.show", {"run_id": run_id})
    assert len(shown["stages"]) == 30
    # 41 rows at least: the loop stage and its 40 iterations.
    assert shown["stages_omitted"]["count"] >= 41 - 30
    assert (shown["stages_omitted"]["limit"], shown["stages_omitted"]["limit_name"]) == (30, "max_show_stages")
    kept = [s for s in shown["stages"] if s.get("output") is not None]
    cut = [s for s in shown["stages"] if s.get("output_truncated")]
    assert kept and cut
    assert all(s["output_truncated"]["limit_name"] == "max_show_bytes" for s in cut)
    assert sum(len(json.dumps(s["output"], separators=(",", ":"))) for s in kept) <= 2048
    assert "more stages not shown" in small.cli("show", run_id).stdout


def test_events_of_a_run_with_more_than_1000_events_are_all_listed(
        daemon_factory: Callable[..., DaemonProcess], write_pipeline: Callable[[dict[str, Any]], Path],
        state_dir: Path) -> None:
    """Past the journal's 1,000-event read, `events` and `events --follow` print every stored event."""
    write_pipeline({**LOOP, "id": "long"})
    daemon = daemon_factory(config={"shutdown_grace_s": 2.0}).start()
    with daemon.client() as client:
        run_id = client.runs_start("long", {"items": [str(i) for i in range(600)]}).run_id
    assert daemon.wait_for_status(run_id, {"succeeded", "failed"}, timeout=120)["status"] == "succeeded"
    with sqlite3.connect(f"file:{state_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        stored = [row[0] for row in db.execute("SELECT id FROM run_events WHERE run_id = ? ORDER BY id", (run_id,))]
    assert len(stored) > 1000
    for args in (["events", run_id, "--json"], ["events", run_id, "--follow", "--json"]):
        done = daemon.cli(*args)
        printed = [json.loads(line)["id"] for line in done.stdout.splitlines() if line.startswith('{"id"')]
        assert printed == stored, args
