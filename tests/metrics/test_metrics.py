"""The daemon's Prometheus listener, scraped over HTTP and parsed with prometheus_client's text parser.

Every expected value comes from a second source: the runs and stages the daemon reports over its
socket, and the token counts the fake provider was told to send.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import DaemonProcess, _toml
from llm.fake_chat import FakeChatServer, Reply

PROMPT_TOKENS, COMPLETION_TOKENS = 11, 7

PIPELINES: list[dict[str, Any]] = [
    {"id": "ok", "stages": [
        {"id": "a", "component_type": "shell", "config": {"command": "true"}},
        {"id": "b", "component_type": "json_transform", "depends_on": ["a"],
         "config": {"data": {"x": 1}, "mapping": {"x": "x"}}}]},
    {"id": "broken", "stages": [{"id": "fail", "component_type": "shell", "config": {"command": "exit 4"}}]},
    # Fails on its first attempt only (the marker file is the memory), succeeds on the retry.
    {"id": "flaky", "stages": [{"id": "once", "component_type": "shell",
                                "config": {"command": 'test -e "$M" || { touch "$M"; exit 1; }',
                                           "env": {"M": "{{input.marker}}"}},
                                "retry_config": {"max_retries": 2, "initial_delay_ms": 10, "jitter": False}}]},
    {"id": "ask", "stages": [{"id": "write", "component_type": "generator", "provider": "local",
                              "config": {"prompt": "Say something"}}]},
    {"id": "gated", "stages": [{"id": "wait", "component_type": "shell",
                                "config": {"command": 'while [ ! -e "$G" ]; do sleep 0.02; done',
                                           "env": {"G": "{{input.gate}}"}}}]},
    {"id": "ticker", "schedules": [{"id": "every-second", "cron": "* * * * * *", "overlap": "allow"}],
     "stages": [{"id": "tick", "component_type": "shell", "config": {"command": "true"}}]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake_provider() -> Iterator[FakeChatServer]:
    server = FakeChatServer()
    server.default = Reply.completion("hello", prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)
    yield server
    server.close()


@pytest.fixture(scope="module")
def metrics_daemon(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeChatServer) -> Iterator[DaemonProcess]:
    """A daemon with `[metrics] listen` set, the pipelines above, and a provider pointing at the fake."""
    root = tmp_path_factory.mktemp("metrics")
    (root / "state").mkdir()
    (root / "pipelines").mkdir()
    for definition in PIPELINES:
        (root / "pipelines" / f"{definition['id']}.pipeline.json").write_text(json.dumps(definition))
    port = free_port()
    config = root / "flowmasond.toml"
    config.write_text(_toml({
        "max_concurrent_runs": 2,
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "providers": {"local": {"base_url": fake_provider.base_url, "default_model": "test-model",
                               "price_per_million_input": 2.0, "price_per_million_output": 8.0}},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWMASON_", "NOTIFY_SOCKET", "LISTEN_"))}
    daemon = DaemonProcess(state_dir=root / "state", socket=root / "d.sock", pipelines=root / "pipelines",
                           config=config, log_path=root / "daemon.log", env=env)
    daemon.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
    daemon.start()
    yield daemon
    daemon.stop()


def scrape(daemon: DaemonProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by (sample name, sorted labels)."""
    reply = httpx.get(daemon.metrics_url, timeout=10)  # type: ignore[attr-defined]
    assert reply.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def finished_runs(metrics_daemon: DaemonProcess, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One run of each manual pipeline, waited for; `runs.show` of each."""
    marker = tmp_path_factory.mktemp("flaky") / "marker"
    shown = []
    with metrics_daemon.client() as client:
        ids = [client.runs_start("ok").run_id, client.runs_start("ok").run_id, client.runs_start("broken").run_id,
               client.runs_start("flaky", {"marker": str(marker)}).run_id, client.runs_start("ask").run_id]
    for run_id in ids:
        shown.append(metrics_daemon.wait_for_status(run_id, {"succeeded", "failed", "cancelled"}))
    return shown


def test_runs_are_counted_by_pipeline_and_final_status(metrics_daemon: DaemonProcess,
                                                       finished_runs: list[dict[str, Any]]) -> None:
    """flowmason_runs_finished_total matches the statuses `runs.show` reports, per pipeline."""
    samples = scrape(metrics_daemon)
    expected: dict[tuple[str, str], int] = {}
    for run in finished_runs:
        expected[(run["pipeline_id"], run["status"])] = expected.get((run["pipeline_id"], run["status"]), 0) + 1
    assert expected == {("ok", "succeeded"): 2, ("broken", "failed"): 1, ("flaky", "succeeded"): 1,
                        ("ask", "succeeded"): 1}
    for (pipeline, status), count in expected.items():
        assert value(samples, "flowmason_runs_finished_total", pipeline=pipeline, status=status) == count
        assert value(samples, "flowmason_runs_started_total", pipeline=pipeline) == sum(
            c for (p, _), c in expected.items() if p == pipeline)


def test_stage_durations_are_a_histogram_with_one_observation_per_stage(
        metrics_daemon: DaemonProcess, finished_runs: list[dict[str, Any]]) -> None:
    """Each finished stage of the `ok` runs is one observation, and the sum is their total duration."""
    samples = scrape(metrics_daemon)
    stages = [s for run in finished_runs if run["pipeline_id"] == "ok" for s in run["stages"]]
    for component in ("shell", "json_transform"):
        mine = [s for s in stages if s["component_type"] == component]
        labels = {"pipeline": "ok", "component_type": component, "status": "success"}
        assert value(samples, "flowmason_stage_duration_seconds_count", **labels) == len(mine) == 2
        assert value(samples, "flowmason_stage_duration_seconds_sum", **labels) == pytest.approx(
            sum(s["duration_ms"] for s in mine) / 1000.0, abs=1e-6)
        assert value(samples, "flowmason_stage_duration_seconds_bucket", le="+Inf", **labels) == 2
    assert value(samples, "flowmason_stage_duration_seconds_count",
                 pipeline="broken", component_type="shell", status="failed") == 1


def test_retries_are_counted(metrics_daemon: DaemonProcess, finished_runs: list[dict[str, Any]]) -> None:
    """The flaky stage failed once and was retried once: one retry in the metric, two attempts in the run."""
    flaky = next(r for r in finished_runs if r["pipeline_id"] == "flaky")
    assert flaky["stages"][0]["attempts"] == 2
    samples = scrape(metrics_daemon)
    assert value(samples, "flowmason_stage_retries_total", pipeline="flaky", component_type="shell") == 1


def test_llm_tokens_and_cost_match_the_provider(metrics_daemon: DaemonProcess, fake_provider: FakeChatServer,
                                                finished_runs: list[dict[str, Any]]) -> None:
    """Tokens are what the fake provider reported; cost is what the run's usage says."""
    ask = next(r for r in finished_runs if r["pipeline_id"] == "ask")
    samples = scrape(metrics_daemon)
    labels = {"pipeline": "ask", "provider": "local", "model": "test-model"}
    assert value(samples, "flowmason_llm_tokens_total", direction="input", **labels) == PROMPT_TOKENS
    assert value(samples, "flowmason_llm_tokens_total", direction="output", **labels) == COMPLETION_TOKENS
    assert value(samples, "flowmason_llm_cost_usd_total", **labels) == pytest.approx(ask["usage"]["cost_usd"])
    assert ask["usage"]["cost_usd"] == pytest.approx((PROMPT_TOKENS * 2.0 + COMPLETION_TOKENS * 8.0) / 1e6)


def test_journal_commits_are_timed_with_their_group_sizes(metrics_daemon: DaemonProcess,
                                                          finished_runs: list[dict[str, Any]]) -> None:
    """Commit latency and group size have one observation per committed transaction."""
    samples = scrape(metrics_daemon)
    commits = value(samples, "flowmason_journal_commit_seconds_count")
    assert commits >= len(finished_runs)  # every run commits at least its creation and its end
    assert value(samples, "flowmason_journal_commit_group_size_count") == commits
    assert value(samples, "flowmason_journal_commit_group_size_sum") >= commits
    assert 0 < value(samples, "flowmason_journal_commit_seconds_sum") < commits * 5


def test_schedules_report_lag_and_next_fire(metrics_daemon: DaemonProcess) -> None:
    """An every-second schedule's runs observe their lag; its next fire is a timestamp in the near future."""
    deadline = time.monotonic() + 20
    while True:
        samples = scrape(metrics_daemon)
        fired = value(samples, "flowmason_schedule_lag_seconds_count", pipeline="ticker", schedule="every-second")
        if fired >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert fired >= 2
    assert value(samples, "flowmason_schedule_lag_seconds_sum", pipeline="ticker", schedule="every-second") >= 0
    next_fire = value(samples, "flowmason_schedule_next_fire_timestamp_seconds", schedule="ticker/every-second")
    assert time.time() - 5 < next_fire < time.time() + 5
    assert value(samples, "flowmason_schedule_paused", schedule="ticker/every-second") == 0


def test_queue_depth_counts_runs_waiting_for_a_slot(metrics_daemon: DaemonProcess, tmp_path: Path) -> None:
    """With both slots held by gated runs, a third run is queued, not running."""
    gate = tmp_path / "gate"
    with metrics_daemon.client() as client:
        held = [client.runs_start("gated", {"gate": str(gate)}).run_id for _ in range(2)]
        for run_id in held:
            metrics_daemon.wait_for_status(run_id, {"running"})
        waiting = client.runs_start("ok").run_id
        samples = scrape(metrics_daemon)
        assert client.runs_show(waiting).status == "pending"
    gate.touch()
    assert samples[("flowmason_runs_running", ())] == 2
    assert samples[("flowmason_runs_queued", ())] >= 1
    for run_id in [*held, waiting]:
        assert metrics_daemon.wait_for_status(run_id, {"succeeded", "failed"})["status"] == "succeeded"


def test_a_bad_listen_address_is_a_configuration_error(tmp_path: Path) -> None:
    """`[metrics] listen` without a port is refused by --check-config with exit 78, naming the key."""
    import subprocess
    import sys

    config = tmp_path / "flowmasond.toml"
    config.write_text(_toml({"state_dir": str(tmp_path / "s"), "metrics": {"listen": "127.0.0.1"}}))
    done = subprocess.run([sys.executable, "-m", "flowmasond.cli", "--config", str(config), "--check-config"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "metrics.listen" in done.stdout + done.stderr
