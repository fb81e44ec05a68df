"""Decorators that register user-defined functions, and the registry the worker serves."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload


class Kind(enum.Enum):
    """What shape of function this is; decides how the host treats its outputs."""

    MAP = "map"
    FILTER = "filter"
    FLAT_MAP = "flat_map"
    KEYED_PROCESS = "keyed_process"
    WINDOW_AGGREGATE = "window_aggregate"


class Format(enum.Enum):
    """How records are passed: ``json`` (dicts) or ``bytes``."""

    JSON = "json"
    BYTES = "bytes"


class TransientError(Exception):
    """Raise for failures that may succeed on retry; the host retries with backoff."""


class KeyedContext:
    """The key's state and timers, for a keyed process function.

    ``state`` is whatever JSON value you stored last for this key (``None`` at first); set it
    to store a new one, or call :meth:`clear`. The host persists it exactly once; the worker
    keeps nothing between records.
    """

    def __init__(self, key: Any, state: Any, event_time: int, timer: int | None = None) -> None:
        self.key = key
        self.event_time = event_time
        self.timer = timer
        self._state = state
        self.state_changed = False
        self.cleared = False
        self.timers: list[int] = []

    @property
    def state(self) -> Any:
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        self._state = value
        self.state_changed = True
        self.cleared = False

    def clear(self) -> None:
        """Deletes the key's state."""
        self._state = None
        self.cleared = True
        self.state_changed = False

    def set_timer(self, event_time: int) -> None:
        """Calls the function again for this key (with ``ctx.timer`` set) when the watermark
        passes ``event_time`` (ms since the epoch)."""
        self.timers.append(int(event_time))


class WindowAggregate(Protocol):
    """A user-defined window aggregate. Accumulators must be JSON-serializable."""

    def create(self) -> Any: ...

    def add(self, accumulator: Any, record: Any) -> Any: ...

    def merge(self, a: Any, b: Any) -> Any: ...

    def result(self, accumulator: Any) -> Any: ...


@dataclass(frozen=True)
class Function:
    """A registered function."""

    name: str
    kind: Kind
    func: Any
    input: Format = Format.JSON
    output: Format = Format.JSON


class Registry:
    """Functions by name. The module-level :data:`registry` is the one workers serve."""

    def __init__(self) -> None:
        self._functions: dict[str, Function] = {}

    def add(self, function: Function) -> None:
        if function.name in self._functions:
            raise ValueError(
                f"two functions are named {function.name!r}; pass name=... to one of them"
            )
        self._functions[function.name] = function

    def get(self, name: str) -> Function | None:
        return self._functions.get(name)

    def all(self) -> list[Function]:
        return list(self._functions.values())

    def clear(self) -> None:
        self._functions.clear()


registry = Registry()

F = TypeVar("F", bound=Callable[..., Any])


class _Decorator:
    """Registers a function of one kind; usable bare (``@map``) or with options
    (``@map(name="x", input="bytes")``)."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    @overload
    def __call__(self, func: F) -> F: ...

    @overload
    def __call__(
        self, *, name: str | None = None, input: str = "json", output: str = "json"
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        input: str = "json",
        output: str = "json",
    ) -> F | Callable[[F], F]:
        kind = self.kind

        def wrap(f: F) -> F:
            target = f() if kind is Kind.WINDOW_AGGREGATE and isinstance(f, type) else f
            registry.add(
                Function(
                    name=name or f.__name__,
                    kind=kind,
                    func=target,
                    input=Format(input),
                    output=Format(output),
                )
            )
            return f

        return wrap(func) if func is not None else wrap


#: ``@map``: one output record per input record.
map = _Decorator(Kind.MAP)
#: ``@filter``: return True to keep the record.
filter = _Decorator(Kind.FILTER)
#: ``@flat_map``: return or yield any number of records.
flat_map = _Decorator(Kind.FLAT_MAP)
#: ``@keyed_process``: ``f(record, ctx: KeyedContext)`` returns or yields records.
keyed_process = _Decorator(Kind.KEYED_PROCESS)
#: ``@window_aggregate`` on a class with create / add / merge / result.
window_aggregate = _Decorator(Kind.WINDOW_AGGREGATE)
