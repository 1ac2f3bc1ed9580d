"""Operating a cluster: any node answers for every run, cancels reach the owner, the database restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from collections.abc import Callable

from cluster_support import Cluster, TERMINAL, record_chain, wait_until
from daemon_support import DaemonProcess
from pg_support import PgServer

CHAIN = record_chain("chain", stages=6, hold_s=0.25)
SLOW = record_chain("slow", stages=3, hold_s=5.0)
STEADY = record_chain("steady", stages=6, hold_s=0.5)


def test_any_node_lists_shows_and_cancels_a_run_another_node_executes(cluster: Cluster, tmp_path: Path) -> None:
    """Node b (without the pipeline file) shows node a's run, and its `cancel` stops it on node a
    within a heartbeat (the request wakes node a through NOTIFY)."""
    cluster.lease_s, cluster.heartbeat_s = 20.0, 8.0
    a = cluster.add("a", [SLOW], config={"cancel_grace_s": 0.2})
    b = cluster.add("b")
    with a.client() as client:
        run_id = client.runs_start("slow", {"ledger": str(tmp_path / "l.jsonl")}).run_id
    wait_until(lambda: cluster.status(run_id) == "running", timeout=10, what="the run running")
    listed = b.cli("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert run_id in {r["run_id"] for r in json.loads(listed.stdout)}
    shown = b.cli("show", run_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "running", shown.stderr
    started = time.monotonic()
    cancelled = b.cli("cancel", run_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert time.monotonic() - started < 2.5  # before a's next heartbeat, and the 5 s stage was cut short
    assert cluster.lease_holder(run_id) is None


def test_a_run_stopped_on_one_node_resumes_through_another(cluster: Cluster, tmp_path: Path) -> None:
    """`resume` through node b continues a run cancelled on node a, from its last commit, on node b."""
    a = cluster.add("a", [STEADY])
    b = cluster.add("b")
    ledger = tmp_path / "l.jsonl"
    with a.client() as client:
        run_id = client.runs_start("steady", {"ledger": str(ledger)}).run_id
        wait_until(lambda: len(cluster.results(run_id)) >= 2, timeout=10, what="two commits")
        client.call("runs.cancel", {"run_id": run_id})
    cluster.wait_all([run_id], {"cancelled"}, timeout=10)
    done_before = {p for p, _ in cluster.results(run_id)}
    resumed = b.cli("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    cluster.wait_all([run_id], {"succeeded"}, timeout=20)
    ran = [json.loads(line)["path"] for line in ledger.read_text().splitlines()]
    assert all(ran.count(p) == 1 for p in done_before)
    assert sorted(p for p, _ in cluster.results(run_id)) == [f"s{i}" for i in range(1, 7)]


def test_nodes_lists_every_node_with_its_leases_and_heartbeat(cluster: Cluster, tmp_path: Path) -> None:
    """`flowmason nodes` on any node shows every node, which runs it holds, and its heartbeat age."""
    a = cluster.add("a", [SLOW])
    b = cluster.add("b")
    with a.client() as client:
        run_id = client.runs_start("slow", {"ledger": str(tmp_path / "l.jsonl")}).run_id
    wait_until(lambda: cluster.lease_holder(run_id) == "a", timeout=10, what="a's lease")
    result = json.loads(b.cli("nodes", "--json").stdout)
    nodes = {n["node_id"]: n for n in result["nodes"]}
    assert result["cluster"] is True and result["node_id"] == "b"
    assert set(nodes) == {"a", "b"}
    assert [lease["run_id"] for lease in nodes["a"]["leases"]] == [run_id]
    assert nodes["b"]["leases"] == []
    assert all(n["heartbeat_age_s"] < cluster.lease_s for n in nodes.values())
    text = b.cli("nodes").stdout
    assert run_id in text and "up" in text


def test_runs_continue_when_the_database_restarts_under_load(cluster: Cluster, pg_server: PgServer,
                                                             tmp_path: Path) -> None:
    """Restart PostgreSQL while two nodes execute eight runs: the nodes reconnect and every run
    succeeds with exactly one result per stage."""
    a = cluster.add("a", [CHAIN])
    b = cluster.add("b", [CHAIN])
    run_ids = []
    for i in range(8):
        node = (a, b)[i % 2]
        with node.client() as client:
            run_ids.append(client.runs_start("chain", {"ledger": str(tmp_path / f"l{i}.jsonl")}).run_id)
    wait_until(lambda: sum(len(cluster.results(r)) for r in run_ids) >= 8, timeout=20, what="commits")
    restarted = time.monotonic()
    pg_server.restart()
    down_s = time.monotonic() - restarted
    cluster.wait_all(run_ids, TERMINAL, timeout=60)
    for run_id in run_ids:
        assert cluster.status(run_id) == "succeeded"
        assert sorted(p for p, _ in cluster.results(run_id)) == [f"s{i}" for i in range(1, 7)]
    for node in (a, b):
        with node.client() as client:
            assert client.health().status == "ok"
    print(f"\ndatabase restart took {down_s:.2f} s; all runs finished")


def test_nodes_on_a_daemon_alone_on_its_journal_says_so(daemon_factory: Callable[..., DaemonProcess]) -> None:
    """Without [cluster] (the SQLite journal), `flowmason nodes` answers that there is no cluster."""
    daemon = daemon_factory().start()
    assert json.loads(daemon.cli("nodes", "--json").stdout) == {"cluster": False, "nodes": []}
    assert "not a cluster" in daemon.cli("nodes").stdout


def test_a_second_daemon_on_a_nodes_state_directory_is_refused(cluster: Cluster) -> None:
    """One process per node: another daemon on the same state directory exits 75 naming the owner."""
    a = cluster.add("a")
    twin = DaemonProcess(state_dir=a.state_dir, socket=a.socket.with_name("twin.sock"), pipelines=a.pipelines,
                         config=a.config, log_path=a.log_path.with_name("twin.log"), env=a.env)
    twin.start(wait=False)
    assert twin.proc is not None and twin.proc.wait(timeout=30) == 75
    assert str(a.proc.pid) in twin.log()


def test_a_run_paused_at_a_breakpoint_on_one_node_is_cancelled_through_another(cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    """A run waiting at a breakpoint on node a (its lease held there) is cancelled by node b's `cancel`."""
    a = cluster.add("a", [STEADY])
    b = cluster.add("b")
    with a.client() as client:
        run_id = client.call("runs.start", {"pipeline_id": "steady", "inputs": {"ledger": str(tmp_path / "l.jsonl")},
                                            "break_at": ["s3"]})["run_id"]
    wait_until(lambda: cluster.status(run_id) == "paused", timeout=10, what="the run paused at s3")
    assert cluster.lease_holder(run_id) == "a"
    cancelled = b.cli("cancel", run_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert sorted(p for p, _ in cluster.results(run_id)) == ["s1", "s2"]
    assert cluster.lease_holder(run_id) is None


def test_continue_through_another_node_releases_a_run_paused_on_its_owner(cluster: Cluster, tmp_path: Path) -> None:
    """`continue` on node b lets node a's run go on past its breakpoint, on node a."""
    a = cluster.add("a", [STEADY])
    b = cluster.add("b")
    with a.client() as client:
        run_id = client.call("runs.start", {"pipeline_id": "steady", "inputs": {"ledger": str(tmp_path / "l.jsonl")},
                                            "break_at": ["s2"]})["run_id"]
    wait_until(lambda: cluster.status(run_id) == "paused", timeout=10, what="the run paused at s2")
    assert b.cli("continue", run_id).returncode == 0
    cluster.wait_all([run_id], TERMINAL, timeout=20)
    assert cluster.status(run_id) == "succeeded"
    assert [e for e in a.log_events() if e.get("event") == "run_go_on" and e.get("run_id") == run_id]
