"""A schedule's overlap policy holds across the cluster: a run of it on another node counts as active.

Fires are manual (`schedules.trigger` through a chosen node), so which node starts which run is
decided by the test, not by which node's clock ticked first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster_support import Cluster, wait_until

HOLD_S = 1.5


def _slow(overlap: str) -> dict[str, Any]:
    """``work`` stays in flight HOLD_S, then ``done``; its schedule never fires by itself (1 January)."""
    return {"id": "slow",
            "stages": [{"id": "work", "component_type": "record",
                        "config": {"ledger": "{{input.ledger}}", "value": 1, "hold_s": HOLD_S}},
                       {"id": "done", "component_type": "record", "depends_on": ["work"],
                        "config": {"ledger": "{{input.ledger}}", "value": 2}}],
            "schedules": [{"id": "nightly", "cron": "0 0 1 1 *", "overlap": overlap, "misfire": "skip",
                           "inputs": {"ledger": "LEDGER"}}]}


def _nodes(cluster: Cluster, overlap: str, tmp_path: Path) -> tuple[Any, Any]:
    definition = _slow(overlap)
    definition["schedules"][0]["inputs"]["ledger"] = str(tmp_path / "ledger.jsonl")
    return cluster.add("a", [definition]), cluster.add("b", [definition])


def _trigger(node: Any) -> dict[str, Any]:
    with node.client() as client:
        return dict(client.call("schedules.trigger", {"schedule_id": "nightly"}))


def _times(cluster: Cluster, run_id: str) -> tuple[float, float]:
    started, finished = cluster.db("SELECT started_at, finished_at FROM runs WHERE run_id = %s", (run_id,))[0]
    return float(started), float(finished)


def test_overlap_skip_counts_a_run_of_the_schedule_executing_on_another_node(
        cluster: Cluster, tmp_path: Path) -> None:
    """A fire on node b while node a executes the schedule's run is skipped, naming that run."""
    a, b = _nodes(cluster, "skip", tmp_path)
    first = _trigger(a)
    assert first["action"] == "started"
    wait_until(lambda: cluster.status(first["run_id"]) == "running", timeout=10, what="the first run to start")

    second = _trigger(b)

    assert second["action"] == "skipped", second
    assert first["run_id"] in second["reason"]
    assert cluster.db("SELECT count(*) FROM runs WHERE schedule_id = 'nightly'") == [(1,)]


def test_overlap_queue_starts_the_next_run_only_after_the_one_on_another_node_finished(
        cluster: Cluster, tmp_path: Path) -> None:
    """A fire on node b while node a executes the schedule's run is queued; it starts once that run ended."""
    a, b = _nodes(cluster, "queue", tmp_path)
    first = _trigger(a)
    wait_until(lambda: cluster.status(first["run_id"]) == "running", timeout=10, what="the first run to start")

    second = _trigger(b)
    assert second["action"] == "queued", second
    statuses = cluster.wait_all([first["run_id"], second["run_id"]], {"succeeded", "failed", "cancelled"},
                                timeout=30)

    assert statuses == {first["run_id"]: "succeeded", second["run_id"]: "succeeded"}
    assert _times(cluster, second["run_id"])[0] >= _times(cluster, first["run_id"])[1]


def test_overlap_cancel_previous_cancels_the_run_on_another_node_then_starts(
        cluster: Cluster, tmp_path: Path) -> None:
    """cancel_previous on node b cancels the run node a executes, and starts only after it stopped."""
    a, b = _nodes(cluster, "cancel_previous", tmp_path)
    first = _trigger(a)
    wait_until(lambda: cluster.status(first["run_id"]) == "running", timeout=10, what="the first run to start")

    second = _trigger(b)
    statuses = cluster.wait_all([first["run_id"], second["run_id"]], {"succeeded", "failed", "cancelled"},
                                timeout=30)

    assert statuses == {first["run_id"]: "cancelled", second["run_id"]: "succeeded"}
    assert _times(cluster, second["run_id"])[0] >= _times(cluster, first["run_id"])[1]
