"""The table of built-in component types (``BUILTIN_COMPONENTS``) against the modules' own
declarations, and the registry importing a module only when one of its types is looked up
(issue 15: a cold run-once imports only the components its pipeline uses)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import flowmasond.components
from flowmasond.components import BUILTIN_COMPONENTS, BUILTIN_MODULES
from flowmasond.engine.registry import ComponentInput, ComponentRegistry, component_meta, operator
from flowmasond.errors import ConfigurationError


def _declared() -> dict[str, str]:
    """Every decorated class under flowmasond.components, by its canonical name, and its module."""
    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(flowmasond.components.__path__, "flowmasond.components."):
        module = importlib.import_module(info.name)
        for name in ComponentRegistry().register_module(module):
            assert name.name not in found, f"{name.name} declared in {found[name.name]} and {info.name}"
            found[name.name] = info.name
    return found


def test_the_table_names_exactly_the_types_the_component_modules_declare() -> None:
    """Each type in the table is declared by the module it names, and no declared type is missing."""
    assert BUILTIN_COMPONENTS == _declared()


def test_the_builtin_modules_are_the_tables_modules() -> None:
    """BUILTIN_MODULES lists each module of the table once."""
    assert sorted(BUILTIN_MODULES) == sorted(set(BUILTIN_COMPONENTS.values()))


def test_a_lazy_registry_describes_each_type_as_an_eager_one_does() -> None:
    """Every built-in looked up through the lazy registry has the metadata of registering its module."""
    lazy = ComponentRegistry.with_builtins()
    eager = ComponentRegistry()
    for module in BUILTIN_MODULES:
        eager.register_module(module)
    assert lazy.names() == eager.names()
    for name in eager.names():
        assert lazy.meta(name) == eager.meta(name)


_PROBE = """
import sys
from flowmasond.engine.registry import ComponentRegistry
registry = ComponentRegistry.with_builtins()
http = "flowmasond.components.operators.http"
before = http in sys.modules
known = "http_request" in registry and "http-request" in registry and "http_request" in registry.names()
still = http in sys.modules
registry.meta("http-request")
print(before, known, still, http in sys.modules, "flowmasond.components.llm.nodes" in sys.modules)
"""


def test_a_builtin_module_is_imported_at_the_first_lookup_of_one_of_its_types() -> None:
    """In a fresh process, the registry knows http_request without importing its module; looking it
    up imports that module and no other component module."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "False", "True", "False"]


def test_registering_a_pending_builtin_name_is_still_a_clash() -> None:
    """A class registered under a built-in's name clashes even before that built-in's module loaded."""
    registry = ComponentRegistry.with_builtins()

    @operator("logger")
    class Impostor:
        class Input(ComponentInput):
            pass

        async def execute(self, input: object, context: object) -> None: ...

    with pytest.raises(ConfigurationError, match="registered twice"):
        registry.register(Impostor)


def test_a_replacement_of_a_pending_builtin_wins_over_its_module() -> None:
    """register(replace=True) over a not yet imported built-in keeps the replacement, also after the
    rest of that module is loaded."""
    registry = ComponentRegistry.with_builtins()

    @operator("sleep")
    class Faster:
        class Input(ComponentInput):
            pass

        async def execute(self, input: object, context: object) -> None: ...

    registry.register(Faster, replace=True)
    registry.meta("fail")  # the rest of sleep's module
    registry.load_all()
    assert registry.meta("sleep").cls is Faster
    assert component_meta(registry.meta("fail").cls) is not None
