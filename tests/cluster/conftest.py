"""Fixtures of the cluster tests: nodes on one throwaway PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_support import Cluster


@pytest.fixture
def cluster(pg_dsn: str, tmp_path: Path) -> Iterator[Cluster]:
    """An empty cluster on a fresh database; every node still running at the end is killed."""
    made = Cluster(root=tmp_path, dsn=pg_dsn)
    try:
        yield made
    finally:
        made.close()
