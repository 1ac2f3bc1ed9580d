"""Pipelines and the WebView record shared by the web-view tests and their fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NOBODY = 65534

# prepare -> wait (until the run's `gate` file exists) -> finish
GATED: dict[str, Any] = {
    "id": "gated",
    "stages": [
        {"id": "prepare", "component_type": "shell", "config": {"command": "true"}},
        {"id": "wait", "component_type": "shell", "depends_on": ["prepare"],
         "config": {"command": 'while [ ! -e "$GATE" ]; do sleep 0.02; done', "env": {"GATE": "{{input.gate}}"},
                    "kill_grace_s": 0.5}},
        {"id": "finish", "component_type": "shell", "depends_on": ["wait"], "config": {"command": "true"}},
    ],
}

# A stage whose output and error carry markup: the page must show it as text, never run it.
HOSTILE_OUTPUT = "<script>window.__pwned = 1</script>"
HOSTILE_ERROR = "boom <img src=x onerror=\"window.__pwned=2\">"
FAILING: dict[str, Any] = {
    "id": "failing",
    "stages": [
        {"id": "ok", "component_type": "shell", "config": {"command": f"printf '%s' '{HOSTILE_OUTPUT}'"}},
        {"id": "boom", "component_type": "shell", "depends_on": ["ok"],
         "config": {"command": f"printf '%s' '{HOSTILE_ERROR}' >&2; exit 3"}},
    ],
}


# One LLM stage on the streaming fake provider; its answer is streamed to the run page.
ASK: dict[str, Any] = {
    "id": "ask",
    "stages": [{"id": "write", "component_type": "generator", "config": {"prompt": "rain"}}],
    "output_stage_id": "write",
}
PIECES = ["Rain ", "<b>drums</b> ", "on ", "tin."]


@dataclass
class WebView:
    """A running `flowmason ui`: its base URL and the login URL it printed."""

    base: str
    login: str
    token: str
