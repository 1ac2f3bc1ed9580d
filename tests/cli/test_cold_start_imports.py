"""A cold ``flowmasond run-once`` imports only what its pipeline uses (issue 15's cold-start aim).

A behaviour test, not a timing test: a fresh interpreter runs the command in process and reports
``sys.modules``, so that an import added back to the start-up path fails here rather than
silently costing every run-once its tens of milliseconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# Libraries and flowmasond modules a one-stage logger pipeline has no use for.
UNUSED_BY_A_LOGGER_STAGE = (
    "httpx", "httpcore", "anyio", "jinja2", "markupsafe", "jmespath", "jsonschema", "aiosqlite", "sqlite3",
    "psycopg", "prometheus_client", "opentelemetry", "tomllib",
    "flowmasond.components.llm.nodes", "flowmasond.components.llm.providers", "flowmasond.components.llm.settings",
    "flowmasond.scheduling.cron",
    "flowmasond.components.operators.http",
    "flowmasond.components.operators.data", "flowmasond.components.operators.shell",
    "flowmasond.components.operators.routing", "flowmasond.engine.sandbox", "flowmasond.config",
    "flowmasond.journal", "flowmasond.daemon", "flowmasond.api",
)

_PROBE = """
import contextlib, io, json, sys
from flowmasond.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["run-once", sys.argv[1]])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _run_once_in_fresh_process(tmp_path: Path, stage: dict[str, Any]) -> tuple[str, set[str]]:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    path = folder / "one.pipeline.json"
    path.write_text(json.dumps({"id": "one", "name": "one stage", "version": "1.0.0", "stages": [stage]}))
    done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["code"] == 0, report["out"]
    return report["out"], set(report["modules"])


def _imported(modules: set[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_one_stage_logger_run_imports_no_unused_library_or_component(tmp_path: Path) -> None:
    """run-once of one logger stage succeeds without importing HTTP, Jinja2, the journal, the
    configuration or any component module other than the logger's."""
    out, modules = _run_once_in_fresh_process(
        tmp_path, {"id": "say", "component_type": "logger", "config": {"message": "hi"}})
    assert "status: succeeded" in out
    assert "flowmasond.components.operators.misc" in modules  # the probe sees what was imported
    assert [name for name in UNUSED_BY_A_LOGGER_STAGE if _imported(modules, name)] == []


def test_a_template_in_the_pipeline_brings_in_the_sandbox(tmp_path: Path) -> None:
    """A stage whose config holds an expression imports Jinja2's sandbox when it is compiled."""
    out, modules = _run_once_in_fresh_process(
        tmp_path, {"id": "say", "component_type": "logger", "config": {"message": "{{ 'h' ~ 'i' }}"}})
    assert '"message": "hi"' in out
    assert {"jinja2", "flowmasond.engine.sandbox"} <= modules
