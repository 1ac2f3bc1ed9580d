"""Fixtures for pipeline loading and validation: a private registry and pipeline-file factories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from flowmasond.engine.context import ExecutionContext
from flowmasond.engine.models import PipelineConfig
from flowmasond.engine.registry import ComponentInput, ComponentRegistry, node, operator
from flowmasond.errors import PipelineValidationError, ValidationIssue
from flowmasond.pipelines.loader import load_pipeline_file


@operator("fetch_rows")
class FetchRows:
    """Test operator with one required and one optional config key."""

    class Input(ComponentInput):
        url: str
        limit: int = 10

    async def execute(self, input: Any, context: ExecutionContext) -> Any:
        return {"rows": []}


@operator("echo")
class Echo:
    """Test operator that accepts any message."""

    class Input(ComponentInput):
        message: Any = None

    async def execute(self, input: Any, context: ExecutionContext) -> Any:
        return {"message": input.message}


@node("generator")
class Generator:
    """Test LLM node: the only kind allowed to carry provider/llm_settings."""

    class Input(ComponentInput):
        prompt: str

    async def execute(self, input: Any, context: ExecutionContext) -> Any:
        return {"text": input.prompt}


def make_registry() -> ComponentRegistry:
    """Control-flow built-ins plus this file's test components."""
    registry = ComponentRegistry()
    registry.register_module("flowmasond.components.control_flow_components")
    for cls in (FetchRows, Echo, Generator):
        registry.register(cls)
    return registry


@pytest.fixture
def registry() -> ComponentRegistry:
    return make_registry()


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[..., Path]:
    """Write a dict (or raw text) as ``<name>.pipeline.json`` and return its path."""

    def write(data: dict[str, Any] | str, name: str = "demo") -> Path:
        path = tmp_path / f"{name}.pipeline.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
        return path

    return write


@pytest.fixture
def issues_of(write_pipeline: Callable[..., Path], registry: ComponentRegistry
              ) -> Callable[[dict[str, Any]], tuple[str, list[ValidationIssue]]]:
    """Load a pipeline that must be invalid; return (file, issues)."""

    def load(data: dict[str, Any]) -> tuple[str, list[ValidationIssue]]:
        path = write_pipeline(data)
        with pytest.raises(PipelineValidationError) as caught:
            load_pipeline_file(path, registry)
        assert caught.value.file == str(path)
        return str(path), caught.value.issues

    return load


@pytest.fixture
def load_ok(write_pipeline: Callable[..., Path], registry: ComponentRegistry
            ) -> Callable[[dict[str, Any]], PipelineConfig]:
    """Load a pipeline that must be valid."""

    def load(data: dict[str, Any]) -> PipelineConfig:
        return load_pipeline_file(write_pipeline(data), registry)

    return load


@pytest.fixture
def registry_factory() -> Callable[[], ComponentRegistry]:
    """What validate_cli.main calls to build its registry (this file's test components)."""
    return make_registry
