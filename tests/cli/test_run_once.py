"""`flowmasond run-once`: run a file in the foreground, without a daemon (issue 2, item 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "pipelines"


def _run_once(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowmasond.cli", "run-once", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_the_nightly_example_runs_with_its_subpipelines_and_prints_each_stage() -> None:
    """The README's first command: every stage is printed as it finishes, then the output; exit 0."""
    result = _run_once(str(EXAMPLES / "nightly.pipeline.json"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("ok") and "run_etl (subpipeline)" in line for line in lines)
    assert any("each_record/2/transform" in line for line in lines)
    assert "status: succeeded" in lines
    output = json.loads(result.stdout[result.stdout.index("{"):])
    assert [r["result"]["blocks"] for r in output["result"]["records"]] == [1536, 2560, 4096]


def test_inputs_are_given_with_dash_i_and_checked_against_the_input_schema() -> None:
    """-i key=value feeds the run; a missing required input fails with exit 1 naming it."""
    ok = _run_once(str(EXAMPLES / "triage.pipeline.json"), "-i", "severity=critical", "-i", "message=disk full")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout[ok.stdout.index("{"):])["result"]["route"] == "critical"
    missing = _run_once(str(EXAMPLES / "triage.pipeline.json"), "-i", "severity=critical")
    assert missing.returncode == 1
    assert "message" in missing.stderr


def test_a_failing_stage_exits_one_with_the_stage_and_error(tmp_path: Path) -> None:
    """A run whose stage fails prints the failure line and exits 1."""
    path = tmp_path / "boom.pipeline.json"
    path.write_text(json.dumps({"id": "boom", "stages": [
        {"id": "explode", "component_type": "fail", "config": {"message": "kaboom", "error_type": "VALIDATION"}}]}))
    result = _run_once(str(path))
    assert result.returncode == 1
    assert "FAILED explode" in result.stdout and "kaboom" in result.stdout
    assert "status: failed" in result.stdout


def test_an_invalid_file_reports_every_error_and_runs_nothing(tmp_path: Path) -> None:
    """A file with an error and a warning prints both (file, stage, field) and exits 1 without running."""
    path = tmp_path / "bad.pipeline.json"
    path.write_text(json.dumps({"id": "bad", "stages": [
        {"id": "a", "component_type": "shell", "config": {"command": "true", "colour": "red"}},
        {"id": "b", "component_type": "logger", "depends_on": ["ghost"], "config": {"message": "x"}}]}))
    result = _run_once(str(path))
    assert result.returncode == 1
    assert "warning: stage 'a', field 'config.colour'" in result.stderr and "ghost" in result.stderr
    assert "run bad" not in result.stdout


def test_a_run_without_subpipelines_does_not_read_the_files_beside_it(tmp_path: Path) -> None:
    """The folder is read for subpipelines only: a broken file beside a one-stage pipeline is
    neither reported nor in the way."""
    (tmp_path / "one.pipeline.json").write_text(json.dumps({
        "id": "one", "name": "one", "version": "1.0.0",
        "stages": [{"id": "say", "component_type": "logger", "config": {"message": "hi"}}]}))
    (tmp_path / "broken.pipeline.json").write_text("{ not json")
    result = _run_once(str(tmp_path / "one.pipeline.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "status: succeeded" in result.stdout
    assert "broken" not in result.stderr


def test_a_subpipeline_is_found_beside_the_file_despite_a_broken_sibling(tmp_path: Path) -> None:
    """The first subpipeline lookup reads the folder; the valid child runs, the broken file is reported."""
    (tmp_path / "parent.pipeline.json").write_text(json.dumps({
        "id": "parent", "name": "parent", "version": "1.0.0",
        "stages": [{"id": "call", "component_type": "subpipeline", "config": {"pipeline_id": "child"}}]}))
    (tmp_path / "child.pipeline.json").write_text(json.dumps({
        "id": "child", "name": "child", "version": "1.0.0",
        "stages": [{"id": "say", "component_type": "logger", "config": {"message": "from the child"}}]}))
    (tmp_path / "broken.pipeline.json").write_text("{ not json")
    result = _run_once(str(tmp_path / "parent.pipeline.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "from the child" in result.stdout
    assert "broken" in result.stderr
