"""The ``shell`` operator: run a command in its own process group and kill the whole group on cancel.

Why the care: the engine enforces timeouts and run cancellation by cancelling the stage's task. A
plain ``proc.kill()`` would reach only the direct child, leaving ``sh -c 'a | b'`` pipelines and
backgrounded grandchildren running, holding our pipes open and doing work nobody waits for. So the
child starts a new session (its pid is the process-group id) and on cancellation the group gets
SIGTERM, then SIGKILL after a grace period, before the ``CancelledError`` propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from flowmasond.components.operators import shadowing_fields
from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.registry import ComponentInput, ComponentOutput, operator
from flowmasond.engine.interfaces import ErrorType
from flowmasond.engine.stage_logs import byte_forwarder
from flowmasond.environment import stage_base_env
from flowmasond.errors import ComponentError

# Long enough for a well-behaved program to flush and exit on SIGTERM; the Input may override it.
DEFAULT_KILL_GRACE_S = 5.0
# Enough for any output a pipeline should template onward; beyond it we keep draining (so the child
# never blocks on a full pipe) but drop the bytes, and flag the truncation.
DEFAULT_MAX_OUTPUT_BYTES = 10 * 1024 * 1024
# How much of stderr a failure message quotes: the end is where programs put their final error.
ERROR_TAIL_CHARS = 2000
# After SIGKILL the leader is reaped within milliseconds unless stuck in the kernel (D state).
_REAP_AFTER_KILL_S = 1.0
_READ_CHUNK = 64 * 1024
_GROUP_POLL_S = 0.02


@operator("shell", description="Run a command (argv list, or a string through /bin/sh -c).",
          safe_to_repeat=True)
class Shell:
    """Run a command in its own process group; stdout/stderr captured, the group killed on cancel.

    Safe to repeat because the child sees ``FLOWMASON_IDEMPOTENCY_KEY`` (stable across retries and
    resumes) and ``FLOWMASON_ATTEMPT``: a command with side effects can deduplicate on them.
    """

    class Input(ComponentInput):
        # The engine never pastes a template value into a string command: it becomes a variable
        # of the child's environment (named in `env`), referenced from the command, so it stays data.
        shell_templates: ClassVar[tuple[str, str]] = ("command", "env")

        command: str | list[str] = Field(min_length=1)
        # Any JSON value, so that `{"N": "{{upstream.count.n}}"}` works: scalars as text, lists and
        # objects as compact JSON, None as an empty string (like an unset variable in a shell).
        env: dict[str, Any] = Field(default_factory=dict)
        inherit_env: bool = True
        cwd: str | None = None
        stdin: str | None = None
        parse_json: bool = False
        check: bool = True
        max_output_bytes: int = Field(default=DEFAULT_MAX_OUTPUT_BYTES, gt=0)
        kill_grace_s: float = Field(default=DEFAULT_KILL_GRACE_S, ge=0)

    with shadowing_fields():
        class Output(ComponentOutput):
            stdout: str
            stderr: str
            exit_code: int
            json: Any = None
            truncated: bool = False

    async def execute(self, input: Input, context: ExecutionContext) -> Output:
        argv = ["/bin/sh", "-c", input.command] if isinstance(input.command, str) else list(input.command)
        proc = await _spawn(argv, input, context)
        stdin_data = input.stdin.encode() if input.stdin is not None else None
        try:
            (out, out_truncated), (err, err_truncated), _, exit_code = await asyncio.gather(
                _read_capped(proc.stdout, input.max_output_bytes, byte_forwarder(context, "stdout")),
                _read_capped(proc.stderr, input.max_output_bytes, byte_forwarder(context, "stderr")),
                _feed(proc.stdin, stdin_data),
                proc.wait(),
            )
        except BaseException:
            # CancelledError (timeout or run cancellation) or a failure reading the pipes.
            await _terminate_group(proc, input.kill_grace_s)
            raise

        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        if input.check and exit_code != 0:
            raise _exit_error(exit_code, stdout, stderr, input, context)
        parsed = _parse_json(stdout, out_truncated, context) if input.parse_json else None
        return self.Output(stdout=stdout, stderr=stderr, exit_code=exit_code, json=parsed,
                           truncated=out_truncated or err_truncated)


def _env_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def child_env(input: Shell.Input, context: ExecutionContext) -> dict[str, str]:
    """The child's environment: a clean base (unless not inherited), the stage's env, our run identity.

    The base is ``flowmasond.environment.STAGE_BASE_ENV`` plus the daemon's ``env_allow`` names,
    never the whole daemon environment: it may hold secrets a pipeline author must not read.
    """
    env = stage_base_env(context.services.get("env_allow", ())) if input.inherit_env else {}
    env.update({key: _env_text(value) for key, value in input.env.items()})
    # Set last so a pipeline cannot accidentally mask the key its commands deduplicate on.
    env.update({
        "FLOWMASON_IDEMPOTENCY_KEY": context.idempotency_key,
        "FLOWMASON_RUN_ID": context.run_id,
        "FLOWMASON_PIPELINE_ID": context.pipeline_id,
        "FLOWMASON_STAGE_ID": context.stage_id,
        "FLOWMASON_STAGE_PATH": context.stage_path,
        "FLOWMASON_ATTEMPT": str(context.attempt),
    })
    trace = context.services.get("traceparent")
    parent = trace(context.run_id, context.stage_path) if trace is not None else None
    if parent:  # W3C trace context, for commands that report their own spans
        env["TRACEPARENT"] = parent
    return env


async def _spawn(argv: list[str], input: Shell.Input, context: ExecutionContext) -> asyncio.subprocess.Process:
    spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input.stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=input.cwd,
        env=child_env(input, context),
        start_new_session=True,
    ))
    try:
        # Shielded: a cancellation arriving mid-spawn must not lose the handle of a child that exists.
        return await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await _terminate_group(await spawn, input.kill_grace_s)
        raise
    except OSError as exc:
        raise _launch_error(exc, argv, input, context) from exc


def _launch_error(exc: OSError, argv: list[str], input: Shell.Input, context: ExecutionContext) -> ComponentError:
    path = exc.filename or argv[0]
    if isinstance(exc, PermissionError):
        error_type = ErrorType.PERMISSION
    elif isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        error_type = ErrorType.CONFIGURATION
    else:  # EAGAIN, ENOMEM...: the machine is busy; another attempt may get through
        error_type = ErrorType.COMPONENT
    return ComponentError(f"cannot launch command: {exc.strerror or exc}", error_type=error_type,
                          stage=context.stage_path, path=path, cwd=input.cwd)


async def _read_capped(stream: asyncio.StreamReader | None, limit: int,
                       forward: Callable[[bytes, bool], None] | None = None) -> tuple[bytes, bool]:
    """Read to EOF keeping at most ``limit`` bytes; keep draining past it so the child never blocks.

    ``forward`` gets every chunk as it arrives (the stage log; it applies its own bound).
    """
    if stream is None:
        return b"", False
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(_READ_CHUNK):
        if forward is not None:
            forward(chunk, False)
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            truncated = True
    if forward is not None:
        forward(b"", True)
    return bytes(kept), truncated


async def _feed(stream: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if stream is None:
        return
    try:
        if data:
            stream.write(data)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child need not read its stdin
    finally:
        stream.close()


async def _terminate_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL whatever is left after ``grace_s``."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    _signal_group(pgid, signal.SIGTERM)
    try:
        exited = await _wait_group_exit(proc, pgid, grace_s)
    except asyncio.CancelledError:
        _signal_group(pgid, signal.SIGKILL)  # cancelled again while waiting: no more grace
        raise
    if not exited:
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _REAP_AFTER_KILL_S)


async def _wait_group_exit(proc: asyncio.subprocess.Process, pgid: int, grace_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        return False
    # The leader is gone; grandchildren that outlived it are still in the group.
    while group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL_S)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for zombies, which an init that does not reap (containers) leaves behind
    # forever; on Linux look at the members' states instead.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _proc_stat(int(entry))
        if fields is not None and len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in _DEAD:
            return True
    return False


_DEAD = (b"Z", b"X")  # zombie, dead: gone as far as a stage is concerned


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    return stat[stat.rfind(b")") + 2:].split()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie nobody reaps (containers) counts as gone."""
    fields = _proc_stat(pid)
    return fields is not None and bool(fields) and fields[0] not in _DEAD


def _exit_error(exit_code: int, stdout: str, stderr: str, input: Shell.Input,
                context: ExecutionContext) -> ComponentError:
    if exit_code < 0:
        try:
            what = f"command killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            what = f"command killed by signal {-exit_code}"
    else:
        what = f"command exited with code {exit_code}"
    # Programs that report errors on stdout still deserve a useful message.
    tail = (stderr.strip() or stdout.strip())[-ERROR_TAIL_CHARS:]
    message = f"{what}: {tail}" if tail else what
    return ComponentError(message, error_type=ErrorType.COMPONENT, stage=context.stage_path,
                          exit_code=exit_code, command=_describe(input.command))


def _describe(command: str | list[str]) -> str:
    text = command if isinstance(command, str) else shlex.join(command)
    return text if len(text) <= 200 else text[:197] + "..."


def _parse_json(stdout: str, truncated: bool, context: ExecutionContext) -> Any:
    try:
        return json.loads(stdout)
    except ValueError as exc:
        why = " (stdout was truncated at max_output_bytes)" if truncated else ""
        raise ComponentError(f"stage '{context.stage_path}': stdout is not valid JSON: {exc}{why}",
                             error_type=ErrorType.VALIDATION, stage=context.stage_path,
                             stdout_head=stdout[:200]) from exc
