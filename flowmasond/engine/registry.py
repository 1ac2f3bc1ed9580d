"""Components: the ``@node`` / ``@operator`` / ``@control_flow`` decorators and the registry.

A component is a class with a pydantic ``Input`` model, an optional ``Output`` model and
``async execute(self, input, context)``. The decorators only attach metadata; a
``ComponentRegistry`` collects decorated classes (built-ins, a configured module path, the
``flowmason.components`` entry-point group), so tests never share global state.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import typing
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Literal, TypeVar
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from flowmasond.engine.models import RetryConfig, canonical_component_name
from flowmasond.errors import ComponentNotFoundError, ConfigurationError

ComponentKind = Literal["node", "operator", "control_flow"]
ENTRY_POINT_GROUP = "flowmason.components"
META_ATTR = "__flowmason_component__"

# Default per-attempt timeouts when neither the stage nor the component sets one (DESIGN.md).
DEFAULT_TIMEOUT_MS: dict[str, int] = {"node": 60_000, "operator": 30_000, "control_flow": 0}


class ComponentInput(BaseModel):
    """Base for a component's ``Input``: unknown config keys are errors, never dropped; flags are strict."""

    # defer_build: a component's validator is built when a stage of that type is first validated,
    # not when its module is imported; a process that uses three of the sixty built-in
    # components (a cold run-once) skips building the others (~0.1 s).
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, defer_build=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        # Lax pydantic reads "yes", "off", 0 and 1 as booleans; in a pipeline file that is a typo or
        # a misunderstanding (`"parse_json": "no"` would be true in many languages), so a flag must
        # be a JSON true or false.
        if not isinstance(value, bool) and value is not None and info.field_name in _boolean_fields(cls):
            raise PydanticCustomError("bool_type", "Input should be true or false (a JSON boolean), not {got}",
                                      {"got": type(value).__name__})
        return value


@functools.cache
def _boolean_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields of ``model`` typed ``bool`` or ``bool | None``."""
    names = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        args = set(typing.get_args(annotation)) - {type(None)} if typing.get_args(annotation) else {annotation}
        if args == {bool}:
            names.add(name)
    return frozenset(names)


class ComponentOutput(BaseModel):
    """Base for a component's ``Output``."""

    model_config = ConfigDict(extra="allow", defer_build=True)  # see ComponentInput


@dataclass(frozen=True, kw_only=True, slots=True)
class ComponentMeta:
    """Everything the engine needs to know about a component type."""

    name: str
    kind: ComponentKind
    cls: type
    description: str = ""
    timeout_ms: int | None = None  # None: the kind's default
    retry: RetryConfig | None = None  # used when the stage has no retry_config
    safe_to_repeat: bool = True  # False: a crash mid-stage stops the run for an operator decision
    input_model: type[BaseModel] = ComponentInput
    output_model: type[BaseModel] | None = None
    # Template roots the component evaluates itself (json_transform's {{data.x}}): the engine
    # leaves strings reading them unresolved.
    deferred_template_roots: frozenset[str] = frozenset()

    @property
    def default_timeout_ms(self) -> int:
        return self.timeout_ms if self.timeout_ms is not None else DEFAULT_TIMEOUT_MS[self.kind]

    def describe(self) -> dict[str, Any]:
        """A JSON-safe description (for ``flowmason components`` and docs)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "timeout_ms": self.default_timeout_ms,
            "safe_to_repeat": self.safe_to_repeat,
            "input_schema": self.input_model.model_json_schema(),
        }


C = TypeVar("C", bound=type)


def _decorator(kind: ComponentKind, name: str, *, description: str = "",
               timeout_ms: int | None = None, retry: RetryConfig | dict[str, Any] | None = None,
               safe_to_repeat: bool = True, deferred_template_roots: frozenset[str] = frozenset(),
               ) -> Callable[[C], C]:
    def wrap(cls: C) -> C:
        input_model = getattr(cls, "Input", None)
        if not (inspect.isclass(input_model) and issubclass(input_model, BaseModel)):
            raise TypeError(f"component {name!r}: class {cls.__name__} needs a pydantic `Input` model")
        output_model = getattr(cls, "Output", None)
        if output_model is not None and not issubclass(output_model, BaseModel):
            raise TypeError(f"component {name!r}: `Output` must be a pydantic model")
        if kind != "control_flow" and not inspect.iscoroutinefunction(getattr(cls, "execute", None)):
            raise TypeError(f"component {name!r}: `execute` must be `async def`")
        meta = ComponentMeta(
            name=name, kind=kind, cls=cls, description=description or (cls.__doc__ or "").strip(),
            timeout_ms=timeout_ms,
            retry=RetryConfig.model_validate(retry) if isinstance(retry, dict) else retry,
            safe_to_repeat=safe_to_repeat, input_model=input_model, output_model=output_model,
            deferred_template_roots=frozenset(deferred_template_roots),
        )
        setattr(cls, META_ATTR, meta)
        return cls
    return wrap


def node(name: str, **kwargs: Any) -> Callable[[C], C]:
    """Declare an AI node (LLM-backed; 60 s default timeout)."""
    return _decorator("node", name, **kwargs)


def operator(name: str, **kwargs: Any) -> Callable[[C], C]:
    """Declare a deterministic operator (30 s default timeout)."""
    return _decorator("operator", name, **kwargs)


def control_flow(name: str, **kwargs: Any) -> Callable[[C], C]:
    """Declare a control-flow component; the engine's ControlFlowHandler executes it."""
    return _decorator("control_flow", name, **kwargs)


def component_meta(obj: Any) -> ComponentMeta | None:
    """The metadata a decorator attached to ``obj``, if any."""
    return getattr(obj, META_ATTR, None) if inspect.isclass(obj) else None


class ComponentRegistry:
    """Component types by name, and one shared instance of each."""

    def __init__(self) -> None:
        self._meta: dict[str, ComponentMeta] = {}
        self._instances: dict[str, Any] = {}
        # Types known by name whose module is imported at their first lookup (see add_lazy).
        self._lazy: dict[str, str] = {}

    @classmethod
    def with_builtins(cls) -> ComponentRegistry:
        """A registry holding every built-in component (each module imported when first used)."""
        from flowmasond.components import BUILTIN_COMPONENTS

        registry = cls()
        registry.add_lazy(BUILTIN_COMPONENTS)
        return registry

    def add_lazy(self, modules_by_type: dict[str, str]) -> None:
        """Know each type name now; import its module (registering all of it) at its first lookup.

        Saves a process the import of component modules it never uses (a cold run-once of one
        logger stage does not import the HTTP, data or LLM operators).
        """
        for name, module in modules_by_type.items():
            name = canonical_component_name(name)
            if name not in self._meta:
                self._lazy[name] = module

    def load_all(self) -> None:
        """Import every module still pending, so that later lookups never import."""
        while self._lazy:
            self._load(next(iter(self._lazy)))

    def _load(self, name: str) -> None:
        """Import the module declaring the pending type ``name`` and register its components."""
        module = self._lazy[name]
        for pending in [n for n, m in self._lazy.items() if m == module]:
            del self._lazy[pending]
        found = {meta.name for meta in self.register_module(module)}
        if name not in found:  # the table promised a type its module does not declare
            raise ComponentNotFoundError(f"component type {name!r} is not declared by {module}",
                                         component_type=name, module=module)

    def register(self, component_cls: type, *, replace: bool = False) -> ComponentMeta:
        meta = component_meta(component_cls)
        if meta is None:
            raise TypeError(f"{component_cls!r} is not decorated with @node, @operator or @control_flow")
        if canonical_component_name(meta.name) != meta.name:
            # Stage files may spell it either way (`my-thing`, `my_thing`); both resolve here.
            meta = dataclasses.replace(meta, name=canonical_component_name(meta.name))
        if meta.name in self._lazy:
            # Registering over a pending type: load it first, so that a clash is still reported
            # (or a replacement still wins) as if every module had been imported up front.
            self._load(meta.name)
        if meta.name in self._meta and not replace and self._meta[meta.name].cls is not component_cls:
            raise ConfigurationError(f"component type {meta.name!r} is registered twice",
                                     existing=self._meta[meta.name].cls.__module__,
                                     new=component_cls.__module__)
        self._meta[meta.name] = meta
        self._instances.pop(meta.name, None)
        return meta

    def register_module(self, module: ModuleType | str) -> list[ComponentMeta]:
        """Register every decorated class defined in ``module`` (a module or dotted path)."""
        if isinstance(module, str):
            try:
                module = importlib.import_module(module)
            except Exception as exc:  # an operator's typo must say which module
                raise ConfigurationError(f"cannot import component module: {exc}", module=module) from exc
        found = []
        for value in vars(module).values():
            meta = component_meta(value)
            if meta is not None and value.__module__ == module.__name__:
                found.append(self.register(value))
        return found

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[ComponentMeta]:
        """Register components published by installed packages under ``group``."""
        found: list[ComponentMeta] = []
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:
                raise ConfigurationError(f"cannot load component entry point: {exc}",
                                         entry_point=ep.name, value=ep.value) from exc
            if isinstance(obj, ModuleType):
                found.extend(self.register_module(obj))
            else:
                found.append(self.register(obj))
        return found

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = canonical_component_name(name)
        return name in self._meta or name in self._lazy

    def names(self) -> list[str]:
        return sorted({*self._meta, *self._lazy})

    def meta(self, name: str) -> ComponentMeta:
        canonical = canonical_component_name(name)
        try:
            return self._meta[canonical]
        except KeyError:
            if canonical not in self._lazy:
                raise ComponentNotFoundError(f"unknown component type {name!r}", component_type=name) from None
        self._load(canonical)
        return self._meta[canonical]

    def instance(self, name: str) -> Any:
        """The shared instance of a component (components must keep no per-run state)."""
        name = canonical_component_name(name)
        inst = self._instances.get(name)
        if inst is None:
            inst = self._instances[name] = self.meta(name).cls()
        return inst
