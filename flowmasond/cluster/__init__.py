"""Several flowmasond nodes on one PostgreSQL journal: node identity, run leases, fencing.

A node executes a run only while it holds the run's lease (``run_leases``); the lease's epoch is the
fencing token every commit is checked against (``LeaseFence``), and the heartbeat of
``ClusterNode`` renews leases, hands cancel requests to the run manager, and claims runs that need
an owner (left by a dead node or never started).
"""

from __future__ import annotations

from flowmasond.cluster.fence import LeaseFence
from flowmasond.cluster.identity import resolve_node_id
from flowmasond.cluster.node import ClusterNode

__all__ = ["ClusterNode", "LeaseFence", "resolve_node_id"]
