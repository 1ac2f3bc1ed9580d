"""Helpers for the daemon acceptance tests: pipeline builders, ledgers, raw socket exchanges, polling.

Shell stages are the side-effect ledger: each appends ``<stage path> <attempt>`` to a file before
doing its work, so a test sees exactly which stages ran, how often and in what order.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# Appended by every ledger stage before its work: the stage path and the engine's attempt number.
LEDGER_LINE = 'echo "$FLOWMASON_STAGE_PATH $FLOWMASON_ATTEMPT" >> "$LEDGER"'


def shell_stage(stage_id: str, command: str, *, ledger: Path | str = "{{input.ledger}}",
                depends_on: list[str] | None = None, gate: str | None = None, **extra: Any) -> dict[str, Any]:
    """A shell stage that writes itself into ``ledger`` and then runs ``command``.

    By default the ledger's path is the run's ``ledger`` input, so one pipeline file serves every
    test (each with its own ledger); with ``gate``, ``$GATE`` is the run input of that name.
    """
    stage: dict[str, Any] = {
        "id": stage_id, "component_type": "shell",
        # kill_grace_s: a cancelled `sleep` dies on SIGTERM; no reason to wait for SIGKILL.
        "config": {"command": f"{LEDGER_LINE}; {command}",
                   "env": {"LEDGER": str(ledger)}, "kill_grace_s": 0.5},
    }
    if gate:
        stage["config"]["env"]["GATE"] = "{{input.%s}}" % gate
    if depends_on:
        stage["depends_on"] = depends_on
    stage.update(extra)
    return stage


# Blocks until the file named by the run's `gate` input exists: a stage that is "long" for exactly as
# long as the test wants, without sleeping on a guess.
WAIT_FOR_GATE = 'while [ ! -e "$GATE" ]; do sleep 0.02; done'


# one -> two -> wait (blocks until the run's `gate` file exists) -> last.
GATED: dict[str, Any] = {
    "id": "gated",
    "stages": [
        shell_stage("one", "true"),
        shell_stage("two", "true", depends_on=["one"]),
        shell_stage("wait", WAIT_FOR_GATE, depends_on=["two"], gate="gate"),
        shell_stage("last", "true", depends_on=["wait"]),
    ],
}


def read_ledger(ledger: Path) -> list[str]:
    """The ledger's lines (``"<path> <attempt>"``), in the order the stages wrote them."""
    if not ledger.exists():
        return []
    return [line for line in ledger.read_text().splitlines() if line]


def ran(ledger: Path, path: str) -> list[int]:
    """The attempt numbers with which the stage at ``path`` started, in order."""
    return [int(line.split()[1]) for line in read_ledger(ledger) if line.split()[0] == path]


def wait_until(predicate: Callable[[], T], *, timeout: float = 20.0, what: str = "condition",
               interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def journal_run(state_dir: Path, run_id: str) -> dict[str, Any]:
    """The run's row read straight from the journal file (read-only; no daemon involved)."""
    conn = sqlite3.connect(f"file:{state_dir / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT status, error, recovery_attempts FROM runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        assert row is not None, f"run {run_id} is not in the journal"
        results = {r["path"]: r["status"] for r in conn.execute(
            "SELECT path, status FROM run_records WHERE run_id = ? AND kind = 'result' ORDER BY seq", (run_id,))}
    finally:
        conn.close()
    return {"status": row["status"], "error": json.loads(row["error"]) if row["error"] else None,
            "recovery_attempts": row["recovery_attempts"], "results": results}


def exchange(socket_path: Path, payload: bytes, *, timeout: float = 10.0) -> tuple[list[bytes], bool]:
    """Send raw bytes, half-close, read until the daemon closes; returns (reply lines, closed cleanly).

    The half-close tells the daemon we sent everything, so it answers and then closes; a reset
    after the reply (the daemon refusing an oversized line) still counts as a close.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    received = b""
    closed = False
    try:
        sock.connect(str(socket_path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-line: whatever it answered is still in our receive buffer
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        sock.close()
    return [line for line in received.split(b"\n") if line], closed



def race(socket_path: Path, calls: list[tuple[str, dict[str, Any]]], *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Send each call on its own connection, all connected first and sent back to back; the replies in order.

    The daemon reads the requests in the same loop turns, so they race inside it as closely as
    two clients can make them. Each reply is the decoded JSON-RPC response (``result`` or ``error``).
    """
    sockets = []
    try:
        for _ in calls:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sockets.append(sock)
        for n, (sock, (method, params)) in enumerate(zip(sockets, calls, strict=True)):
            sock.sendall(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}).encode() + b"\n")
        replies = []
        for sock in sockets:
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            replies.append(json.loads(data.split(b"\n", 1)[0]))
        return replies
    finally:
        for sock in sockets:
            sock.close()
