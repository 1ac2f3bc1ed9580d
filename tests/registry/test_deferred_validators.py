"""Component models build their validators when first used, not when their module is imported
(a cold ``run-once`` of a small pipeline skips building the other components': issue 15)."""

from __future__ import annotations

import subprocess
import sys

_CODE = """
import sys
from flowmasond.engine.registry import ComponentRegistry
registry = ComponentRegistry.with_builtins()
model = registry.meta("http_request").input_model
before = model.__pydantic_complete__
try:
    model.model_validate({"url": "http://example.invalid", "verify_ssl": "no"})
except Exception as exc:
    refused = type(exc).__name__
else:
    refused = None
ok = model.model_validate({"url": "http://example.invalid", "verify_ssl": False})
print(before, model.__pydantic_complete__, refused, ok.verify_ssl)
"""


def test_a_component_model_is_built_at_first_validation_and_then_validates_strictly() -> None:
    """In a fresh process, loading every component leaves http_request's Input unbuilt; its first
    validation builds it and still refuses a string flag, then accepts a JSON boolean."""
    done = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "ValidationError", "False"]
