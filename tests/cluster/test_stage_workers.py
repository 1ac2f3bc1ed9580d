"""Stages across workers: a wide wave with `distribute` is executed by several real nodes' stage
workers, the owner commits every result once, and killed workers or a killed owner lose nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowmasond.testing
from cluster_support import TERMINAL, Cluster, ledger_lines, wait_until
from flowmasond.config import load_config
from flowmasond.engine.dag import DAGExecutor
from flowmasond.errors import ConfigurationError
from flowmasond.testing import build_registry, pipeline
from pg_support import PgServer

WIDTH = 20


def wide_wave(pipeline_id: str, hold_s: float, foreach_items: int = 0,
              first_hold_s: float | None = None) -> dict[str, Any]:
    """``w1..w20`` in one wave (each records to the ledger, then holds), and ``join`` reading them all;
    with ``foreach_items``, also a parallel foreach ``loop`` whose ``body`` runs once per item;
    with ``first_hold_s``, ``w1`` holds that long instead."""
    stages: list[dict[str, Any]] = [
        {"id": f"w{i}", "component_type": "record",
         "config": {"ledger": "{{input.ledger}}", "value": {"i": i, "item": f"v{i}-{{{{input.tag}}}}"},
                    "hold_s": first_hold_s if i == 1 and first_hold_s is not None else hold_s}}
        for i in range(1, WIDTH + 1)]
    stages.append({"id": "join", "component_type": "record", "depends_on": [f"w{i}" for i in range(1, WIDTH + 1)],
                   "config": {"ledger": "{{input.ledger}}",
                              "value": [f"{{{{upstream.w{i}.item}}}}" for i in range(1, WIDTH + 1)]}})
    if foreach_items:
        stages.append({"id": "loop", "component_type": "foreach",
                       "config": {"items": [f"i{n}" for n in range(foreach_items)], "loop_stages": ["body"],
                                  "parallel": True, "max_parallel": foreach_items}})
        stages.append({"id": "body", "component_type": "record",
                       "config": {"ledger": "{{input.ledger}}", "value": "{{context.item}}-{{context.index}}",
                                  "hold_s": hold_s}})
    return {"id": pipeline_id, "distribute": True, "stages": stages, "output_stage_id": "join"}


def _oracle(definition: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs by path of the same pipeline run in one process, without a cluster."""
    executor = DAGExecutor(build_registry(flowmasond.testing))
    outcome = asyncio.run(executor.execute(pipeline(definition), inputs))
    assert outcome.status.value == "succeeded", outcome.error
    return {path: result.output for path, result in outcome.results.items()}


def _outputs(cluster: Cluster, run_id: str) -> dict[str, Any]:
    return {path: output for path, output in cluster.db(
        "SELECT path, output::jsonb FROM run_records WHERE run_id = %s AND kind = 'result'", (run_id,))}


def _committed(cluster: Cluster, run_id: str) -> set[str]:
    return {path for path, _ in cluster.results(run_id)}


def _node_of_pid(cluster: Cluster) -> dict[int, str]:
    return {node.proc.pid: node.state_dir.parent.name for node in cluster.nodes if node.proc is not None}


def test_a_distributed_wide_wave_runs_on_several_nodes_each_stage_once_with_the_single_node_outputs(
        cluster: Cluster, tmp_path: Path) -> None:
    """20 distributed stages, a parallel foreach's 6 iterations, a retried stage and a shell stage on
    three nodes: more than one node executes them, every stage runs and is committed exactly once,
    the committed outputs equal those of a single-process run, and the shell's output is logged."""
    definition = wide_wave("wide", hold_s=0.3, foreach_items=6)
    # Retried on its worker with the stage's policy: two failed attempts, then success.
    definition["stages"].append({"id": "retried", "component_type": "flaky", "config": {"fail_attempts": 2},
                                 "retry_config": {"max_retries": 3, "initial_delay_ms": 10, "jitter": False}})
    # Its output lines reach run_logs from the worker's node before its result is committed.
    definition["stages"].append({"id": "say", "component_type": "shell",
                                 "config": {"command": "echo said-$TAG", "env": {"TAG": "{{input.tag}}"}}})
    a = cluster.add("a", [definition])
    cluster.add("b")
    cluster.add("c")
    ledger = tmp_path / "ledger.jsonl"
    inputs = {"ledger": str(ledger), "tag": "t"}
    with a.client() as client:
        run_id = client.runs_start("wide", inputs).run_id
    cluster.wait_all([run_id], {"succeeded", "failed", "cancelled"}, timeout=40)
    assert cluster.status(run_id) == "succeeded"

    lines = ledger_lines(ledger)
    runs_per_path = Counter(line["path"] for line in lines)
    iterations = {f"loop/{n}/body": 1 for n in range(6)}
    assert runs_per_path == Counter({f"w{i}": 1 for i in range(1, WIDTH + 1)} | {"join": 1} | iterations)
    results = [path for path, _ in cluster.results(run_id)]
    assert sorted(results) == sorted([*runs_per_path, "loop", "retried", "say"])  # each committed once
    assert dict(cluster.results(run_id))["retried"] == 3
    assert cluster.db("SELECT stream, text FROM run_logs WHERE run_id = %s AND path = 'say'", (run_id,)) == [
        ("stdout", "said-t\n")]
    wait_until(lambda: not cluster.db("SELECT 1 FROM stage_tasks WHERE run_id = %s", (run_id,)), timeout=10,
               what="the committed tasks deleted")
    nodes = _node_of_pid(cluster)
    by_node = Counter(nodes[line["pid"]] for line in lines if line["path"] != "join")
    assert len({nodes[line["pid"]] for line in lines if line["path"] in iterations}) >= 2
    assert len(by_node) >= 2, f"every stage ran on one node: {by_node}"
    oracle = _oracle(definition, {"ledger": str(tmp_path / "oracle.jsonl"), "tag": "t"})
    assert _outputs(cluster, run_id) == oracle
    print(f"\n20-wide wave on three nodes: stages per node {dict(sorted(by_node.items()))}")


def test_a_killed_workers_claimed_stages_run_again_elsewhere_and_committed_ones_never(
        cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL a worker node while it holds claimed stages: once its claims expire the other node
    runs them again (attempt numbers continue), no committed stage runs twice, the run succeeds."""
    definition = wide_wave("wide", hold_s=1.0)
    a = cluster.add("a", [definition], config={"cluster": {"stage_workers": 0}})  # owner only
    b = cluster.add("b")
    cluster.add("c")
    ledger = tmp_path / "ledger.jsonl"
    with a.client() as client:
        run_id = client.runs_start("wide", {"ledger": str(ledger), "tag": "k"}).run_id

    def claimed_by_b() -> set[str]:
        """Stages node b holds and has started (a result it wrote already is not lost with it)."""
        return {str(p) for (p,) in cluster.db(
            "SELECT path FROM stage_tasks WHERE run_id = %s AND worker_node = 'b' AND state = 'claimed' "
            "AND attempt > 0", (run_id,))}

    wait_until(lambda: _committed(cluster, run_id) and claimed_by_b(), timeout=20,
               what="a committed stage, and stages in flight on node b")
    b.proc.kill()
    assert b.proc.wait(timeout=10) == -signal.SIGKILL
    at_kill = _committed(cluster, run_id)
    lost = claimed_by_b()
    assert lost, "node b held no started stage when it was killed"

    cluster.wait_all([run_id], {"succeeded", "failed", "cancelled"}, timeout=40)
    assert cluster.status(run_id) == "succeeded"
    lines = ledger_lines(ledger)
    runs_per_path = Counter(line["path"] for line in lines)
    for path in at_kill:
        assert runs_per_path[path] == 1, f"{path} was committed before the kill but ran {runs_per_path[path]} times"
    c_pid = cluster.nodes[2].proc.pid
    for path in lost:
        rerun = [line for line in lines if line["path"] == path and line["pid"] == c_pid]
        assert rerun and rerun[-1]["attempt"] >= 2, f"{path} was not run again on node c: {rerun}"
    assert all(n == 1 for path, n in runs_per_path.items() if path not in lost), runs_per_path
    assert sorted(p for p, _ in cluster.results(run_id)) == sorted({f"w{i}" for i in range(1, WIDTH + 1)} | {"join"})


def test_a_killed_owners_run_is_finished_by_another_node_adopting_its_stage_tasks(
        cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL the run's owner mid-wave: another node takes the run over, adopts the stage tasks its
    workers hold instead of queuing them again, and finishes with every stage run and committed once."""
    definition = wide_wave("wide", hold_s=1.0)
    a = cluster.add("a", [definition], config={"cluster": {"stage_workers": 0}})  # owner only
    b = cluster.add("b")
    c = cluster.add("c")
    ledger = tmp_path / "ledger.jsonl"
    with a.client() as client:
        run_id = client.runs_start("wide", {"ledger": str(ledger), "tag": "o"}).run_id
    wait_until(lambda: _committed(cluster, run_id), timeout=20, what="a committed stage")
    a.proc.kill()
    killed_at = time.time()
    assert a.proc.wait(timeout=10) == -signal.SIGKILL
    at_kill = _committed(cluster, run_id)
    assert len(at_kill) < WIDTH + 1

    cluster.wait_all([run_id], {"succeeded", "failed", "cancelled"}, timeout=40)
    assert cluster.status(run_id) == "succeeded"
    runs_per_path = Counter(line["path"] for line in ledger_lines(ledger))
    assert runs_per_path == Counter({f"w{i}": 1 for i in range(1, WIDTH + 1)} | {"join": 1}), runs_per_path
    assert sorted(p for p, _ in cluster.results(run_id)) == sorted(runs_per_path)
    adopted = [e for node in (b, c) for e in node.log_events() if e.get("event") == "stage_task_adopted"]
    assert adopted, "the new owner queued the stages again instead of adopting the tasks"
    resumed = [ts for ts, _ in cluster.events(run_id, "run.resumed") if ts >= killed_at]
    print(f"\nowner killed: run resumed on another node after {resumed[0] - killed_at:.2f} s, "
          f"{len(adopted)} stage tasks adopted")


def test_an_unsafe_stage_whose_worker_was_killed_is_not_run_again(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL the worker executing a distributed stage that is not safe to repeat: the worker that
    claims it next does not run it, and the run stops as interrupted (unsafe_to_repeat) for an operator."""
    definition = {"id": "charge", "distribute": True, "stages": [
        {"id": "card", "component_type": "unsafe_record",
         "config": {"ledger": "{{input.ledger}}", "hold_s": 5.0}}]}
    a = cluster.add("a", [definition], config={"cluster": {"stage_workers": 0}})
    cluster.add("b")
    cluster.add("c")
    ledger = tmp_path / "ledger.jsonl"
    with a.client() as client:
        run_id = client.runs_start("charge", {"ledger": str(ledger)}).run_id
    first = wait_until(lambda: ledger_lines(ledger), timeout=20, what="the stage started on a worker")
    worker = next(n for n in cluster.nodes if n.proc is not None and n.proc.pid == first[0]["pid"])
    worker.proc.kill()
    assert worker.proc.wait(timeout=10) == -signal.SIGKILL

    wait_until(lambda: cluster.status(run_id) == "interrupted", timeout=20, what="the run interrupted")
    error = cluster.db("SELECT error FROM runs WHERE run_id = %s", (run_id,))[0][0]
    assert error["code"] == "unsafe_to_repeat" and error["context"]["path"] == "card", error
    assert len(ledger_lines(ledger)) == 1  # the side effect happened once
    assert cluster.results(run_id) == []


def test_cancelling_a_distributed_run_withdraws_its_stages_from_the_workers(cluster: Cluster, tmp_path: Path) -> None:
    """Cancel a run while workers of other nodes execute its stages: the run ends cancelled, the
    workers stop the withdrawn stages, and no task of the run is left in the database."""
    a = cluster.add("a", [wide_wave("wide", hold_s=30.0)],
                    config={"cancel_grace_s": 0.2, "cluster": {"stage_workers": 0}})
    b = cluster.add("b")
    ledger = tmp_path / "ledger.jsonl"
    with a.client() as client:
        run_id = client.runs_start("wide", {"ledger": str(ledger), "tag": "c"}).run_id
        wait_until(lambda: len(ledger_lines(ledger)) >= 4, timeout=20, what="four stages on node b's workers")
        client.call("runs.cancel", {"run_id": run_id})
    cluster.wait_all([run_id], {"cancelled"}, timeout=20)
    wait_until(lambda: len([e for e in b.log_events() if e.get("event") == "stage_task_withdrawn"]) >= 4,
               timeout=10, what="node b stopping the withdrawn stages")
    wait_until(lambda: not cluster.db("SELECT 1 FROM stage_tasks WHERE run_id = %s", (run_id,)),
               timeout=10, what="the run's tasks deleted")
    assert cluster.results(run_id) == []


def test_an_owner_paused_past_its_lease_commits_no_stage_of_the_run_that_moved_on(
        cluster: Cluster, tmp_path: Path) -> None:
    """SIGSTOP the owner mid-wave until another node has taken the run over, adopted its stage tasks
    and finished; after SIGCONT the old owner takes no result and commits nothing: every stage ran
    and was committed exactly once."""
    # w1 finishes early and the others late, so that the owner is paused between two commits: a
    # node paused inside a journal transaction keeps its row locks, and no node can take the run
    # until it wakes (a limit of run leases, not of stage tasks).
    definition = wide_wave("wide", hold_s=1.0, first_hold_s=0.1)
    a = cluster.add("a", [definition], config={"cluster": {"stage_workers": 0}})
    b = cluster.add("b")
    c = cluster.add("c")
    ledger = tmp_path / "ledger.jsonl"
    with a.client() as client:
        run_id = client.runs_start("wide", {"ledger": str(ledger), "tag": "s"}).run_id
    wait_until(lambda: "w1" in _committed(cluster, run_id), timeout=20, what="w1 committed")
    a.signal(signal.SIGSTOP)
    try:
        assert len(_committed(cluster, run_id)) < WIDTH + 1
        cluster.wait_all([run_id], {"succeeded"}, timeout=30)
    finally:
        a.signal(signal.SIGCONT)
    wait_until(lambda: any(e.get("event") == "lease_lost" and e.get("run_id") == run_id for e in a.log_events()),
               timeout=15, what="node a noticing it lost the run")
    time.sleep(3 * cluster.heartbeat_s)  # give a late write the chance to land before checking
    assert cluster.status(run_id) == "succeeded"
    runs_per_path = Counter(line["path"] for line in ledger_lines(ledger))
    assert runs_per_path == Counter({f"w{i}": 1 for i in range(1, WIDTH + 1)} | {"join": 1}), runs_per_path
    assert sorted(p for p, _ in cluster.results(run_id)) == sorted(runs_per_path)
    assert any(e.get("event") == "stage_task_adopted" for node in (b, c) for e in node.log_events())


def test_a_node_without_the_component_leaves_its_stages_to_nodes_that_have_it(cluster: Cluster,
                                                                              tmp_path: Path) -> None:
    """Node b does not load the module of the `record` component: it claims none of those stages,
    node c runs them all, and the run succeeds."""
    a = cluster.add("a", [wide_wave("wide", hold_s=0.05)], config={"cluster": {"stage_workers": 0}})
    b = cluster.add("b", config={"component_modules": []})
    c = cluster.add("c")
    ledger = tmp_path / "ledger.jsonl"
    with a.client() as client:
        run_id = client.runs_start("wide", {"ledger": str(ledger), "tag": "m"}).run_id
    cluster.wait_all([run_id], TERMINAL, timeout=30)
    assert cluster.status(run_id) == "succeeded"
    pids = Counter(line["pid"] for line in ledger_lines(ledger))
    assert pids == Counter({c.proc.pid: WIDTH + 1})
    assert b.proc.pid not in pids

def test_distributed_stages_continue_when_the_database_restarts(cluster: Cluster, pg_server: PgServer,
                                                                tmp_path: Path) -> None:
    """Restart PostgreSQL while workers of two nodes hold a run's stages: workers, owner and listener
    reconnect, and the run succeeds with one result per stage."""
    a = cluster.add("a", [wide_wave("wide", hold_s=0.5)])
    cluster.add("b")
    with a.client() as client:
        run_id = client.runs_start("wide", {"ledger": str(tmp_path / "l.jsonl"), "tag": "r"}).run_id
    wait_until(lambda: _committed(cluster, run_id), timeout=20, what="a commit")
    assert len(_committed(cluster, run_id)) < WIDTH + 1
    pg_server.restart()
    cluster.wait_all([run_id], TERMINAL, timeout=60)
    assert cluster.status(run_id) == "succeeded"
    assert sorted(p for p, _ in cluster.results(run_id)) == sorted([f"w{i}" for i in range(1, WIDTH + 1)] + ["join"])

def test_a_negative_number_of_stage_workers_is_refused(tmp_path: Path) -> None:
    """`[cluster] stage_workers` counts workers: 0 (hand stages out only) or more, never negative."""
    path = tmp_path / "flowmasond.toml"
    head = '[journal]\nbackend = "postgresql"\ndsn = "dbname=x"\n[cluster]\nenabled = true\n'
    path.write_text(head + "stage_workers = -1\n")
    with pytest.raises(ConfigurationError, match="stage_workers"):
        load_config(path, env={})
    path.write_text(head + "stage_workers = 0\n")
    assert load_config(path, env={}).cluster.stage_workers == 0
