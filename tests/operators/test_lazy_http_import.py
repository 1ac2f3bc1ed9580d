"""The HTTP client library is imported when an HTTP stage runs, not when the registry loads: a
cold ``run-once`` of a pipeline without HTTP stages does not pay for it (issue 15)."""

from __future__ import annotations

import subprocess
import sys


def test_loading_every_builtin_component_does_not_import_httpx() -> None:
    """A fresh process that loads run-once and every built-in component has not imported httpx."""
    code = ("import sys, flowmasond.runonce; "
            "from flowmasond.engine.registry import ComponentRegistry; "
            "registry = ComponentRegistry.with_builtins(); "
            "assert 'http_request' in registry.names(); "
            "print(sorted(m for m in ('httpx', 'httpcore', 'anyio') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
