"""Components: decorator metadata, registration rules, and the ways user components are loaded."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from flowmasond.engine.registry import ComponentInput, ComponentRegistry, component_meta, node, operator
from flowmasond.errors import ComponentNotFoundError, ConfigurationError


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path holding a user component module and an installed-package entry point."""
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "acme_components.py").write_text(textwrap.dedent('''
        from flowmasond.engine.registry import ComponentInput, operator

        @operator("acme_shout", description="Upper-cases text.", timeout_ms=1234, safe_to_repeat=False)
        class Shout:
            class Input(ComponentInput):
                text: str

            async def execute(self, input, context):
                return {"text": input.text.upper()}
    '''))
    dist = pkg / "acme_components-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-components\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[flowmason.components]\nacme = acme_components\n")
    sys.path.insert(0, str(pkg))
    yield pkg
    sys.path.remove(str(pkg))
    sys.modules.pop("acme_components", None)


def test_decorator_records_metadata_for_the_registry() -> None:
    """@node carries name, kind, timeout and the repeat-safety flag; the kind default applies."""
    @node("summarise", description="Summarises.", safe_to_repeat=False)
    class Summarise:
        class Input(ComponentInput):
            text: str

        async def execute(self, input: Input, context: object) -> dict[str, str]:
            return {"summary": input.text[:10]}

    meta = component_meta(Summarise)
    assert meta is not None
    assert (meta.name, meta.kind, meta.safe_to_repeat) == ("summarise", "node", False)
    assert meta.default_timeout_ms == 60_000


def test_a_component_without_an_input_model_is_refused() -> None:
    """A class with no pydantic Input cannot be declared a component."""
    with pytest.raises(TypeError, match="Input"):
        @operator("broken")
        class Broken:
            async def execute(self, input: object, context: object) -> None: ...


def test_a_synchronous_execute_is_refused() -> None:
    """execute must be async: a blocking one would stall every run of the daemon."""
    with pytest.raises(TypeError, match="async"):
        @operator("blocking")
        class Blocking:
            class Input(ComponentInput):
                pass

            def execute(self, input: object, context: object) -> None: ...


def test_two_components_with_one_name_are_a_configuration_error() -> None:
    """Registering a second class under a taken name fails naming both modules."""
    registry = ComponentRegistry.with_builtins()

    @operator("shell")
    class Impostor:
        class Input(ComponentInput):
            pass

        async def execute(self, input: object, context: object) -> None: ...

    with pytest.raises(ConfigurationError, match="registered twice"):
        registry.register(Impostor)


def test_unknown_component_type_names_the_type() -> None:
    """Looking up an unregistered type raises an error carrying the type name."""
    with pytest.raises(ComponentNotFoundError) as info:
        ComponentRegistry().meta("nope")
    assert info.value.context["component_type"] == "nope"


def test_components_load_from_a_configured_module_path(user_module: Path) -> None:
    """register_module('acme_components') registers every decorated class in it."""
    registry = ComponentRegistry()
    found = registry.register_module("acme_components")
    assert [m.name for m in found] == ["acme_shout"]
    assert registry.meta("acme_shout").timeout_ms == 1234


def test_a_module_path_that_does_not_import_is_a_configuration_error() -> None:
    """A typo in a configured module path says which module could not be imported."""
    with pytest.raises(ConfigurationError) as info:
        ComponentRegistry().register_module("no_such_module_here")
    assert info.value.context["module"] == "no_such_module_here"


def test_components_load_from_the_entry_point_group(user_module: Path) -> None:
    """An installed package's flowmason.components entry point is discovered and registered."""
    registry = ComponentRegistry()
    found = registry.load_entry_points()
    assert "acme_shout" in [m.name for m in found]
    assert registry.meta("acme_shout").safe_to_repeat is False
