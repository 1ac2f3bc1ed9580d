"""The shipped systemd files: verify cleanly, score "OK" on hardening, and agree with the daemon.

``systemd-analyze verify`` checks that ExecStart= names an existing executable, and the unit
names the installed path (/usr/local/bin/flowmasond), which a development machine may not have:
the verify test checks a temporary copy whose ExecStart= points at the console script this
environment installed (or the Python interpreter when there is none), everything else unchanged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_support import REPO
from flowmason_client.paths import SOCKET_NAME, SYSTEM_SOCKET_PATH
from flowmasond.components.llm.providers import ProviderConfig
from flowmasond.config import DaemonConfig, default_paths, load_config

UNITS = REPO / "systemd"
SERVICE = UNITS / "flowmasond.service"
SOCKET = UNITS / "flowmasond.socket"
EXAMPLE_CONFIG = UNITS / "flowmasond.toml.example"
# The bound: "OK" or better in systemd-analyze security's scale.
MAX_EXPOSURE = 2.0
SYSTEMD_ENV = {"STATE_DIRECTORY": "/var/lib/flowmason", "RUNTIME_DIRECTORY": "/run/flowmason",
               "CONFIGURATION_DIRECTORY": "/etc/flowmason"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (systemd tools are needed to check the unit files)")
    return path


def directives(unit: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file; a key given several times keeps every value, in order."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_service_scores_ok_or_better_on_systemd_analyze_security() -> None:
    """`systemd-analyze security --offline=true` rates the service's exposure 2.0 or lower."""
    result = subprocess.run([_tool("systemd-analyze"), "security", "--offline=true", str(SERVICE)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for flowmasond\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing for the service and the socket unit."""
    analyze = _tool("systemd-analyze")
    executable = shutil.which("flowmasond") or sys.executable
    service = SERVICE.read_text()
    assert "\nExecStart=/usr/local/bin/flowmasond\n" in service
    (tmp_path / SERVICE.name).write_text(service.replace("\nExecStart=/usr/local/bin/flowmasond\n",
                                                         f"\nExecStart={executable}\n"))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    result = subprocess.run([analyze, "verify", str(tmp_path / SERVICE.name), str(tmp_path / SOCKET.name)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_stop_timeout_covers_the_default_shutdown_and_cancel_grace() -> None:
    """TimeoutStopSec= leaves room for shutdown_grace_s plus cancel_grace_s at their defaults."""
    defaults = DaemonConfig(state_dir=Path("/var/lib/flowmason"), socket=SYSTEM_SOCKET_PATH)
    timeout = _seconds(directives(SERVICE)["TimeoutStopSec"][-1])
    assert timeout > defaults.shutdown_grace_s + defaults.cancel_grace_s


def test_restart_is_prevented_for_the_exit_code_of_a_bad_configuration(tmp_path: Path) -> None:
    """The daemon exits 78 on an invalid config, the code the unit's RestartPreventExitStatus= names."""
    bad = tmp_path / "flowmasond.toml"
    bad.write_text("max_concurrent_runs = 0\n")
    result = subprocess.run([sys.executable, "-m", "flowmasond.cli", "--config", str(bad), "--check-config"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert directives(SERVICE)["RestartPreventExitStatus"] == [str(result.returncode)]


def test_socket_unit_listens_where_the_daemon_binds_and_the_command_connects() -> None:
    """ListenStream= is the daemon's default socket under the unit's RuntimeDirectory= and the client's."""
    listen = Path(directives(SOCKET)["ListenStream"][0])
    runtime = Path("/run") / directives(SERVICE)["RuntimeDirectory"][0]
    assert listen == runtime / SOCKET_NAME == SYSTEM_SOCKET_PATH
    assert default_paths({**SYSTEMD_ENV, "HOME": "/nonexistent"})["socket"] == listen


def test_sysusers_snippet_creates_the_flowmason_user_and_group(tmp_path: Path) -> None:
    """systemd-sysusers, on an empty root, creates a flowmason system user whose group is flowmason."""
    (tmp_path / "etc").mkdir()
    subprocess.run([_tool("systemd-sysusers"), f"--root={tmp_path}", str(UNITS / "flowmasond.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()}
    user = users["flowmason"]
    assert user[3] == groups["flowmason"][2]
    assert int(user[2]) < 1000 and user[5] == "/var/lib/flowmason"


def test_tmpfiles_snippet_creates_root_owned_config_folders(tmp_path: Path) -> None:
    """The config folders belong to root (writing a pipeline means running commands as flowmason)."""
    (tmp_path / "etc").mkdir()
    subprocess.run([_tool("systemd-sysusers"), f"--root={tmp_path}", str(UNITS / "flowmasond.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "etc/flowmason").mkdir(mode=0o777)
    (tmp_path / "etc/flowmason/flowmasond.toml").write_text("")
    subprocess.run([_tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create",
                    str(UNITS / "flowmasond.tmpfiles.conf")], check=True, capture_output=True, timeout=60)
    gid = int(next(line.split(":")[2] for line in (tmp_path / "etc/group").read_text().splitlines()
                   if line.startswith("flowmason:")))
    for folder in ("etc/flowmason", "etc/flowmason/pipelines"):
        info = (tmp_path / folder).stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o755), folder
    config = (tmp_path / "etc/flowmason/flowmasond.toml").stat()
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, gid, 0o640)


def test_example_config_loads_as_shipped() -> None:
    """The example file, every line commented, is a valid configuration under systemd."""
    config = load_config(EXAMPLE_CONFIG, env={**SYSTEMD_ENV, "HOME": "/nonexistent"})
    assert config.socket == SYSTEM_SOCKET_PATH


def test_example_config_values_are_the_defaults(tmp_path: Path) -> None:
    """With every `# key = value` line uncommented, the file validates and matches the defaults."""
    text, count = re.subn(r"(?m)^# (\[?[a-z_.]+\]?( = .*)?)$", r"\1", EXAMPLE_CONFIG.read_text())
    assert count >= 20  # the pattern really did uncomment the keys
    uncommented = tmp_path / "flowmasond.toml"
    uncommented.write_text(text)
    env = {**SYSTEMD_ENV, "HOME": "/nonexistent"}
    loaded = load_config(uncommented, env=env)
    shipped = load_config(EXAMPLE_CONFIG, env=env)
    provider = {"providers", "default_provider"}
    assert loaded.model_dump(exclude=provider) == shipped.model_dump(exclude=provider)
    assert loaded.default_provider in loaded.providers
    for raw in loaded.providers.values():
        ProviderConfig.model_validate(raw)
