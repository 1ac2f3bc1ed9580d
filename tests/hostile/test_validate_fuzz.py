"""Generated pipeline documents through validation: only validation issues come out, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowmasond.engine.registry import ComponentRegistry
from flowmasond.errors import PipelineValidationError
from flowmasond.pipelines.loader import check_pipeline_file, load_pipeline_dict

REGISTRY = ComponentRegistry.with_builtins()
FIELDS = ["id", "name", "version", "description", "input_schema", "output_schema", "stages",
          "output_stage_id", "schedules", "$schema", "extends"]
STAGE_FIELDS = ["id", "component_type", "component", "name", "config", "depends_on", "timeout_ms",
                "retry_config", "on_error", "provider", "llm_settings", "position"]
CONFIG_KEYS = ["command", "parse_json", "items", "loop_stages", "condition", "true_branch_stages", "routes",
               "schema", "json_schema", "data", "url", "method", "prompt", "message", "env", "variables",
               "try_stages", "catch_stages", "pipeline_id", "return_value", "max_response_bytes"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["{{input.x}}", "{{upstream.a.b}}", "{{env.HOME}}",
                                                           "{{context.item}}", "{{a.output}}", "{{", "}}",
                                                           "*/5 * * * *", "a", "b"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
stage_ids = st.sampled_from(["a", "b", "c", "input", "x.y", "", "a/b"])


@st.composite
def stages(draw: st.DrawFn) -> dict[str, Any]:
    stage: dict[str, Any] = {"id": draw(stage_ids),
                             "component_type": draw(st.sampled_from([*REGISTRY.names(), "nope"]))}
    config = draw(st.dictionaries(st.sampled_from(CONFIG_KEYS), st.one_of(json_values, st.lists(stage_ids)),
                                  max_size=4))
    stage["config"] = config
    for key in draw(st.lists(st.sampled_from(STAGE_FIELDS), max_size=3)):
        stage[key] = draw(st.one_of(json_values, st.lists(stage_ids, max_size=3)))
    return stage


@st.composite
def documents(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not even an object
    doc: dict[str, Any] = {"id": draw(st.sampled_from(["p", "", "bad id"])),
                           "stages": draw(st.lists(stages(), max_size=5))}
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        doc[key] = draw(json_values)
    return doc


@settings(max_examples=300, deadline=None)
@given(documents())
def test_generated_documents_give_validation_issues_or_a_pipeline(doc: Any) -> None:
    """Any document either loads or raises PipelineValidationError whose issues all have messages."""
    try:
        pipeline = load_pipeline_dict(doc, REGISTRY, source="gen.pipeline.json")
    except PipelineValidationError as exc:
        assert exc.issues and all(issue.message for issue in exc.issues)
        assert all(issue.file == "gen.pipeline.json" for issue in exc.issues)
    else:
        assert pipeline.stages is not None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.text(alphabet="{}[]\",:0a \\\n", max_size=300)))
def test_generated_file_bytes_give_issues_never_a_crash(tmp_path: Path, data: bytes | str) -> None:
    """Arbitrary bytes and bracket soup in a pipeline file are reported as issues naming the file."""
    path = tmp_path / "gen.pipeline.json"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    check = check_pipeline_file(path, REGISTRY)
    assert check.ok or (check.issues and all(i.file == str(path) for i in check.issues))


@pytest.mark.parametrize("depth", [63, 65, 1000, 100_000])
def test_nesting_at_and_past_the_limit(tmp_path: Path, depth: int) -> None:
    """Nesting below max_json_depth parses normally; past it the issue names the limit, at any depth."""
    path = tmp_path / "deep.pipeline.json"
    value = "[" * (depth - 4) + "]" * (depth - 4)
    path.write_text('{"stages": [{"id": "a", "component_type": "logger", "config": {"message": ' + value + "}}]}")
    check = check_pipeline_file(path, REGISTRY)
    messages = " ".join(i.message for i in check.issues)
    if depth <= 64:
        assert "max_json_depth" not in messages
    else:
        assert f"nested {depth} levels deep; the limit is max_json_depth = 64" in messages


def test_a_string_flag_is_a_validation_error_naming_file_stage_and_field(tmp_path: Path) -> None:
    """`"parse_json": "yes"` is an issue naming the file, the stage and config.parse_json."""
    path = tmp_path / "flags.pipeline.json"
    path.write_text(json.dumps({"stages": [{"id": "run", "component_type": "shell",
                                            "config": {"command": "true", "parse_json": "yes"}}]}))
    check = check_pipeline_file(path, REGISTRY)
    (issue,) = check.issues
    assert (issue.file, issue.stage, issue.field) == (str(path), "run", "config.parse_json")
    assert "true or false" in issue.message


def test_an_invalid_input_schema_is_reported_at_load(tmp_path: Path) -> None:
    """input_schema is checked against the Draft 2020-12 meta-schema when the file loads."""
    path = tmp_path / "schema.pipeline.json"
    path.write_text(json.dumps({"input_schema": {"type": "strnig"},
                                "stages": [{"id": "a", "component_type": "logger", "config": {"message": "x"}}]}))
    (issue,) = check_pipeline_file(path, REGISTRY).issues
    assert issue.field == "input_schema" and issue.message.startswith("input_schema.type:")
