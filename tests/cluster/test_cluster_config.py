"""Cluster settings and node identity: refused when they cannot work, kept across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowmasond.cluster.identity import NODE_ID_FILE, resolve_node_id
from flowmasond.config import load_config
from flowmasond.errors import ConfigurationError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowmasond.toml"
    path.write_text(text)
    return path


def test_a_cluster_on_the_sqlite_journal_is_refused(tmp_path: Path) -> None:
    """Nodes share a database: `[cluster] enabled` without the PostgreSQL journal is a configuration error."""
    with pytest.raises(ConfigurationError, match=r"cluster\.enabled needs journal\.backend"):
        load_config(_config(tmp_path, "[cluster]\nenabled = true\n"), env={})


def test_a_heartbeat_slower_than_half_the_lease_is_refused(tmp_path: Path) -> None:
    """Two heartbeats must fit in a lease, or a busy node would lose its runs between renewals."""
    text = ('[journal]\nbackend = "postgresql"\ndsn = "dbname=x"\n'
            "[cluster]\nenabled = true\nlease_seconds = 10\nheartbeat_seconds = 6\n")
    with pytest.raises(ConfigurationError, match="at most half of lease_seconds"):
        load_config(_config(tmp_path, text), env={})


def test_the_default_node_id_is_made_once_and_kept_in_the_state_dir(tmp_path: Path) -> None:
    """Without `node_id`, a node names itself `<host name>-<six hex digits>`, keeping it across restarts."""
    first = resolve_node_id(tmp_path)
    assert (tmp_path / NODE_ID_FILE).read_text().strip() == first
    assert resolve_node_id(tmp_path) == first
    assert first.rsplit("-", 1)[1].isalnum() and len(first.rsplit("-", 1)[1]) == 6


def test_a_configured_node_id_wins_over_the_kept_one(tmp_path: Path) -> None:
    """`[cluster] node_id` is used as is; the file is neither read nor written."""
    assert resolve_node_id(tmp_path, "alpha") == "alpha"
    assert not (tmp_path / NODE_ID_FILE).exists()


def test_a_corrupt_node_id_file_is_reported_with_its_path(tmp_path: Path) -> None:
    """A node id file holding something that is not an id names the file instead of joining as garbage."""
    (tmp_path / NODE_ID_FILE).write_text("no spaces allowed\n")
    with pytest.raises(ConfigurationError) as err:
        resolve_node_id(tmp_path)
    assert err.value.context["file"] == str(tmp_path / NODE_ID_FILE)
