"""A real flowmasond subprocess for tests (used by the fixtures in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowmason_client.client import Client
from flowmason_client.errors import ClientError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "pipelines"


@dataclass
class DaemonProcess:
    """A flowmasond started by a test; ``restart()`` keeps its state dir, socket and pipelines."""

    state_dir: Path
    socket: Path
    pipelines: Path
    config: Path | None
    log_path: Path
    env: dict[str, str]
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, env: dict[str, str] | None = None) -> DaemonProcess:
        args = [sys.executable, "-m", "flowmasond.cli", "--state-dir", str(self.state_dir),
                "--socket", str(self.socket), "--pipelines", str(self.pipelines), *self.extra_args]
        if self.config is not None:
            args += ["--config", str(self.config)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     env={**self.env, **(env or {})}, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"flowmasond exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with Client(self.socket, timeout=2.0, connect_timeout=1.0) as client:
                    if client.health().status == "ok":
                        return
            except ClientError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"flowmasond did not become ready:\n{self.log()}")

    def client(self, **kwargs: Any) -> Client:
        return Client(self.socket, **kwargs)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the real ``flowmason`` command against this daemon."""
        return subprocess.run([sys.executable, "-m", "flowmason_client.cli", "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the daemon (and nothing else: its stage processes are its own business)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def restart(self, **kwargs: Any) -> DaemonProcess:
        return self.start(**kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (it logs JSON when not on a TTY)."""
        events = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return events

    def wait_for_status(self, run_id: str, statuses: set[str], timeout: float = 30.0) -> dict[str, Any]:
        """Poll ``runs.show`` until the run is in one of ``statuses``."""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        with self.client() as client:
            while time.monotonic() < deadline:
                info = client.call("runs.show", {"run_id": run_id})
                if info["status"] in statuses:
                    return info
                time.sleep(0.05)
        raise AssertionError(f"run {run_id} still {info.get('status')} after {timeout}s:\n{self.log()[-4000:]}")


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for test configs: scalars, lists of scalars, nested tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for name, table in tables:
        text += f"\n[{prefix}{name}]\n" + _toml(table, prefix=f"{prefix}{name}.")
    return text


# -- peers under other uids (root only) ---------------------------------------------------------------
@contextmanager
def world_reachable_dir(prefix: str) -> Iterator[Path]:
    """A folder under /tmp that other uids can reach (pytest's tmp dirs are root-only), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def drop_to(uid: int) -> None:
    """In a forked child: become ``uid`` (group too, no supplementary groups)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def fork_as(uid: int, work: Callable[[int], Any]) -> tuple[int, int]:
    """Fork a child that drops to ``uid`` and runs ``work(write_fd)``; (pid, read end of its pipe).

    A failure in the child is written to the pipe as one ``{"child_error": ...}`` JSON line.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_fd)
            drop_to(uid)
            work(write_fd)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            os.write(write_fd, json.dumps({"child_error": repr(exc)}).encode() + b"\n")
            status = 1
        os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def in_child_as(uid: int, work: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``work`` in a forked child that dropped to ``uid``; (child pid, its JSON-able result)."""
    def report(write_fd: int) -> None:
        os.write(write_fd, json.dumps({"result": work()}).encode() + b"\n")

    pid, read_fd = fork_as(uid, report)
    with os.fdopen(read_fd) as inp:
        payload = json.loads(inp.read() or "{}")
    os.waitpid(pid, 0)
    assert "child_error" not in payload and "result" in payload, payload
    return pid, payload["result"]
