"""The ``shell`` operator against real subprocesses."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from pydantic import ValidationError

from flowmasond.engine.interfaces import ErrorType
from flowmasond.errors import ComponentError
from flowmasond.components.operators.shell import process_alive

RunOperator = Callable[..., Awaitable[Any]]

DEADLINE_S = 10.0  # generous: the machine is shared; polls return as soon as the condition holds


alive = process_alive  # one /proc reading, shared with the shell operator


async def wait_until(predicate, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def read_pids(path: Path, count: int) -> list[int]:
    """Wait until the child wrote ``count`` pids (one a line) to ``path``, and return them."""
    def ready() -> bool:
        return path.exists() and len(path.read_text().split()) >= count
    await wait_until(ready, f"{count} pids in {path}")
    return [int(p) for p in path.read_text().split()]


def env_lines(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


async def test_argv_list_is_executed_without_a_shell(run_operator: RunOperator) -> None:
    """A list command is exec'd directly: its arguments are not split or expanded."""
    out = await run_operator("shell", {"command": ["printf", "%s|", "a b", "$HOME"]})
    assert out.stdout == "a b|$HOME|"
    assert out.exit_code == 0


async def test_string_command_runs_through_sh(run_operator: RunOperator) -> None:
    """A string command is interpreted by /bin/sh (expansion, pipes)."""
    out = await run_operator("shell", {"command": "echo $((2 + 3)) | sed s/5/five/"})
    assert out.stdout == "five\n"


async def test_env_is_the_clean_base_plus_the_stage_env(run_operator: RunOperator,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The child inherits only the documented base (PATH, HOME, LANG...) and gets the stage's env on top."""
    monkeypatch.setenv("FM_TEST_SECRET", "from-daemon")
    monkeypatch.setenv("LANG", "C.UTF-8")
    out = await run_operator("shell", {"command": ["env"], "env": {"FM_TEST_OWN": "from-stage"}})
    env = env_lines(out.stdout)
    assert "FM_TEST_SECRET" not in env
    assert env["LANG"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"]
    assert env["FM_TEST_OWN"] == "from-stage"


async def test_inherit_env_false_starts_from_an_empty_environment(run_operator: RunOperator,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With inherit_env false the child sees only the stage env and the FLOWMASON_* variables."""
    monkeypatch.setenv("FM_TEST_INHERITED", "from-daemon")
    out = await run_operator("shell", {"command": ["env"], "env": {"ONLY": "1"}, "inherit_env": False})
    env = env_lines(out.stdout)
    assert {k for k in env if not k.startswith("FLOWMASON_")} == {"ONLY"}


async def test_idempotency_key_and_run_identity_are_in_the_child_env(run_operator: RunOperator) -> None:
    """The child sees its stable idempotency key, run id, stage path and attempt number."""
    out = await run_operator("shell", {"command": ["env"], "env": {"FLOWMASON_IDEMPOTENCY_KEY": "mine"}},
                             run_id="r-42", stage_id="load", stage_path="loop/3/load", attempt=2)
    env = env_lines(out.stdout)
    assert env["FLOWMASON_IDEMPOTENCY_KEY"] == "r-42/loop/3/load"
    assert env["FLOWMASON_RUN_ID"] == "r-42"
    assert env["FLOWMASON_STAGE_PATH"] == "loop/3/load"
    assert env["FLOWMASON_ATTEMPT"] == "2"


async def test_cwd_sets_the_working_directory(run_operator: RunOperator, tmp_path: Path) -> None:
    """The command runs in cwd."""
    out = await run_operator("shell", {"command": "pwd -P", "cwd": str(tmp_path)})
    assert out.stdout.strip() == os.path.realpath(tmp_path)


async def test_stdin_is_fed_to_the_child(run_operator: RunOperator) -> None:
    """stdin text reaches the child's standard input."""
    out = await run_operator("shell", {"command": ["cat"], "stdin": "hello\nworld"})
    assert out.stdout == "hello\nworld"


async def test_without_stdin_the_child_reads_end_of_file(run_operator: RunOperator) -> None:
    """A child reading stdin gets EOF at once instead of hanging on the daemon's stdin."""
    out = await run_operator("shell", {"command": ["cat"]})
    assert out.stdout == ""


async def test_stdin_ignored_by_the_child_is_not_an_error(run_operator: RunOperator) -> None:
    """A child that exits without reading a large stdin still succeeds (broken pipe is ignored)."""
    out = await run_operator("shell", {"command": ["true"], "stdin": "x" * 1_000_000})
    assert out.exit_code == 0


async def test_nonzero_exit_is_a_component_error_with_code_and_stderr_tail(run_operator: RunOperator) -> None:
    """check=true turns a non-zero exit into a retryable COMPONENT error quoting stderr."""
    with pytest.raises(ComponentError) as info:
        await run_operator("shell", {"command": "echo progress; echo 'disk on fire' >&2; exit 3"})
    assert info.value.error_type is ErrorType.COMPONENT
    assert info.value.context["exit_code"] == 3
    assert info.value.context["command"].startswith("echo progress")
    assert "exited with code 3" in info.value.message
    assert "disk on fire" in info.value.message


async def test_nonzero_exit_with_check_false_is_returned(run_operator: RunOperator) -> None:
    """check=false reports the exit code in the output instead of failing."""
    out = await run_operator("shell", {"command": "echo err >&2; exit 7", "check": False})
    assert (out.exit_code, out.stderr) == (7, "err\n")


async def test_parse_json_fills_the_json_field(run_operator: RunOperator) -> None:
    """parse_json parses stdout into the json output field."""
    out = await run_operator("shell", {"command": ["printf", '{"a": [1, 2], "b": null}'], "parse_json": True})
    assert out.json == {"a": [1, 2], "b": None}
    assert out.model_dump()["json"] == {"a": [1, 2], "b": None}


async def test_invalid_json_is_a_validation_error_naming_the_stage(run_operator: RunOperator) -> None:
    """parse_json on non-JSON stdout fails with VALIDATION and names the stage."""
    with pytest.raises(ComponentError) as info:
        await run_operator("shell", {"command": "echo not json", "parse_json": True}, stage_path="extract")
    assert info.value.error_type is ErrorType.VALIDATION
    assert "extract" in info.value.message


async def test_output_beyond_the_cap_is_truncated_and_flagged(run_operator: RunOperator) -> None:
    """Output past max_output_bytes is dropped (the child still runs to completion) and flagged."""
    out = await run_operator("shell", {"command": "head -c 300000 /dev/zero | tr '\\0' x; echo done >&2",
                                       "max_output_bytes": 1000})
    assert out.stdout == "x" * 1000
    assert out.truncated is True
    assert out.stderr == "done\n"


async def test_output_within_the_cap_is_not_flagged(run_operator: RunOperator) -> None:
    """Output exactly at the cap is complete and not flagged."""
    out = await run_operator("shell", {"command": ["printf", "12345"], "max_output_bytes": 5})
    assert (out.stdout, out.truncated) == ("12345", False)


async def test_missing_binary_is_a_configuration_error_naming_the_path(run_operator: RunOperator) -> None:
    """A command that does not exist is a non-retryable CONFIGURATION error with its path."""
    with pytest.raises(ComponentError) as info:
        await run_operator("shell", {"command": ["/nonexistent/fm-tool", "x"]})
    assert info.value.error_type is ErrorType.CONFIGURATION
    assert info.value.context["path"] == "/nonexistent/fm-tool"


async def test_missing_cwd_is_a_configuration_error_naming_it(run_operator: RunOperator, tmp_path: Path) -> None:
    """A cwd that does not exist is a CONFIGURATION error naming the directory."""
    missing = str(tmp_path / "nope")
    with pytest.raises(ComponentError) as info:
        await run_operator("shell", {"command": ["true"], "cwd": missing})
    assert info.value.error_type is ErrorType.CONFIGURATION
    assert info.value.context["path"] == missing


async def test_non_executable_file_is_a_permission_error(run_operator: RunOperator, tmp_path: Path) -> None:
    """Exec of a file without the execute bit is a PERMISSION error with its path."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(ComponentError) as info:
        await run_operator("shell", {"command": [str(script)]})
    assert info.value.error_type is ErrorType.PERMISSION
    assert info.value.context["path"] == str(script)


async def test_empty_command_is_rejected_by_the_input_model(registry) -> None:
    """An empty command or argv fails Input validation."""
    model = registry.meta("shell").input_model
    for command in ("", []):
        with pytest.raises(ValidationError):
            model.model_validate({"command": command})


async def test_cancelling_the_task_kills_the_whole_process_group(run_operator: RunOperator, tmp_path: Path) -> None:
    """Run cancellation SIGTERMs the shell and its backgrounded grandchildren, then re-raises."""
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run_operator(
        "shell", {"command": f"sleep 60 & echo $! >> {pidfile}; sleep 60 & echo $! >> {pidfile}; "
                             f"echo $$ >> {pidfile}; wait"}))
    pids = await read_pids(pidfile, 3)
    assert all(alive(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not any(alive(pid) for pid in pids), "the process group to exit")


async def test_timeout_kills_the_whole_process_group(run_operator: RunOperator, tmp_path: Path) -> None:
    """An asyncio.timeout expiring (the engine's per-attempt timeout) kills every process of the group."""
    pidfile = tmp_path / "pids"
    scopes: list[asyncio.Timeout] = []

    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text("import os, sys, time\n"
                          "with open(sys.argv[1], 'a') as f:\n    f.write(f'{os.getpid()}\\n')\n"
                          "time.sleep(60)\n")

    async def with_timeout() -> None:
        async with asyncio.timeout(None) as scope:
            scopes.append(scope)
            # A pipeline: the python grandchild is not a direct child of ours.
            await run_operator("shell", {"command": f"echo $$ >> {pidfile}; "
                                                    f"{sys.executable} {grandchild} {pidfile} | cat"})

    task = asyncio.create_task(with_timeout())
    pids = await read_pids(pidfile, 2)
    scopes[0].reschedule(asyncio.get_running_loop().time())
    with pytest.raises(TimeoutError):
        await task
    await wait_until(lambda: not any(alive(pid) for pid in pids), "the process group to exit")


async def test_sigterm_is_sent_first_so_the_child_can_clean_up(run_operator: RunOperator, tmp_path: Path) -> None:
    """On cancellation the group first receives SIGTERM, which a trap can handle."""
    marker = tmp_path / "terminated"
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run_operator(
        "shell", {"command": f"trap 'echo term > {marker}; exit 0' TERM; echo $$ > {pidfile}; "
                             f"while :; do sleep 0.05; done"}))
    pids = await read_pids(pidfile, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not alive(pids[0]), "the shell to exit")
    assert marker.read_text() == "term\n"


async def test_a_group_ignoring_sigterm_is_killed_after_the_grace(run_operator: RunOperator, tmp_path: Path) -> None:
    """Processes that ignore SIGTERM are SIGKILLed once kill_grace_s has passed."""
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run_operator(
        "shell", {"command": f"trap '' TERM; sleep 60 & echo $! >> {pidfile}; echo $$ >> {pidfile}; wait",
                  "kill_grace_s": 0.2}))
    pids = await read_pids(pidfile, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not any(alive(pid) for pid in pids), "the SIGTERM-proof group to be killed")


async def test_grandchildren_outliving_the_leader_are_killed(run_operator: RunOperator, tmp_path: Path) -> None:
    """A grandchild that ignores SIGTERM and left our pipes is SIGKILLed even though the leader died at once."""
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run_operator(
        "shell", {"command": f"(trap '' TERM; exec sleep 60 >/dev/null 2>&1) & echo $! >> {pidfile}; echo $$ >> {pidfile}; wait",
                  "kill_grace_s": 0.2}))
    pids = await read_pids(pidfile, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not any(alive(pid) for pid in pids), "the orphaned grandchild to be killed")
