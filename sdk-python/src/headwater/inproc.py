"""In-process calls: the host's ``python-inproc`` runtime embeds CPython and calls these.

No protocol and no sockets: the host passes each record's JSON bytes and gets back, per
record, either its outputs or an error with its class and traceback. Functions run in the
host's own process, so a crash or a leak in them is the host's: use it for trusted code.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from headwater.functions import Format, Function, Kind, TransientError, registry
from headwater.handler import _decode, _encode, _many, _one_record, _Permanent, fast_map
from headwater.handler import code_version as _code_version

#: Result codes, per record.
OK = 0
TRANSIENT = 1
PERMANENT = 2

_KIND_NAMES = {
    Kind.MAP: "map",
    Kind.FILTER: "filter",
    Kind.FLAT_MAP: "flat_map",
    Kind.KEYED_PROCESS: "keyed_process",
    Kind.WINDOW_AGGREGATE: "window_aggregate",
}


def load(modules: list[str], search_path: list[str]) -> list[tuple[str, str]]:
    """Imports the user's modules; returns (name, kind) for every registered function."""
    from headwater.worker import load_modules

    load_modules(modules, search_path)
    return [(f.name, _KIND_NAMES[f.kind]) for f in registry.all()]


def code_version() -> str:
    """What identifies the loaded functions' code (see ``handler.code_version``)."""
    return _code_version(registry)


def call_batch(name: str, values: list[bytes]) -> list[tuple[int, Any, str]]:
    """Calls ``name`` on each record: ``(OK, [output bytes, ...], "")`` or
    ``(TRANSIENT | PERMANENT, message, traceback)``."""
    function = registry.get(name)
    if function is None:
        known = ", ".join(f.name for f in registry.all()) or "none"
        return [(PERMANENT, f"unknown function {name!r}; loaded: {known}", "")] * len(values)
    f = function
    if f.kind is Kind.MAP and f.input is Format.JSON and f.output is Format.JSON:
        fast = fast_map(f.func, f.name)
        if fast:
            return [_one_fast(fast, value) for value in values]
    return [_one(function, value) for value in values]


def _one_fast(call: Callable[[bytes], bytes], raw: bytes) -> tuple[int, Any, str]:
    """A JSON map's record through ``handler.fast_map``."""
    try:
        return (OK, [call(raw)], "")
    except Exception as e:
        return _failed(e)


def _one(f: Function, raw: bytes) -> tuple[int, Any, str]:
    try:
        value = _decode(f.input, raw)
        json_out = f.output is Format.JSON
        if f.kind is Kind.MAP:
            out = f.func(value)
            if json_out:
                out = _one_record("map", f.name, out)
            return (OK, [_encode(f.output, out)], "")
        if f.kind is Kind.FILTER:
            return (OK, [raw] if f.func(value) else [], "")
        if f.kind is Kind.FLAT_MAP:
            items = _many(f.func(value))
            if json_out:
                items = [_one_record("flat_map", f.name, o) for o in items]
            return (OK, [_encode(f.output, o) for o in items], "")
        raise _Permanent(f"{f.name}: {f.kind.value} functions run in the sidecar runtime only")
    except Exception as e:
        return _failed(e)


def _failed(e: Exception) -> tuple[int, Any, str]:
    """A record's failure: transient when the function said so, else permanent."""
    if isinstance(e, TransientError):
        return (TRANSIENT, f"{type(e).__name__}: {e}", _traceback(e))
    if isinstance(e, _Permanent):
        return (PERMANENT, str(e), _traceback(e))
    return (PERMANENT, f"{type(e).__name__}: {e}", _traceback(e))


def _traceback(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


__all__ = ["OK", "PERMANENT", "TRANSIENT", "Format", "call_batch", "load"]
