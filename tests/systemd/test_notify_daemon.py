"""A real flowmasond subprocess talks sd_notify to a fake NOTIFY_SOCKET the test owns."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable

from notify_support import NotifyListener, systemd_env
from daemon_support import DaemonProcess
from loop_blocker import BLOCK_END, BLOCK_START

FAST = {"shutdown_grace_s": 2.0, "cancel_grace_s": 1.0}
# 400 ms: the daemon pings every 200 ms, so a 1.5 s block would hide about seven pings.
WATCHDOG_USEC = 400_000


def _after(fields: list[str], start: int, prefix: str) -> list[str]:
    return [f for f in fields[start:] if f.startswith(prefix)]


def test_ready_status_watchdog_and_stopping_arrive_in_order(
        daemon_factory: Callable[..., DaemonProcess], notify_listener: NotifyListener) -> None:
    """READY=1 (with STATUS=) comes first, WATCHDOG=1 only after it, and STOPPING=1 is the last message."""
    daemon = daemon_factory(config=FAST, env=systemd_env(notify_listener, watchdog_usec=WATCHDOG_USEC))
    daemon.start()
    ready = notify_listener.wait_for_field("READY=1")
    notify_listener.wait_for_field("WATCHDOG=1", after=ready)
    assert daemon.stop() == 0
    fields = notify_listener.fields()
    assert fields.index("READY=1") < fields.index("WATCHDOG=1")
    assert fields[0] == "READY=1"
    status = fields[1]
    assert status.startswith("STATUS=") and all(
        word in status for word in ("runs active", "queued", "schedules")), status
    last = notify_listener.messages[-1]
    assert last[0] == "STOPPING=1", notify_listener.messages[-3:]
    assert fields.count("STOPPING=1") == 1


def test_ready_is_sent_only_once_the_control_socket_accepts(
        daemon_factory: Callable[..., DaemonProcess], notify_listener: NotifyListener) -> None:
    """At the moment READY=1 arrives, the control socket file exists and accepts a connection."""
    daemon = daemon_factory(config=FAST, env=systemd_env(notify_listener))
    daemon.start(wait=False)
    notify_listener.wait_for_field("READY=1")
    assert notify_listener.ready_checks == [True]
    daemon.wait_ready()
    assert daemon.stop() == 0


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(
        daemon_factory: Callable[..., DaemonProcess], notify_listener: NotifyListener,
        write_pipeline: Callable[[dict[str, Any]], Path]) -> None:
    """No WATCHDOG=1 arrives while a stage blocks the daemon's loop, and pings resume after it."""
    write_pipeline({"id": "block", "stages": [
        {"id": "block", "component_type": "block_loop",
         "config": {"seconds": 1.5, "marker_socket": str(notify_listener.path)}}]})
    daemon = daemon_factory(config={**FAST, "component_modules": ["loop_blocker"]},
                            env=systemd_env(notify_listener, watchdog_usec=WATCHDOG_USEC)).start()
    notify_listener.wait_for_field("WATCHDOG=1")
    with daemon.client(timeout=20.0) as client:
        run = client.call("runs.start", {"pipeline_id": "block"})
    start = notify_listener.wait_for_field(BLOCK_START)
    end = notify_listener.wait_for_field(BLOCK_END, after=start)
    resumed = notify_listener.wait_for_field("WATCHDOG=1", after=end)
    fields = notify_listener.fields()
    assert "WATCHDOG=1" in fields[:start]
    assert "WATCHDOG=1" not in fields[start:end]
    assert resumed > end
    daemon.wait_for_status(run["run_id"], {"succeeded"})
    assert daemon.stop() == 0


def test_sighup_sends_reloading_then_ready(
        daemon_factory: Callable[..., DaemonProcess], notify_listener: NotifyListener) -> None:
    """SIGHUP makes the daemon send RELOADING=1 (with MONOTONIC_USEC=), then READY=1 again."""
    daemon = daemon_factory(config=FAST, env=systemd_env(notify_listener)).start()
    first_ready = notify_listener.wait_for_field("READY=1")
    daemon.signal(signal.SIGHUP)
    reloading = notify_listener.wait_for_field("RELOADING=1", after=first_ready + 1)
    ready_again = notify_listener.wait_for_field("READY=1", after=reloading)
    fields = notify_listener.fields()
    assert fields[reloading + 1].startswith("MONOTONIC_USEC=")
    assert ready_again > reloading
    assert daemon.stop() == 0


def test_stage_processes_do_not_inherit_the_notify_variables(
        daemon_factory: Callable[..., DaemonProcess], notify_listener: NotifyListener,
        write_pipeline: Callable[[dict[str, Any]], Path], tmp_path: Path) -> None:
    """A shell stage sees neither NOTIFY_SOCKET nor WATCHDOG_USEC, so it cannot speak for the daemon."""
    dump = tmp_path / "stage-env.txt"
    write_pipeline({"id": "env", "stages": [
        {"id": "dump", "component_type": "shell", "config": {"command": f"env > {dump}"}}]})
    # env_allow = ["*"]: the stage inherits everything an operator can let through, and still not these.
    daemon = daemon_factory(config={**FAST, "env_allow": ["*"]},
                            env=systemd_env(notify_listener, watchdog_usec=WATCHDOG_USEC)).start()
    with daemon.client() as client:
        run = client.call("runs.start", {"pipeline_id": "env"})
    daemon.wait_for_status(run["run_id"], {"succeeded"})
    names = {line.split("=", 1)[0] for line in dump.read_text().splitlines()}
    assert "PYTHONUNBUFFERED" in names  # the stage did inherit the rest of the daemon's environment
    assert not names & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"}
    assert daemon.stop() == 0
