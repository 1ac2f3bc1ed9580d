"""Loading pipeline files: JSON errors, default ids, pydantic errors as located issues, all issues at once."""

from __future__ import annotations

import pytest

from flowmasond.errors import PipelineValidationError
from flowmasond.pipelines.loader import (
    check_pipeline_file,
    load_pipeline_dict,
    load_pipeline_file,
    pipeline_id_from_path,
)

ONE_STAGE = {"stages": [{"id": "a", "component_type": "echo"}]}


def test_id_defaults_to_file_name_without_pipeline_json(write_pipeline, registry):
    """`etl.pipeline.json` without an id gets the id `etl`."""
    config = load_pipeline_file(write_pipeline(ONE_STAGE, name="etl"), registry)
    assert config.id == "etl"


def test_id_defaults_to_file_name_without_json(tmp_path, registry):
    """`report.json` without an id gets the id `report`."""
    path = tmp_path / "report.json"
    path.write_text('{"stages": [{"id": "a", "component_type": "echo"}]}')
    assert load_pipeline_file(path, registry).id == "report"
    assert pipeline_id_from_path("/x/y/z.pipeline.json") == "z"


def test_explicit_id_wins_over_file_name(write_pipeline, registry):
    """An id in the file is kept."""
    config = load_pipeline_file(write_pipeline({**ONE_STAGE, "id": "custom"}, name="etl"), registry)
    assert config.id == "custom"


def test_component_alias_is_accepted(write_pipeline, registry):
    """FlowMason's `component` field works as `component_type`."""
    config = load_pipeline_file(write_pipeline({"stages": [{"id": "a", "component": "echo"}]}), registry)
    assert config.stages[0].component_type == "echo"


def test_invalid_json_is_one_issue_with_line_and_column(write_pipeline, registry):
    """Broken JSON yields a single issue locating the syntax error."""
    path = write_pipeline('{\n  "stages": [\n    {"id": "a",, }\n  ]\n}')
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline_file(path, registry)
    [issue] = caught.value.issues
    assert issue.file == str(path)
    assert "invalid JSON at line 3, column 16" in issue.message


def test_json_that_is_not_an_object(write_pipeline, registry):
    """A top-level list is rejected with one issue."""
    check = check_pipeline_file(write_pipeline("[1, 2]"), registry)
    assert [i.message for i in check.issues] == ["a pipeline file must hold a JSON object, not a list"]


def test_duplicate_json_key_is_reported(write_pipeline, registry):
    """A key given twice would silently lose a value, so it is an error."""
    path = write_pipeline('{"stages": [{"id": "a", "component_type": "echo", '
                          '"config": {"message": 1, "message": 2}}]}')
    check = check_pipeline_file(path, registry)
    assert not check.ok
    assert [i.message for i in check.issues] == ["duplicate JSON key 'message' (only the last value would be used)"]


def test_missing_file_is_an_issue(tmp_path, registry):
    """A file that cannot be read is reported as an issue of that file."""
    check = check_pipeline_file(tmp_path / "gone.pipeline.json", registry)
    assert check.issues[0].file == str(tmp_path / "gone.pipeline.json")
    assert "cannot read file" in check.issues[0].message


def test_structural_error_names_stage_id_and_dotted_field(write_pipeline, registry):
    """A pydantic error inside a stage names the stage by its id and the field by its dotted path."""
    path = write_pipeline({"stages": [{"id": "fetch", "component_type": "echo",
                                       "retry_config": {"max_retries": -1}}]})
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline_file(path, registry)
    [issue] = caught.value.issues
    assert (issue.file, issue.stage, issue.field) == (str(path), "fetch", "retry_config.max_retries")
    assert "greater than or equal to 0" in issue.message


def test_structural_error_in_stage_without_id_names_its_index(write_pipeline, registry):
    """A stage with no id is named by its position."""
    check = check_pipeline_file(write_pipeline({"stages": [{"id": "a", "component_type": "echo"},
                                                           {"component_type": "echo"}]}), registry)
    [issue] = check.issues
    assert (issue.stage, issue.field) == ("stages[1]", "id")
    assert issue.message == "required field is missing"


def test_unknown_stage_field_suggests_the_right_name(write_pipeline, registry):
    """A misspelt stage field is a warning naming the field it was probably meant to be."""
    check = check_pipeline_file(write_pipeline({"stages": [{"id": "a", "component_type": "echo",
                                                           "depend_on": []}]}), registry)
    assert check.ok and not check.issues
    [issue] = check.warnings
    assert (issue.stage, issue.field, issue.severity) == ("a", "depend_on", "warning")
    assert issue.message == "unknown stage key 'depend_on' is ignored (did you mean 'depends_on'?)"


def test_unknown_stage_field_is_an_error_when_strict(write_pipeline, registry):
    """Under strict validation the misspelt stage field rejects the file."""
    check = check_pipeline_file(write_pipeline({"stages": [{"id": "a", "component_type": "echo",
                                                           "depend_on": []}]}), registry, strict=True)
    [issue] = check.issues
    assert (issue.stage, issue.field, issue.severity, check.config) == ("a", "depend_on", "error", None)


def test_three_different_errors_are_reported_together(write_pipeline, registry):
    """A structural error, an unknown component and an unknown dependency come out in one error."""
    path = write_pipeline({"stages": [
        {"id": "a", "component_type": "echo", "timeout_ms": 0},
        {"id": "b", "component_type": "no_such_thing"},
        {"id": "c", "component_type": "echo", "depends_on": ["zzz"]},
    ]})
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline_file(path, registry)
    found = {(i.file, i.stage, i.field) for i in caught.value.issues}
    assert found == {(str(path), "a", "timeout_ms"), (str(path), "b", "component_type"),
                     (str(path), "c", "depends_on")}
    assert str(caught.value).count("\n  - ") == 3


def test_semantic_rules_still_run_on_a_stage_with_a_structural_error(write_pipeline, registry):
    """A bad optional field does not hide that same stage's cycle or template problems."""
    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "a", "component_type": "echo", "timeout_ms": -5, "depends_on": ["b"],
         "config": {"message": "{{nowhere.x}}"}},
        {"id": "b", "component_type": "echo", "depends_on": ["a"]},
    ]}), registry)
    fields = sorted((i.stage, i.field) for i in check.issues)
    assert fields == [("a", "config.message"), ("a", "depends_on"), ("a", "timeout_ms")]


def test_reference_to_structurally_broken_stage_is_not_reported_as_unknown(write_pipeline, registry):
    """A stage that failed to parse still exists for other stages' references."""
    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "a", "component_type": "echo", "on_error": "explode"},
        {"id": "b", "component_type": "echo", "depends_on": ["a"], "config": {"message": "{{a.output}}"}},
    ]}), registry)
    assert [(i.stage, i.field) for i in check.issues] == [("a", "on_error")]


def test_load_pipeline_dict_names_the_source(registry):
    """load_pipeline_dict reports issues under the given source name and requires an id."""
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline_dict(ONE_STAGE, registry, source="<api>")
    [issue] = caught.value.issues
    assert (issue.file, issue.field, issue.message) == ("<api>", "id", "required field is missing")
    assert load_pipeline_dict({**ONE_STAGE, "id": "p"}, registry).id == "p"


def test_validation_error_serialises_every_issue(write_pipeline, registry):
    """to_dict carries the issues for the socket and the CLI."""
    path = write_pipeline({"stages": [{"id": "a", "component_type": "echo", "depends_on": ["x"]}]})
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline_file(path, registry)
    data = caught.value.to_dict()
    assert data["code"] == "pipeline_invalid"
    assert data["issues"][0]["stage"] == "a" and data["issues"][0]["field"] == "depends_on"
