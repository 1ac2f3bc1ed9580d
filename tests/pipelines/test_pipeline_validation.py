"""Semantic validation rules: each invalid file yields exactly the issue that names file, stage and field."""

from __future__ import annotations

from typing import Any

from flowmasond.engine.models import PipelineConfig
from flowmasond.errors import ValidationIssue
from flowmasond.pipelines.validation import validate_pipeline


def stage(stage_id: str, component: str = "echo", **fields: Any) -> dict[str, Any]:
    return {"id": stage_id, "component_type": component, **fields}


def pipeline(*stages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"stages": list(stages), **fields}


def single(result: tuple[str, list[ValidationIssue]]) -> ValidationIssue:
    file, issues = result
    assert len(issues) == 1, [str(i) for i in issues]
    assert issues[0].file == file
    return issues[0]


def test_valid_pipeline_loads_with_every_stage(load_ok):
    """A valid file loads into a PipelineConfig whose stages keep file order."""
    config = load_ok(pipeline(
        stage("fetch", "fetch_rows", config={"url": "{{input.url}}"}),
        stage("show", config={"message": "{{upstream.fetch.rows}} {{fetch.output.rows.0}}"},
              depends_on=["fetch"]),
        output_stage_id="show"))
    assert [s.id for s in config.stages] == ["fetch", "show"]


def test_duplicate_stage_id(issues_of):
    """Two stages with one id are reported on the id field."""
    issue = single(issues_of(pipeline(stage("a"), stage("a"))))
    assert (issue.stage, issue.field) == ("a", "id")
    assert "duplicate stage id 'a'" in issue.message


def test_stage_id_colliding_with_template_root(issues_of):
    """A stage named like a template root (`input`) is rejected."""
    issue = single(issues_of(pipeline(stage("input"))))
    assert (issue.stage, issue.field) == ("input", "id")
    assert "reserved" in issue.message


def test_stage_id_with_a_dot(issues_of):
    """A '.' in a stage id would split template paths, so it is rejected."""
    issue = single(issues_of(pipeline(stage("a.b"))))
    assert (issue.stage, issue.field) == ("a.b", "id")
    assert "must not contain" in issue.message


def test_unknown_dependency_suggests_close_match(issues_of):
    """depends_on naming no stage is reported with a close match."""
    issue = single(issues_of(pipeline(stage("fetch"), stage("show", depends_on=["fetchh"]))))
    assert (issue.stage, issue.field) == ("show", "depends_on")
    assert "unknown stage 'fetchh'" in issue.message and "did you mean 'fetch'" in issue.message


def test_dependency_cycle_names_its_path(issues_of):
    """A cycle is reported once, as the path a -> b -> c -> a starting at the first stage in the file."""
    issue = single(issues_of(pipeline(stage("a", depends_on=["b"]), stage("b", depends_on=["c"]),
                                      stage("c", depends_on=["a"]), stage("d", depends_on=["a"]))))
    assert (issue.stage, issue.field) == ("a", "depends_on")
    assert "a -> b -> c -> a" in issue.message


def test_stage_depending_on_itself_is_a_cycle(issues_of):
    """depends_on listing the stage itself is the cycle a -> a."""
    issue = single(issues_of(pipeline(stage("a", depends_on=["a"]))))
    assert (issue.stage, issue.field) == ("a", "depends_on")
    assert "a -> a" in issue.message


def test_unknown_component_type_lists_close_matches(issues_of):
    """An unknown component type names the close matches among registered types."""
    issue = single(issues_of(pipeline(stage("a", "conditionl"))))
    assert (issue.stage, issue.field) == ("a", "component_type")
    assert "unknown component type 'conditionl'" in issue.message
    assert "'conditional'" in issue.message


def _warnings(write_pipeline, registry, data):
    from flowmasond.pipelines.loader import check_pipeline_file

    check = check_pipeline_file(write_pipeline(data), registry)
    assert check.ok, [str(i) for i in check.issues]
    return check


def test_undeclared_config_key(write_pipeline, registry):
    """A config key the component's Input does not declare is a warning and is dropped."""
    check = _warnings(write_pipeline, registry, pipeline(stage("a", "fetch_rows", config={"url": "x", "limt": 5})))
    [issue] = check.warnings
    assert (issue.stage, issue.field) == ("a", "config.limt")
    assert "unknown config key 'limt'" in issue.message and "did you mean 'limit'" in issue.message
    assert check.config.stages[0].config == {"url": "x"}


def test_undeclared_config_key_with_template_value(write_pipeline, registry):
    """An undeclared key is reported even when its value is a template."""
    config = {"url": "x", "uri": "{{input.u}}"}
    check = _warnings(write_pipeline, registry, pipeline(stage("a", "fetch_rows", config=config)))
    [issue] = check.warnings
    assert (issue.stage, issue.field) == ("a", "config.uri")


def test_missing_required_config_key(issues_of):
    """A required Input field absent from config is reported under config.<key>."""
    issue = single(issues_of(pipeline(stage("a", "fetch_rows", config={"limit": 3}))))
    assert (issue.stage, issue.field) == ("a", "config.url")
    assert "missing required config key 'url'" in issue.message


def test_literal_config_value_of_wrong_type(issues_of):
    """A value without templates is type-checked against the Input model."""
    issue = single(issues_of(pipeline(stage("a", "fetch_rows", config={"url": "x", "limit": "many"}))))
    assert (issue.stage, issue.field) == ("a", "config.limit")
    assert "integer" in issue.message


def test_templated_config_values_are_not_type_checked(load_ok):
    """A templated value is only knowable at run time, so neither its type nor presence is judged."""
    config = load_ok(pipeline(stage("a", "fetch_rows", config={"url": "{{input.u}}", "limit": "{{input.n}}"})))
    assert config.stages[0].config["limit"] == "{{input.n}}"


def test_template_naming_unknown_stage(issues_of):
    """{{upstream.<x>...}} with no stage x is reported at the config field holding it."""
    issue = single(issues_of(pipeline(stage("a", config={"message": {"body": ["{{upstream.nope.rows}}"]}}))))
    assert (issue.stage, issue.field) == ("a", "config.message.body.0")
    assert "unknown stage 'nope'" in issue.message and "{{upstream.nope.rows}}" in issue.message


def test_seed_form_template_naming_unknown_stage(issues_of):
    """The seed's {{<stage>.output}} form is checked like upstream."""
    issue = single(issues_of(pipeline(stage("a"), stage("b", config={"message": "{{ghost.output.x}}"}))))
    assert (issue.stage, issue.field) == ("b", "config.message")
    assert "unknown stage 'ghost'" in issue.message


def test_template_with_unknown_root(issues_of):
    """{{foo.bar}} is neither a root nor the <stage>.output form."""
    issue = single(issues_of(pipeline(stage("a", config={"message": "hello {{foo.bar}}"}))))
    assert (issue.stage, issue.field) == ("a", "config.message")
    assert "unknown root 'foo'" in issue.message


def test_unknown_root_that_is_a_stage_id_shows_the_right_form(issues_of):
    """{{fetch.rows}} for an existing stage suggests {{upstream.fetch.<field>}}."""
    issue = single(issues_of(pipeline(stage("fetch"), stage("b", config={"message": "{{fetch.rows}}"}))))
    assert (issue.stage, issue.field) == ("b", "config.message")
    assert "{{upstream.fetch.<field>}}" in issue.message


def test_template_reading_its_own_stage(issues_of):
    """A stage cannot read its own output."""
    issue = single(issues_of(pipeline(stage("a", config={"message": "{{upstream.a.x}}"}))))
    assert (issue.stage, issue.field) == ("a", "config.message")
    assert "own output" in issue.message


def test_unknown_output_stage_id(issues_of):
    """output_stage_id must name a stage."""
    issue = single(issues_of(pipeline(stage("a"), output_stage_id="b")))
    assert (issue.stage, issue.field) == (None, "output_stage_id")
    assert "unknown stage 'b'" in issue.message


def test_control_flow_child_naming_unknown_stage(issues_of):
    """A branch list naming no stage is reported at that list."""
    issue = single(issues_of(pipeline(
        stage("if", "conditional", config={"condition": True, "true_branch_stages": ["yes"]}))))
    assert (issue.stage, issue.field) == ("if", "config.true_branch_stages")
    assert "unknown stage 'yes'" in issue.message


def test_stage_owned_by_two_control_flow_stages(issues_of):
    """A stage runs under at most one control-flow stage."""
    issue = single(issues_of(pipeline(
        stage("if", "conditional", config={"condition": True, "true_branch_stages": ["work"]}),
        stage("try", "trycatch", config={"try_stages": ["work"]}),
        stage("work"))))
    assert (issue.stage, issue.field) == ("try", "config.try_stages")
    assert "already runs under control-flow stage 'if'" in issue.message


def test_control_flow_stage_listing_itself(issues_of):
    """A control-flow stage cannot run itself."""
    issue = single(issues_of(pipeline(stage("loop", "foreach", config={"items": [1], "loop_stages": ["loop"]}))))
    assert (issue.stage, issue.field) == ("loop", "config.loop_stages")
    assert "itself" in issue.message


def test_control_flow_stage_listing_its_ancestor(issues_of):
    """Ownership must be a tree: an inner control-flow stage cannot list the one that runs it."""
    issue = single(issues_of(pipeline(
        stage("outer", "trycatch", config={"try_stages": ["inner"]}),
        stage("inner", "trycatch", config={"try_stages": ["outer"]}))))
    assert (issue.stage, issue.field) == ("outer", "config.try_stages")
    assert "ancestor" in issue.message


def test_router_default_route_not_a_route_key(issues_of):
    """A string default_route must be one of the route keys."""
    issue = single(issues_of(pipeline(
        stage("route", "router", config={"value": "{{input.kind}}", "routes": {"fast": ["f"], "slow": ["s"]},
                                         "default_route": "fsat"}),
        stage("f"), stage("s"))))
    assert (issue.stage, issue.field) == ("route", "config.default_route")
    assert "did you mean 'fast'" in issue.message


def test_router_default_route_as_key_or_stage_list_is_valid(load_ok):
    """default_route may be a route key or a list of stage ids."""
    for default in ("slow", ["s"]):
        config = load_ok(pipeline(
            stage("route", "router", config={"value": 1, "routes": {"fast": ["f"], "slow": ["s"]},
                                             "default_route": default}),
            stage("f"), stage("s")))
        assert config.stages[0].config["default_route"] == default


def test_duplicate_schedule_ids(issues_of):
    """Schedule ids are unique within a pipeline."""
    issue = single(issues_of(pipeline(stage("a"), schedules=[{"id": "nightly", "cron": "0 2 * * *"},
                                                            {"id": "nightly", "cron": "0 3 * * *"}])))
    assert (issue.stage, issue.field) == (None, "schedules.1.id")
    assert "duplicate schedule id 'nightly'" in issue.message


def test_schedule_with_unknown_timezone(issues_of):
    """A schedule's timezone must be an IANA zone."""
    issue = single(issues_of(pipeline(stage("a"), schedules=[{"id": "n", "cron": "0 2 * * *",
                                                             "timezone": "Mars/Olympus"}])))
    assert (issue.stage, issue.field) == (None, "schedules.0.timezone")
    assert "Mars/Olympus" in issue.message


def test_provider_on_an_operator(issues_of):
    """provider is only meaningful on LLM nodes."""
    issue = single(issues_of(pipeline(stage("a", provider="openai"))))
    assert (issue.stage, issue.field) == ("a", "provider")


def test_llm_settings_on_a_control_flow_stage(issues_of):
    """llm_settings is only meaningful on LLM nodes."""
    issue = single(issues_of(pipeline(stage("r", "return", llm_settings={"temperature": 0}))))
    assert (issue.stage, issue.field) == ("r", "llm_settings")


def test_provider_and_llm_settings_on_a_node(load_ok):
    """A node may carry provider and llm_settings, whose templates are checked like config."""
    config = load_ok(pipeline(stage("gen", "generator", config={"prompt": "hi"}, provider="local",
                                    llm_settings={"model": "{{env.MODEL}}"})))
    assert config.stages[0].provider == "local"


def test_a_misspelt_llm_settings_key_is_reported_at_load(issues_of):
    """An unknown llm_settings key on a node fails validation, naming the key and the close match."""
    issue = single(issues_of(pipeline(stage("gen", "generator", config={"prompt": "hi"},
                                            llm_settings={"temprature": 0.2}))))
    assert (issue.stage, issue.field) == ("gen", "llm_settings.temprature")
    assert "'temperature'" in issue.message


def test_an_out_of_range_llm_setting_is_reported_at_load(issues_of):
    """A literal llm_settings value outside its range fails validation, naming the field."""
    issue = single(issues_of(pipeline(stage("gen", "generator", config={"prompt": "hi"},
                                            llm_settings={"temperature": 5}))))
    assert (issue.stage, issue.field) == ("gen", "llm_settings.temperature")
    assert "less than or equal to 2" in issue.message


def test_reading_a_loop_stage_from_outside_its_foreach(issues_of):
    """A stage outside a foreach is told to read {{upstream.<foreach>.results}} instead of a loop stage."""
    issue = single(issues_of(pipeline(
        stage("loop", "foreach", config={"items": "{{input.xs}}", "loop_stages": ["double"]}),
        stage("double", config={"message": "{{context.item}}"}),
        stage("after", config={"message": "{{upstream.double.message}}"}, depends_on=["loop"]))))
    assert (issue.stage, issue.field) == ("after", "config.message")
    assert "{{upstream.loop.results}}" in issue.message


def test_reading_a_sibling_loop_stage_inside_the_foreach_is_valid(load_ok):
    """Loop stages may read each other: they run in the same iteration."""
    config = load_ok(pipeline(
        stage("loop", "foreach", config={"items": [1, 2], "loop_stages": ["one", "two"]}),
        stage("one", config={"message": "{{context.item}}"}),
        stage("two", config={"message": "{{upstream.one.message}}"}, depends_on=["one"]),
        stage("after", config={"message": "{{upstream.loop.results}}"}, depends_on=["loop"])))
    assert len(config.stages) == 4


def test_depending_on_a_loop_stage_from_outside_its_foreach(issues_of):
    """depends_on a stage that runs per item is reported; depend on the foreach instead."""
    issue = single(issues_of(pipeline(
        stage("loop", "foreach", config={"items": [1], "loop_stages": ["body"]}),
        stage("body"),
        stage("after", depends_on=["body"]))))
    assert (issue.stage, issue.field) == ("after", "depends_on")
    assert "depend on 'loop' instead" in issue.message


def test_validate_pipeline_on_a_model_returns_issues_without_raising(registry):
    """validate_pipeline checks an already-built config and returns its issues."""
    config = PipelineConfig.model_validate(pipeline(stage("a", depends_on=["zz"]), id="p"))
    issues = validate_pipeline(config, registry, file="p.pipeline.json")
    assert [(i.file, i.stage, i.field) for i in issues] == [("p.pipeline.json", "a", "depends_on")]
    assert validate_pipeline(PipelineConfig.model_validate(pipeline(stage("a"), id="p")), registry) == []
