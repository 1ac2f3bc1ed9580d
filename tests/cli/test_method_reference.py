"""The README's socket method reference is generated from the protocol's method table and matches it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from flowmason_client.cli_ops import method_reference
from flowmason_client.protocol import METHODS
from flowmasond.api.methods import build_dispatcher
from flowmasond.config import LimitsConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- methods:begin -->\n(.*?)<!-- methods:end -->", text, re.DOTALL)
    assert match, "README.md has no <!-- methods:begin/end --> section"
    return match.group(1)


def test_readme_method_reference_is_the_generated_one() -> None:
    """The README's section is byte for byte what `flowmason methods --markdown` prints."""
    printed = subprocess.run([sys.executable, "-m", "flowmason_client.cli", "methods", "--markdown"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == method_reference()
    assert _readme_section() == printed, "regenerate it: flowmason methods --markdown"


def test_method_reference_lists_every_method_with_its_access() -> None:
    """Each method of the table has one row naming who may call it."""
    rows = [line for line in method_reference().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == sorted(METHODS)
    for row in rows:
        name = row.split("`")[1]
        assert ("| privileged |" in row) == METHODS[name].mutating, row


def test_the_daemon_registers_exactly_the_methods_of_the_table() -> None:
    """The daemon's dispatcher and the protocol's table name the same methods, so the reference
    documents what the socket answers."""
    fake = SimpleNamespace(runs=None, journal=None, catalog=None, config=SimpleNamespace(limits=LimitsConfig()))
    assert set(build_dispatcher(fake)) == set(METHODS)  # type: ignore[arg-type]


def test_every_method_has_a_summary() -> None:
    """No row of the reference is left without a description."""
    assert [name for name, spec in METHODS.items() if not spec.summary] == []
