"""The method table the control server dispatches to; method implementations plug in here.

A plain method is ``async def handler(params, peer) -> result``. A stream method is an async
generator ``async def handler(params, peer)`` that yields notification params (sent as
JSON-RPC notifications on the same connection) and finally yields ``StreamResult(result)``;
the generator is closed after it, and closed early when the client goes away.
A result may be a dict, a list, a scalar or a pydantic model (dumped in JSON mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from pydantic import BaseModel

from flowmason_client.protocol import EVENT_NOTIFICATION, METHODS, EmptyParams
from flowmasond.api.peercred import PeerInfo
from flowmasond.errors import ConfigurationError

Handler = Callable[[Any, PeerInfo], Awaitable[Any]]
StreamHandler = Callable[[Any, PeerInfo], AsyncIterator[Any]]


@dataclass(frozen=True, slots=True)
class StreamResult:
    """The last item a stream method yields: the value of its final JSON-RPC reply."""

    value: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodEntry:
    """One registered method."""

    name: str
    handler: Handler | StreamHandler
    params_model: type[BaseModel]
    mutating: bool  # refused unless the peer is privileged (root, daemon uid, allow list)
    stream: bool  # the handler is an async generator of notifications + StreamResult
    notification: str  # the JSON-RPC method of the notifications a stream sends


class Dispatcher:
    """Methods by name, with the params model each one validates and its access level."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodEntry] = {}

    def register(self, name: str, handler: Handler | StreamHandler,
                 params_model: type[BaseModel] = EmptyParams, *, mutating: bool,
                 stream: bool = False, notification: str = EVENT_NOTIFICATION) -> None:
        """Add a method; a name from the protocol's table must keep its declared access and kind."""
        if name in self._methods:
            raise ConfigurationError("control method registered twice", method=name)
        spec = METHODS.get(name)
        # A protocol method registered with the wrong access level would silently open a
        # mutating call to every peer; refuse it at start-up instead.
        if spec is not None and (spec.mutating != mutating or spec.stream != stream):
            raise ConfigurationError(
                "control method registered with a different access level or kind than the protocol declares",
                method=name, mutating=mutating, stream=stream)
        self._methods[name] = MethodEntry(name=name, handler=handler, params_model=params_model,
                                          mutating=mutating, stream=stream, notification=notification)

    def method(self, name: str, params_model: type[BaseModel] = EmptyParams, *, mutating: bool,
               stream: bool = False) -> Callable[[Any], Any]:
        """Decorator form of :meth:`register`."""
        def decorate(handler: Any) -> Any:
            self.register(name, handler, params_model, mutating=mutating, stream=stream)
            return handler
        return decorate

    def get(self, name: str) -> MethodEntry | None:
        """The method registered under ``name``, if any."""
        return self._methods.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._methods))
