"""`validate FILE...`: output lines, --json, exit codes; once as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flowmasond.pipelines.validate_cli import main

GOOD = {"stages": [{"id": "a", "component_type": "echo"}, {"id": "b", "component_type": "echo",
                                                            "depends_on": ["a"]}]}
BAD = {"stages": [{"id": "a", "component_type": "echo", "depends_on": ["nope"]},
                  {"id": "b", "component_type": "echoo"}]}


def test_valid_file_prints_ok_and_exits_0(write_pipeline, registry_factory, capsys):
    """A valid file prints `ok  <file> (<n> stages)`."""
    path = write_pipeline(GOOD)
    assert main([str(path)], registry_factory=registry_factory) == 0
    assert capsys.readouterr().out == f"ok  {path} (2 stages)\n"


def test_invalid_file_prints_every_issue_and_exits_1(write_pipeline, registry_factory, capsys):
    """Each issue is one line naming file, stage and field."""
    path = write_pipeline(BAD)
    assert main([str(path)], registry_factory=registry_factory) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: stage 'a', field 'depends_on': depends on unknown stage 'nope' (stages: a, b)"
    assert lines[1].startswith(f"{path}: stage 'b', field 'component_type': unknown component type 'echoo'")
    assert len(lines) == 2


def test_one_bad_file_among_good_ones_exits_1(write_pipeline, registry_factory, capsys):
    """Every file is checked; the status is 1 if any has errors."""
    good, bad = write_pipeline(GOOD, name="good"), write_pipeline(BAD, name="bad")
    assert main([str(bad), str(good)], registry_factory=registry_factory) == 1
    out = capsys.readouterr().out
    assert f"ok  {good} (2 stages)" in out and f"{bad}: stage 'a'" in out


def test_json_output_lists_each_file(write_pipeline, registry_factory, capsys):
    """--json prints one object per file with ok and its issues."""
    good, bad = write_pipeline(GOOD, name="good"), write_pipeline(BAD, name="bad")
    assert main(["--json", str(good), str(bad)], registry_factory=registry_factory) == 1
    results = json.loads(capsys.readouterr().out)
    assert [(r["file"], r["ok"], len(r["issues"])) for r in results] == [(str(good), True, 0), (str(bad), False, 2)]
    assert results[1]["issues"][0] == {"file": str(bad), "stage": "a", "field": "depends_on",
                                       "message": "depends on unknown stage 'nope' (stages: a, b)",
                                       "severity": "error"}


def test_directory_argument_checks_every_pipeline_file_in_it(write_pipeline, registry_factory, capsys):
    """A directory stands for the *.pipeline.json files under it."""
    good = write_pipeline(GOOD, name="good")
    assert main([str(good.parent)], registry_factory=registry_factory) == 0
    assert capsys.readouterr().out == f"ok  {good} (2 stages)\n"


def test_no_arguments_is_a_usage_error(registry_factory, capsys):
    """Without files the command prints usage and exits 2."""
    assert main([], registry_factory=registry_factory) == 2
    assert "usage:" in capsys.readouterr().err


def test_unloadable_component_module_is_a_usage_error(write_pipeline, registry_factory, capsys):
    """--components naming a missing module exits 2 with the reason."""
    path = write_pipeline(GOOD)
    assert main(["--components", "no_such_module_xyz", str(path)], registry_factory=registry_factory) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_runs_as_a_module_in_a_subprocess(tmp_path: Path):
    """`python -m flowmasond.pipelines.validate_cli` checks files with the built-in registry, no daemon."""
    good = tmp_path / "good.pipeline.json"
    good.write_text(json.dumps({"stages": [
        {"id": "gate", "component": "conditional", "config": {"condition": "{{input.go}}",
                                                              "true_branch_stages": ["done"]}},
        {"id": "done", "component_type": "return", "config": {"return_value": "{{gate.output.branch}}"},
         "depends_on": ["gate"]}]}))
    bad = tmp_path / "bad.pipeline.json"
    bad.write_text('{"stages": [{"id": "r", "component_type": "return", "config": {"value": 1}}]}')
    # Unknown config keys are warnings; --strict makes them errors.
    proc = subprocess.run([sys.executable, "-m", "flowmasond.pipelines.validate_cli", "--strict", str(good), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"ok  {good} (2 stages)",
        f"{bad}: stage 'r', field 'config.value': unknown config key 'value' for component 'return' "
        "is ignored (accepted keys: condition, condition_expression, message, return_value, status)",
    ]


def test_unknown_key_is_a_warning_that_passes(write_pipeline, registry_factory, capsys):
    """A key unknown to FlowMason and to flowmasond is printed as a warning; the file still passes."""
    path = write_pipeline({"stages": [{"id": "a", "component_type": "echo", "depend_on": []}]})
    assert main([str(path)], registry_factory=registry_factory) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"ok  {path} (1 stages)",
                     f"{path}: warning: stage 'a', field 'depend_on': unknown stage key 'depend_on' is ignored "
                     "(did you mean 'depends_on'?)"]


def test_strict_turns_the_warning_into_an_error(write_pipeline, registry_factory, capsys):
    """With --strict the same file fails with the same message as an error."""
    path = write_pipeline({"stages": [{"id": "a", "component_type": "echo", "depend_on": []}]})
    assert main(["--strict", str(path)], registry_factory=registry_factory) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: stage 'a', field 'depend_on': unknown stage key 'depend_on' is ignored (did you mean 'depends_on'?)"]
