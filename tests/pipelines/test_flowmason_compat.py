"""FlowMason's file spellings load unchanged; keys unknown to both are warnings; inheritance resolves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowmasond.pipelines.catalog import PipelineCatalog
from flowmasond.pipelines.compat import resolve_extends
from flowmasond.pipelines.loader import check_pipeline_file

Write = Callable[..., Path]


def echo(sid: str, **fields: Any) -> dict[str, Any]:
    return {"id": sid, "component_type": "echo", "config": {"message": sid}, **fields}


def test_type_and_hyphenated_names_mean_component_type(write_pipeline: Write, registry):
    """`type` stands for component_type, and `fetch-rows` names the `fetch_rows` component."""
    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "a", "type": "fetch-rows", "config": {"url": "x"}}]}), registry, strict=True)
    assert check.ok, [str(i) for i in check.issues]
    assert check.config.stages[0].component_type == "fetch_rows"


def test_input_mapping_is_the_components_config(write_pipeline: Write, registry):
    """input_mapping (FlowMason's canonical name) feeds the component's inputs; config keys win on a clash."""
    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "a", "component_type": "fetch_rows", "input_mapping": {"url": "from-mapping", "limit": 3},
         "config": {"url": "from-config"}}]}), registry, strict=True)
    assert check.config.stages[0].config == {"url": "from-config", "limit": 3}


def test_studio_error_handling_retry_becomes_a_retry_config(write_pipeline: Write, registry):
    """Studio's error_handling {on_error: retry, max_retries, retry_delay} is a retry_config."""
    check = check_pipeline_file(write_pipeline({"stages": [echo("a", error_handling={
        "on_error": "retry", "max_retries": 4, "retry_delay": 250})]}), registry, strict=True)
    retry = check.config.stages[0].retry_config
    assert (retry.max_retries, retry.initial_delay_ms) == (4, 250)


def test_flowmason_retry_config_names_and_default(write_pipeline: Write, registry):
    """backoff_ms is initial_delay_ms, and max_retries defaults to FlowMason's 3."""
    check = check_pipeline_file(write_pipeline({"stages": [echo("a", retry_config={"backoff_ms": 50})]}),
                                registry, strict=True)
    retry = check.config.stages[0].retry_config
    assert (retry.max_retries, retry.initial_delay_ms) == (3, 50)


def test_template_metadata_and_studio_fields_are_accepted_strictly(write_pipeline: Write, registry):
    """$schema, sample_input, template metadata, position, metadata and enabled pass strict validation."""
    check = check_pipeline_file(write_pipeline({
        "$schema": "https://flowmason.dev/schemas/pipeline.schema.json", "sample_input": {"x": 1},
        "difficulty": "beginner", "use_cases": ["demo"], "example_input": {"x": 2}, "category": "demo",
        "tags": ["t"], "metadata": {"author": "me"}, "author": "me", "compositions": [],
        "stages": [echo("a", position={"x": 1, "y": 2}, metadata={"note": "n"}, enabled=True,
                        fallback_output={"message": "none"})]}), registry, strict=True)
    assert check.ok and not check.warnings, [str(i) for i in check.issues + check.warnings]
    assert check.config.schema_uri == "https://flowmason.dev/schemas/pipeline.schema.json"


def test_unknown_top_level_key_is_a_warning_with_a_suggestion(write_pipeline: Write, registry):
    """A key neither FlowMason nor flowmasond defines is dropped with a 'did you mean' warning."""
    check = check_pipeline_file(write_pipeline({"stages": [echo("a")], "output_stage": "a"}), registry)
    assert check.ok
    [warning] = check.warnings
    assert warning.field == "output_stage" and "did you mean 'output_stage_id'" in warning.message


def test_flowmason_config_keys_flowmasond_ignores_pass_strict_validation(write_pipeline: Write):
    """json_transform's `flatten` (FlowMason defines it, flowmasond ignores it) is no warning."""
    from flowmasond.engine.registry import ComponentRegistry

    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "t", "component_type": "json-transform", "config": {"data": {}, "flatten": True}}]}),
        ComponentRegistry.with_builtins(), strict=True)
    assert check.ok and not check.warnings
    assert check.config.stages[0].config == {"data": {}}


def test_unknown_expression_name_is_reported_at_load(write_pipeline: Write, registry):
    """An expression reading a name that is neither a root nor a stage is an error naming it."""
    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "a", "component_type": "echo", "config": {"message": "{{len(inptu.xs)}}"}}]}), registry)
    [issue] = check.issues
    assert issue.field == "config.message" and "unknown name 'inptu'" in issue.message
    assert "did you mean 'input'" in issue.message


def test_unknown_stage_inside_an_expression_is_reported_at_load(write_pipeline: Write, registry):
    """`upstream.<id>` inside an expression must name a stage of the pipeline."""
    check = check_pipeline_file(write_pipeline({"stages": [echo("fetch"), {
        "id": "a", "component_type": "echo", "depends_on": ["fetch"],
        "config": {"message": "{{upstream.fecth.rows or []}}"}}]}), registry)
    [issue] = check.issues
    assert "names unknown stage 'fecth'" in issue.message and "did you mean 'fetch'" in issue.message


# -- inheritance ----------------------------------------------------------------------------------


def test_child_with_empty_stages_inherits_and_overrides(write_pipeline: Write, registry):
    """extends + overrides (deep merge) + empty stages: the parent's stages with the override applied."""
    write_pipeline({"id": "base", "abstract": True, "stages": [echo("a"), echo("b", depends_on=["a"])]}, name="base")
    child = write_pipeline({"extends": "base", "overrides": {"b": {"config": {"message": "child b"}}},
                            "stages": []}, name="child")
    check = check_pipeline_file(child, registry, strict=True)
    assert check.ok, [str(i) for i in check.issues]
    assert [(s.id, s.config["message"]) for s in check.config.stages] == [("a", "a"), ("b", "child b")]
    assert (check.config.id, check.config.extends, check.config.abstract) == ("child", "base", False)


def test_child_stage_replaces_the_parents_and_new_ones_are_appended(write_pipeline: Write, registry):
    """A child stage with a parent's id replaces it in place; new stages come after."""
    write_pipeline({"id": "base", "stages": [echo("a"), echo("b")]}, name="base")
    child = write_pipeline({"extends": "base", "stages": [
        {"id": "c", "component_type": "echo", "config": {"message": "new"}},
        {"id": "a", "component_type": "echo", "config": {"message": "replaced"}}]}, name="child")
    config = check_pipeline_file(child, registry).config
    assert [(s.id, s.config["message"]) for s in config.stages] == [("a", "replaced"), ("b", "b"), ("c", "new")]


def test_parent_found_by_id_in_another_file_of_the_folder(write_pipeline: Write, registry):
    """The parent may live in any file of the folder whose id matches."""
    write_pipeline({"id": "shared-base", "stages": [echo("a")]}, name="some-other-name")
    child = write_pipeline({"extends": "shared-base", "stages": []}, name="child")
    assert check_pipeline_file(child, registry).ok


@pytest.mark.parametrize(("files", "message"), [
    ({"child": {"extends": "ghost", "stages": []}}, "extends unknown pipeline 'ghost'"),
    ({"child": {"extends": "loop-a", "stages": []}, "loop-a": {"extends": "loop-b", "stages": []},
      "loop-b": {"extends": "loop-a", "stages": []}}, "inheritance cycle"),
    ({"child": {"extends": "base@2.0.0", "stages": []}, "base": {"version": "1.0.0", "stages": [echo("a")]}},
     "'base' is version 1.0.0"),
])
def test_broken_inheritance_is_an_error_on_extends(write_pipeline: Write, registry, files: dict[str, Any],
                                                   message: str):
    """A missing parent, a cycle or a version mismatch rejects the child with the reason."""
    for name, data in files.items():
        write_pipeline(data, name=name)
    check = check_pipeline_file(write_pipeline(files["child"], name="child"), registry)
    [issue] = check.issues
    assert issue.field == "extends" and message in issue.message


def test_override_of_an_unknown_stage_is_a_warning(write_pipeline: Write, registry):
    """overrides naming no inherited stage would do nothing: warned, with the key."""
    write_pipeline({"id": "base", "stages": [echo("a")]}, name="base")
    check = check_pipeline_file(write_pipeline({"extends": "base", "overrides": {"zz": {}}, "stages": []},
                                               name="child"), registry)
    assert check.ok and [w.field for w in check.warnings] == ["overrides.zz"]


def test_catalog_reloads_children_when_the_parent_changes(tmp_path: Path, write_pipeline: Write, registry):
    """Editing a parent re-merges every loaded pipeline that extends it."""
    base = write_pipeline({"id": "base", "stages": [echo("a")]}, name="base")
    write_pipeline({"extends": "base", "stages": []}, name="child")
    catalog = PipelineCatalog(registry, [tmp_path])
    catalog.load_all()
    assert catalog.get("child").stages[0].config["message"] == "a"
    write_pipeline({"id": "base", "stages": [{"id": "a", "component_type": "echo", "config": {"message": "v2"}}]},
                   name="base")
    os.utime(base, (base.stat().st_atime, base.stat().st_mtime + 5))
    catalog.load_file(base)
    assert catalog.get("child").stages[0].config["message"] == "v2"


def test_a_child_waiting_for_its_parent_loads_when_the_parent_appears(tmp_path: Path, write_pipeline: Write,
                                                                     registry):
    """A child rejected because its parent is missing loads as soon as the parent file does."""
    write_pipeline({"extends": "base", "stages": []}, name="child")
    catalog = PipelineCatalog(registry, [tmp_path])
    catalog.load_all()
    assert "child" not in catalog.ids() and len(catalog.broken_files()) == 1
    catalog.load_file(write_pipeline({"id": "base", "stages": [echo("a")]}, name="base"))
    assert sorted(catalog.ids()) == ["base", "child"] and catalog.broken_files() == {}


def test_removing_a_parent_keeps_the_child_running_and_reports_why(tmp_path: Path, write_pipeline: Write,
                                                                   registry):
    """The child's last good version stays in force; its entry says the parent is gone."""
    base = write_pipeline({"id": "base", "stages": [echo("a")]}, name="base")
    write_pipeline({"extends": "base", "stages": []}, name="child")
    catalog = PipelineCatalog(registry, [tmp_path])
    catalog.load_all()
    base.unlink()
    catalog.remove_file(base)
    assert catalog.ids() == ["child"]
    [issue] = catalog.entries()["child"].issues
    assert "extends unknown pipeline 'base'" in issue.message


STAGE_IDS = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=6)


@given(parent_ids=STAGE_IDS, child_ids=STAGE_IDS, overridden=STAGE_IDS)
def test_merge_matches_a_brute_force_reference(parent_ids: list[str], child_ids: list[str], overridden: list[str]):
    """Stage order and content after a merge equal a direct reading of FlowMason's documented rule."""
    parent = {"id": "p", "stages": [{"id": i, "config": {"from": "parent", "k": {"x": 1}}} for i in parent_ids]}
    child = {"id": "c", "extends": "p", "stages": [{"id": i, "config": {"from": "child"}} for i in child_ids],
             "overrides": {i: {"config": {"k": {"y": 2}}} for i in overridden}}
    merged = resolve_extends(child, lambda ref: parent)
    expected = []
    for i in parent_ids:
        if i in child_ids:
            expected.append((i, {"from": "child"}))
        elif i in overridden:
            expected.append((i, {"from": "parent", "k": {"x": 1, "y": 2}}))
        else:
            expected.append((i, {"from": "parent", "k": {"x": 1}}))
    expected += [(i, {"from": "child"}) for i in child_ids if i not in parent_ids]
    assert [(s["id"], s["config"]) for s in merged["stages"]] == expected


def test_a_component_registered_with_a_hyphen_answers_to_both_spellings(write_pipeline: Write, registry):
    """A plug-in named `word-count` is found as `word-count` and `word_count`."""
    from flowmasond.engine.registry import ComponentInput, operator

    @operator("word-count")
    class WordCount:
        class Input(ComponentInput):
            text: str = ""

        async def execute(self, input: Any, context: Any) -> Any:
            return {"words": len(input.text.split())}

    registry.register(WordCount)
    check = check_pipeline_file(write_pipeline({"stages": [
        {"id": "a", "type": "word-count", "config": {"text": "x y"}},
        {"id": "b", "component_type": "word_count", "config": {"text": "z"}}]}), registry, strict=True)
    assert check.ok, [str(i) for i in check.issues]
    assert registry.meta("word-count") is registry.meta("word_count")
