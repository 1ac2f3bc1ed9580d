"""Static discovery of templates in configs, used by pipeline validation."""

from __future__ import annotations

from flowmasond.engine.templates import is_template, references, walk_references


def test_references_finds_every_template_in_document_order():
    """Templates in nested dicts and lists are found with their root, stage and path."""
    config = {"a": "{{input.x.0}} and {{upstream.fetch.rows}}", "b": [{"c": "{{env.HOME}}"}, "{{context.item}}"]}
    found = [(r.kind, r.root, r.stage, r.path) for r in references(config)]
    assert found == [
        ("input", "input", None, ("x", "0")),
        ("upstream", "upstream", "fetch", ("rows",)),
        ("env", "env", None, ("HOME",)),
        ("context", "context", None, ("item",)),
    ]


def test_seed_form_has_the_stage_as_root_and_path_after_output():
    """{{fetch.output.rows.0}} references stage fetch with path rows.0."""
    [ref] = references("{{ fetch.output.rows.0 }}")
    assert (ref.kind, ref.root, ref.stage, ref.path, ref.text) == (
        "seed", "fetch", "fetch", ("rows", "0"), "{{ fetch.output.rows.0 }}")


def test_unknown_root_is_an_invalid_reference():
    """{{foo.bar}} is reported with an error instead of a stage."""
    [ref] = references("{{foo.bar}}")
    assert (ref.kind, ref.stage) == ("invalid", None)
    assert "unknown root 'foo'" in (ref.error or "")


def test_malformed_references_carry_errors():
    """Empty templates and segments, a bare upstream and env without one name are invalid."""
    texts = ["{{}}", "{{input..x}}", "{{upstream}}", "{{env}}", "{{env.A.B}}"]
    refs = [references(t)[0] for t in texts]
    assert all(r.kind == "invalid" and r.error for r in refs)


def test_is_template():
    """Only strings holding a complete {{...}} are templates."""
    assert is_template("a {{input.x}}")
    assert not is_template("a {{ unclosed")
    assert not is_template("plain")
    assert not is_template(5)


def test_walk_references_gives_locations():
    """Each reference comes with the keys and indexes leading to it."""
    config = {"h": {"x": ["lit", "{{input.a}}"]}}
    assert [(where, ref.text) for where, ref in walk_references(config, ("config",))] == [
        (("config", "h", "x", 1), "{{input.a}}")]
