"""The two commands without a running daemon: `flowmason` says where it looked, `flowmasond --check-config` judges a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EX_UNAVAILABLE = 69
EX_CONFIG = 78


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMASON_")}
    env.update(extra)
    return env


def flowmason(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowmason_client.cli", *args], capture_output=True, text=True,
                          timeout=30, env=env or _env())


def flowmasond(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowmasond.cli", *args], capture_output=True, text=True,
                          timeout=30, env=_env())


def test_command_without_daemon_names_the_socket_in_one_line_and_exits_69(tmp_path: Path) -> None:
    """`flowmason --socket S runs` with nothing listening prints one stderr line naming S and exits 69."""
    socket = tmp_path / "nobody-home.sock"
    result = flowmason("--socket", str(socket), "runs")
    assert result.returncode == EX_UNAVAILABLE
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(socket) in lines[0], result.stderr


def test_command_uses_the_socket_from_the_environment(tmp_path: Path) -> None:
    """Without `--socket`, `flowmason` tries `$FLOWMASON_SOCKET` and names that path when nothing answers."""
    socket = tmp_path / "from-env.sock"
    result = flowmason("status", env=_env(FLOWMASON_SOCKET=str(socket)))
    assert result.returncode == EX_UNAVAILABLE
    assert str(socket) in result.stderr and len(result.stderr.splitlines()) == 1


def test_check_config_names_the_bad_key_and_the_file(tmp_path: Path) -> None:
    """`flowmasond --check-config` on a file with a misspelt key fails, naming the key and the file."""
    config = tmp_path / "flowmasond.toml"
    config.write_text('max_concurent_runs = 2\n[journal]\nsynchronus = "FULL"\n')
    result = flowmasond("--check-config", "--config", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == EX_CONFIG
    assert "max_concurent_runs" in result.stderr and "journal.synchronus" in result.stderr
    assert str(config) in result.stderr
    assert not (tmp_path / "state").exists()  # checking creates nothing


def test_check_config_names_a_bad_value(tmp_path: Path) -> None:
    """`flowmasond --check-config` on a known key with a bad value fails, naming the key and what it accepts."""
    config = tmp_path / "flowmasond.toml"
    config.write_text('recovery = "sometimes"\n')
    result = flowmasond("--check-config", "--config", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == EX_CONFIG
    assert "recovery" in result.stderr and "'auto' or 'manual'" in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """`flowmasond --check-config` on a valid file exits 0 and reports the paths it would use."""
    config = tmp_path / "flowmasond.toml"
    config.write_text('max_concurrent_runs = 2\nrecovery = "manual"\nshutdown_grace_s = 5.0\n'
                      '[journal]\nsynchronous = "NORMAL"\n')
    state = tmp_path / "state"
    result = flowmasond("--check-config", "--config", str(config), "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert f"state_dir={state}" in result.stdout
