"""Schedules across nodes: each fire once in the cluster, whichever nodes are up; pauses apply everywhere."""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from typing import Any

import pytest

from cluster_support import Cluster, wait_until

TICK: dict[str, Any] = {
    "id": "tick",
    "stages": [{"id": "note", "component_type": "variable_set", "config": {"variables": {"n": 1}}}],
    "schedules": [{"id": "every_second", "cron": "* * * * * *", "overlap": "allow", "misfire": "run_all"}],
}


def _fires(cluster: Cluster) -> list[tuple[float, str | None]]:
    return [(float(t), r) for t, r in cluster.db(
        "SELECT fire_time, run_id FROM schedule_fires WHERE schedule_id = 'every_second' ORDER BY fire_time")]


def test_every_fire_time_happens_exactly_once_while_nodes_are_killed_and_restarted(
        cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """Three nodes fire a once-a-second schedule for 20 s (60 s with --slow) while nodes are killed
    and restarted in turn: every second of the window has exactly one fire and exactly one run."""
    duration = 60.0 if request.config.getoption("--slow") else 20.0
    nodes = [cluster.add(name, [TICK]) for name in ("a", "b", "c")]
    start = time.time()
    victim = 0
    kills = 0
    while time.time() - start < duration:
        time.sleep(2.5)
        node = nodes[victim % 3]
        node.proc.kill()
        assert node.proc.wait(timeout=10) == -signal.SIGKILL
        kills += 1
        time.sleep(1.5)
        node.start(wait=False)  # comes back while the others keep firing
        victim += 1
    end = time.time()
    for node in nodes:
        node.wait_ready()
    time.sleep(3 * cluster.heartbeat_s)
    first, last = math.ceil(start) + 1, math.floor(end) - 1
    fires = [(t, r) for t, r in _fires(cluster) if first <= t <= last]
    times = Counter(t for t, _ in fires)
    assert sorted(times) == [float(s) for s in range(first, last + 1)], "a second without a fire"
    assert max(times.values()) == 1
    runs = Counter(float(t) for (t,) in cluster.db(
        "SELECT fire_time FROM runs WHERE schedule_id = 'every_second' AND fire_time BETWEEN %s AND %s",
        (first, last)))
    assert runs == Counter({t: 1 for t in times}), "a fire without exactly one run"
    assert {r for _, r in fires} == {r for (r,) in cluster.db(
        "SELECT run_id FROM runs WHERE schedule_id = 'every_second' AND fire_time BETWEEN %s AND %s",
        (first, last))}
    print(f"\n{len(fires)} fires over {last - first + 1} s with {kills} node kills: each once")


def test_a_pause_on_one_node_stops_the_schedule_on_every_node_until_unpaused_on_another(cluster: Cluster) -> None:
    """`schedule pause` through node a stops fires cluster-wide; `unpause` through node c restarts them."""
    a, _, c = (cluster.add(name, [TICK]) for name in ("a", "b", "c"))
    wait_until(lambda: len(_fires(cluster)) >= 2, timeout=10, what="the schedule firing")
    with a.client() as client:
        client.call("schedules.pause", {"schedule_id": "every_second"})
    time.sleep(2 * cluster.heartbeat_s + 1.0)  # every node has followed the pause by now
    paused_count = len(_fires(cluster))
    time.sleep(3.0)
    assert len(_fires(cluster)) == paused_count, "a node fired a paused schedule"
    with c.client() as client:
        info = client.call("schedules.list")["schedules"]
        assert info[0]["paused"] is True  # node c shows the pause made on node a
        client.call("schedules.unpause", {"schedule_id": "every_second"})
    wait_until(lambda: len(_fires(cluster)) >= paused_count + 2, timeout=10, what="fires after the unpause")
