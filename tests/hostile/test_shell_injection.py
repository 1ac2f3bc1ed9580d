"""Template values in string shell commands arrive as data: real engine, real /bin/sh, bytes compared.

Each payload tries to run `touch <marker>`; the oracle is the file system, not our code: the marker
must not exist, and the file the command wrote must hold exactly the payload's bytes.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowmasond.engine.interfaces import RunStatus
from flowmasond.testing import run_pipeline


def payloads(marker: Path) -> list[str]:
    """The classic ways out of a shell word, each trying to create ``marker``."""
    touch = f"touch {marker}"
    return [
        f"bob; {touch}",
        f"bob && {touch}",
        f"bob || {touch}",
        f"bob | {touch}",
        f"$({touch})",
        f"`{touch}`",
        f"bob\n{touch}",
        f"bob\r\n{touch}\n",
        f"'; {touch}; '",
        f'"; {touch}; "',
        f"\"$({touch})\"",
        f"'$({touch})'",
        f"\\'; {touch}; \\'",
        f"bob & {touch} &",
        f"> {marker}",
        f"${{IFS}}{touch}",
        "*", "?", "[a-z]*", "~", "~root", "$HOME", "${PATH}", "$0", "$@", "$((1+1))",
        "-n", "--", "-e \\x41", "%s%n%d", "\\", "", " ", "  leading and trailing  ",
        "{a,b}", "!", "#comment", "a\tb", "ünïcødé ✓",
    ]


def write_stage(command: str) -> dict[str, Any]:
    return {"id": "write", "component": "shell", "config": {"command": command}}


# One command per quoting context a template can sit in: plain, inside "...", inside '...'.
CONTEXTS = {
    "plain": ("printf '%s' {{input.p}} > {{input.out}}", "{}"),
    "double": ("printf '%s' \"<{{input.p}}>\" > \"{{input.out}}\"", "<{}>"),
    "single": ("printf '%s' '<{{input.p}}>' > '{{input.out}}'", "<{}>"),
    "mixed": ("printf '%s' x{{input.p}}\"y\"'z' > {{input.out}}", "x{}yz"),
}


async def run_write(command: str, inputs: dict[str, Any]) -> RunStatus:
    outcome = await run_pipeline({"stages": [write_stage(command)]}, inputs)
    return outcome.status


@pytest.mark.parametrize("context", sorted(CONTEXTS))
async def test_run_inputs_arrive_as_data_in_every_quoting_context(tmp_path: Path, context: str) -> None:
    """Each classic payload in a run input is printed byte for byte, and its command never runs."""
    marker = tmp_path / "INJECTED"
    command, expected = CONTEXTS[context]
    for index, payload in enumerate(payloads(marker)):
        out = tmp_path / f"out {index}; $(x).txt"  # the path is a template value too
        status = await run_write(command, {"p": payload, "out": str(out)})
        assert status is RunStatus.SUCCEEDED, payload
        assert out.read_bytes() == expected.format(payload).encode(), payload
        assert not marker.exists(), f"payload ran: {payload!r}"


async def test_upstream_outputs_arrive_as_data(tmp_path: Path) -> None:
    """A payload produced by an upstream stage is data in a downstream string command."""
    marker = tmp_path / "INJECTED"
    for index, payload in enumerate(payloads(marker)):
        out = tmp_path / f"up-{index}"
        outcome = await run_pipeline({"stages": [
            {"id": "produce", "component": "variable_set", "config": {"variables": {"p": payload}}},
            {"id": "write", "component": "shell", "depends_on": ["produce"],
             "config": {"command": f"printf '%s' {{{{upstream.produce.variables.p}}}} > '{out}'"}},
        ]})
        assert outcome.status is RunStatus.SUCCEEDED, payload
        assert out.read_bytes() == payload.encode(), payload
    assert not marker.exists()


async def test_shell_stdout_passed_downstream_arrives_as_data(tmp_path: Path) -> None:
    """A shell stage's own stdout (an attacker-controlled program's output) is data for the next one."""
    marker = tmp_path / "INJECTED"
    payload = f"x; touch {marker} $(touch {marker}) `touch {marker}`"
    out = tmp_path / "out"
    outcome = await run_pipeline({"stages": [
        {"id": "emit", "component": "shell", "config": {"command": ["printf", "%s", payload]}},
        {"id": "write", "component": "shell", "depends_on": ["emit"],
         "config": {"command": f"printf '%s' \"{{{{upstream.emit.stdout}}}}\" > '{out}'"}},
    ]})
    assert outcome.status is RunStatus.SUCCEEDED
    assert out.read_bytes() == payload.encode()
    assert not marker.exists()


async def test_loop_items_arrive_as_data(tmp_path: Path) -> None:
    """Every foreach item, hostile ones included, is printed exactly into its own file."""
    marker = tmp_path / "INJECTED"
    items = payloads(marker)
    outcome = await run_pipeline({"stages": [
        {"id": "each", "component": "foreach",
         "config": {"items": "{{input.items}}", "loop_stages": ["write"], "parallel": False}},
        {"id": "write", "component": "shell",
         "config": {"command": f"printf '%s' {{{{context.item}}}} > '{tmp_path}/item-'{{{{context.index}}}}"}},
    ]}, {"items": items})
    assert outcome.status is RunStatus.SUCCEEDED
    for index, item in enumerate(items):
        assert (tmp_path / f"item-{index}").read_bytes() == item.encode(), item
    assert not marker.exists()


async def test_a_whole_command_from_a_template_is_one_word(tmp_path: Path) -> None:
    """A string command that is one template runs the value as one program name, never parsed."""
    marker = tmp_path / "INJECTED"
    outcome = await run_pipeline({"stages": [
        {"id": "run", "component": "shell", "config": {"command": "{{input.cmd}}"}}]},
        {"cmd": f"true; touch {marker}"})
    assert outcome.status is RunStatus.FAILED  # no program is called "true; touch ..."
    assert not marker.exists()


async def test_a_template_list_is_the_argv_form(tmp_path: Path) -> None:
    """A string command that is one template resolving to a list runs as argv, without a shell."""
    out = tmp_path / "argv"
    outcome = await run_pipeline({"stages": [
        {"id": "run", "component": "shell", "config": {"command": "{{input.argv}}"}}]},
        {"argv": ["sh", "-c", f"printf '%s' \"$1\" > '{out}'", "sh", "a; b"]})
    assert outcome.status is RunStatus.SUCCEEDED
    assert out.read_bytes() == b"a; b"


async def test_argv_and_env_forms_are_unchanged(tmp_path: Path) -> None:
    """In the argv form and in env a template value is passed verbatim, as before."""
    marker = tmp_path / "INJECTED"
    payload = f"a; touch {marker}"
    outcome = await run_pipeline({"stages": [
        {"id": "argv", "component": "shell", "config": {"command": ["printf", "%s|", "{{input.p}}"]}},
        {"id": "env", "component": "shell",
         "config": {"command": "printf '%s' \"$P\"", "env": {"P": "{{input.p}}"}}},
    ]}, {"p": payload})
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.results["argv"].output["stdout"] == payload + "|"
    assert outcome.results["env"].output["stdout"] == payload
    assert not marker.exists()


# Printable text with every shell metacharacter well represented, plus arbitrary unicode.
_SHELLISH = st.lists(st.sampled_from([*string.printable, "$(", "${", "'\\''", "\"$(", "`id`"]),
                     max_size=30).map("".join)
_UNICODE = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(_SHELLISH, _UNICODE), context=st.sampled_from(sorted(CONTEXTS)))
async def test_generated_payloads_arrive_as_data(tmp_path: Path, payload: str, context: str) -> None:
    """Any generated string (no NUL: the OS forbids it in arguments) is printed back byte for byte."""
    out = tmp_path / "generated"
    command, expected = CONTEXTS[context]
    status = await run_write(command, {"p": payload, "out": str(out)})
    assert status is RunStatus.SUCCEEDED
    assert out.read_bytes() == expected.format(payload).encode()
    out.unlink()


async def test_a_template_after_a_backslash_is_refused(tmp_path: Path) -> None:
    """`\\{{x}}` would escape the reference's own quote: the stage fails with a clear message instead."""
    outcome = await run_pipeline({"stages": [write_stage("printf '%s' \\{{input.p}}")]}, {"p": "a; b"})
    assert outcome.status is RunStatus.FAILED
    assert "may not follow a backslash" in (outcome.results["write"].error or "")
