"""Whatever a run produced, the pages show it as text: generated hostile strings through the real templates."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowmason_client.ui.app import make_environment

# Text that looks like markup, mixed with anything else.
MARKUP = st.sampled_from(["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"'><b>", "&amp;",
                          "</pre><svg onload=x>", "{{ 7*7 }}", "javascript:x"])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
HOSTILE = st.lists(st.one_of(MARKUP, TEXT), max_size=6).map("".join)


STAGE = make_environment().get_template("stage.html")


class Collector(HTMLParser):
    """The tags of a page, and the text inside the element with a given id."""

    def __init__(self, wanted: str) -> None:
        super().__init__(convert_charrefs=True)
        self.wanted, self.depth, self.text, self.tags = wanted, 0, "", []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.wanted:
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text += data


def stage_page(output: Any, error: str, path: str) -> str:
    row = {"path": path, "stage_id": "s", "component_type": "shell", "status": "failed", "attempts": 1,
           "error": error, "error_type": "COMPONENT", "output": output, "usage": {}}
    run = {"run_id": "r-1", "inputs": {}, "status": "failed"}
    return STAGE.render(
        title=path, nav="runs", run=run, row=row, path=path, definition=None, upstream={}, events=[],
        status="failed", duration="")


@settings(max_examples=150, deadline=None)
@given(output=HOSTILE, error=HOSTILE, path=HOSTILE.filter(bool))
def test_stage_outputs_errors_and_paths_are_text(output: str, error: str, path: str) -> None:
    """The output and error read back as exactly the strings given, and no script or handler appears."""
    error = error or "x"
    html = stage_page({"stdout": output}, error, path)
    shown_error, shown_output = Collector("stage-error"), Collector("stage-output")
    for parser in (shown_error, shown_output):
        parser.feed(html)
    assert shown_error.text == "COMPONENT: " + error
    assert shown_output.text == json.dumps({"stdout": output}, indent=2, sort_keys=True, ensure_ascii=False)
    parser = shown_output
    assert all(tag not in ("script", "img", "svg") or attrs.get("src", "").startswith("/static/")
               for tag, attrs in parser.tags)
    assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs)
