"""The worker side of the protocol, without gRPC: turns requests into responses.

Kept free of networking so it can be tested by building a request, calling the handler and
checking the response (the Flink StateFun SDK way), and reused by any transport.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from headwater.functions import Format, Function, KeyedContext, Kind, Registry, TransientError
from headwater.udf.v1 import worker_pb2 as pb

PROTOCOL_VERSION = 1

_KINDS = {
    Kind.MAP: pb.FUNCTION_KIND_MAP,
    Kind.FILTER: pb.FUNCTION_KIND_FILTER,
    Kind.FLAT_MAP: pb.FUNCTION_KIND_FLAT_MAP,
    Kind.KEYED_PROCESS: pb.FUNCTION_KIND_KEYED_PROCESS,
    Kind.WINDOW_AGGREGATE: pb.FUNCTION_KIND_WINDOW_AGGREGATE,
}
_FORMATS = {Format.JSON: pb.FORMAT_JSON, Format.BYTES: pb.FORMAT_BYTES}


class _Permanent(Exception):
    """A failure that retrying will not fix (bad output shape, undecodable input)."""


try:  # a declared dependency; without it the standard library does the same, slower
    import msgspec
except ImportError:  # pragma: no cover - the tests run both paths through `use_msgspec`
    msgspec = None  # type: ignore[assignment]

# allow_nan=False: NaN and Infinity are not JSON; the host would reject the whole output.
_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _std_encode(value: Any) -> bytes:
    return _std_dumps(value).encode()


if msgspec is not None:
    _msgspec_encode = msgspec.json.Encoder().encode
    _msgspec_decode = msgspec.json.Decoder().decode


def _fast_encode(value: Any) -> bytes:
    """msgspec's encoding, with the standard library's rules where they differ: what msgspec
    refuses takes the standard path (which says why), and since msgspec writes NaN and
    Infinity as `null`, an output with a `null` in it is checked for them, to fail as the
    standard path does rather than change a value silently."""
    try:
        out = _msgspec_encode(value)
    except (TypeError, ValueError, OverflowError):
        return _std_encode(value)
    if b"null" in out and _non_finite(value) is not None:
        return _std_encode(value)  # raises the ValueError that names the field
    return out


def _std_decode(raw: bytes) -> Any:
    return json.loads(raw)


def _fast_decode(raw: bytes) -> Any:
    """msgspec's decoding (integers of any size stay exact); what it refuses (lone
    surrogates) takes the standard path, which keeps it or says why not."""
    try:
        return _msgspec_decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


_to_json: Callable[[Any], bytes] = _std_encode if msgspec is None else _fast_encode
_from_json: Callable[[bytes], Any] = _std_decode if msgspec is None else _fast_decode


def use_msgspec(enabled: bool) -> None:
    """Switches the JSON library (the tests run both; msgspec is used when installed)."""
    global _to_json, _from_json
    fast = enabled and msgspec is not None
    _to_json = _fast_encode if fast else _std_encode
    _from_json = _fast_decode if fast else _std_decode


def _loads(raw: bytes) -> Any:
    try:
        return _from_json(raw)
    except ValueError as e:
        raise _Permanent(f"input is not valid JSON: {e}") from e


def _decode(fmt: Format, raw: bytes) -> Any:
    if fmt is Format.BYTES:
        return raw
    return _loads(raw)


def _encode(fmt: Format, value: Any, what: str = "result") -> bytes:
    if fmt is Format.BYTES:
        if not isinstance(value, (bytes, bytearray)):
            raise _Permanent(f"a bytes function must return bytes, got {type(value).__name__}")
        return bytes(value)
    try:
        return _to_json(value)
    except ValueError as e:
        found = _non_finite(value)
        if found is not None:
            path, number = found
            where = f"{what} field `{path}`" if path else what
            raise _Permanent(
                f"{where} is {_json_name(number)}, which JSON cannot hold; "
                f"use None or a string for it"
            ) from e
        raise _Permanent(f"{what} cannot be encoded as JSON: {e}") from e
    except TypeError as e:
        raise _Permanent(f"{what} cannot be encoded as JSON: {e}") from e


def _json_name(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def _non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite float in `value`, with its dotted path (`a.b[2]`)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _one_record(kind: str, name: str, value: Any) -> Any:
    """Checks that a JSON function's output is a record: a dict."""
    if isinstance(value, dict):
        return value
    if value is None:
        got = "returned None"
    else:
        text = repr(value)
        text = text if len(text) <= 40 else text[:37] + "..."
        got = f"returned a {type(value).__name__} ({text})"
    if kind == "map":
        hint = "return a dict (the output record) or use filter/flat_map"
    else:
        hint = "every item must be a dict (an output record)"
        got = got.replace("returned", "yielded", 1)
    raise _Permanent(f"{kind} function `{name}` {got}; {hint}")


def _many(result: Any) -> Iterable[Any]:
    if result is None:
        return ()
    if isinstance(result, (dict, str, bytes)):
        raise _Permanent(
            f"expected an iterable of records (use `yield` or return a list), "
            f"got a single {type(result).__name__}"
        )
    return list(result)


def _error(cls: Any, message: str, tb: str = "") -> pb.Error:
    error = pb.Error(message=message, traceback=tb)
    setattr(error, "class", cls)  # `class` is a Python keyword
    return error


def _fail(result: pb.RecordResult, cls: Any, message: str, e: BaseException) -> None:
    """Turns `result` into a failure carrying the exception's traceback."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    result.Clear()
    result.error.CopyFrom(_error(cls, message, tb))


def code_version(registry: Registry) -> str:
    """What identifies the code of the registered functions: ``sha256:`` and the first 16 hex
    digits of a digest of the source files of the modules that define them ("" when none can
    be read). Dead letters carry it, so a fix deployed since they failed shows."""
    digest = hashlib.sha256()
    found = False
    for name in sorted({getattr(f.func, "__module__", "") or "" for f in registry.all()}):
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path:
            continue
        try:
            source = Path(path).read_bytes()
        except OSError:
            continue
        digest.update(name.encode() + b"\0" + source + b"\0")
        found = True
    return f"sha256:{digest.hexdigest()[:16]}" if found else ""


def fast_map(func: Callable[[Any], Any], name: str) -> Callable[[bytes], bytes] | None:
    """The hot path of the commonest function, a JSON map, with msgspec called directly
    (None when msgspec is not in use): record bytes in, output bytes out, the same results as
    the general path (decode, call, check, encode) with a few Python calls fewer per record.
    Whatever msgspec refuses goes the general way, which decides as before. The sidecar
    worker and the in-process runtime both use it."""
    if _to_json is not _fast_encode:
        return None
    dec, enc, decode_error = _msgspec_decode, _msgspec_encode, msgspec.DecodeError

    def call(raw: bytes) -> bytes:
        try:
            value = dec(raw)
        except decode_error:
            value = _loads(raw)
        out = func(value)
        if type(out) is not dict:
            out = _one_record("map", name, out)
        try:
            encoded: bytes = enc(out)
        except (TypeError, ValueError, OverflowError):
            encoded = _encode(Format.JSON, out)
        if b"null" in encoded and _non_finite(out) is not None:
            encoded = _encode(Format.JSON, out)  # raises, naming the field
        return encoded

    return call


class Handler:
    """Answers Handshake and Process requests from the functions in a registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def handshake(self, request: pb.HandshakeRequest) -> pb.HandshakeResponse:
        from headwater import __version__

        return pb.HandshakeResponse(
            protocol_version=PROTOCOL_VERSION,
            worker=f"headwater-python {__version__} ({platform.python_implementation()} "
            f"{platform.python_version()})",
            functions=[
                pb.FunctionSpec(
                    name=f.name,
                    kind=_KINDS[f.kind],
                    input=_FORMATS[f.input],
                    output=_FORMATS[f.output],
                )
                for f in self.registry.all()
            ],
            code_version=code_version(self.registry),
        )

    def process(self, request: pb.BatchRequest) -> pb.BatchResponse:
        function = self.registry.get(request.function)
        response = pb.BatchResponse(batch_id=request.batch_id)
        results = response.results
        if function is None:
            known = ", ".join(f.name for f in self.registry.all()) or "none"
            error = _error(
                pb.ERROR_CLASS_PERMANENT,
                f"unknown function {request.function!r}; this worker has: {known}",
            )
            for _ in request.records:
                results.add().error.CopyFrom(error)
            return response
        fill = self._filler(function, request.aggregate_op)
        for record in request.records:
            # Results are filled in place (no per-record message copies): this loop is the
            # worker's hot path.
            result = results.add()
            try:
                fill(record, result)
            except TransientError as e:
                _fail(result, pb.ERROR_CLASS_TRANSIENT, f"{type(e).__name__}: {e}", e)
            except _Permanent as e:
                _fail(result, pb.ERROR_CLASS_PERMANENT, str(e), e)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # SystemExit from a UDF fails its record, not the stream
                _fail(result, pb.ERROR_CLASS_PERMANENT, f"{type(e).__name__}: {e}", e)
        return response

    def _filler(self, f: Function, op: Any) -> Callable[[pb.Record, pb.RecordResult], None]:
        """A function that computes one record's result into a fresh RecordResult."""
        func = f.func
        fmt_in, fmt_out = f.input, f.output
        decode: Callable[[bytes], Any] = (
            _loads if fmt_in is Format.JSON else (lambda raw: _decode(fmt_in, raw))
        )

        def encode(value: Any) -> bytes:
            return _encode(fmt_out, value)

        name = f.name
        if f.kind is Kind.MAP:
            fast = fmt_in is Format.JSON and fmt_out is Format.JSON and fast_map(func, name)
            if fast:

                def fill_map_fast(record: pb.Record, result: pb.RecordResult) -> None:
                    result.outputs.append(fast(record.value))

                return fill_map_fast
            if fmt_out is Format.JSON:

                def fill_map(record: pb.Record, result: pb.RecordResult) -> None:
                    out = func(decode(record.value))
                    if type(out) is not dict:
                        out = _one_record("map", name, out)
                    result.outputs.append(encode(out))

                return fill_map

            def fill_map_bytes(record: pb.Record, result: pb.RecordResult) -> None:
                result.outputs.append(encode(func(decode(record.value))))

            return fill_map_bytes
        if f.kind is Kind.FILTER:

            def fill_filter(record: pb.Record, result: pb.RecordResult) -> None:
                if func(decode(record.value)):
                    result.outputs.append(record.value)

            return fill_filter
        if f.kind is Kind.FLAT_MAP:

            def fill_flat_map(record: pb.Record, result: pb.RecordResult) -> None:
                items = _many(func(decode(record.value)))
                if fmt_out is Format.JSON:
                    items = [_one_record("flat_map", name, o) for o in items]
                result.outputs.extend(encode(o) for o in items)

            return fill_flat_map
        if f.kind is Kind.KEYED_PROCESS:
            return lambda record, result: result.CopyFrom(self._keyed(f, record))
        return lambda record, result: result.CopyFrom(self._aggregate(f, record, op))

    def _keyed(self, f: Function, record: pb.Record) -> pb.RecordResult:
        state = _from_json(record.state) if record.HasField("state") else None
        timer = record.timer if record.HasField("timer") else None
        key = _from_json(record.key) if record.key else None
        ctx = KeyedContext(key=key, state=state, event_time=record.event_time, timer=timer)
        value = None if timer is not None else _decode(f.input, record.value)
        outs = _many(f.func(value, ctx))
        result = pb.RecordResult(outputs=[_encode(f.output, o) for o in outs], timers=ctx.timers)
        if ctx.cleared:
            result.clear_state = True
        elif ctx.state_changed:
            result.new_state = _encode(Format.JSON, ctx.state, "state")
        return result

    def _aggregate(self, f: Function, record: pb.Record, op: Any) -> pb.RecordResult:
        agg = f.func
        accs = [_from_json(a) for a in record.accumulators]
        if op == pb.AGGREGATE_OP_CREATE:
            return pb.RecordResult(accumulator=_encode(Format.JSON, agg.create(), "accumulator"))
        if op == pb.AGGREGATE_OP_ADD and len(accs) <= 1:
            # Folds every record in `values` (or the one in `value`) into the accumulator;
            # no accumulator yet means start from create().
            acc = accs[0] if accs else agg.create()
            for raw in record.values or [record.value]:
                acc = agg.add(acc, _decode(f.input, raw))
            return pb.RecordResult(accumulator=_encode(Format.JSON, acc, "accumulator"))
        if op == pb.AGGREGATE_OP_MERGE and len(accs) == 2:
            return pb.RecordResult(
                accumulator=_encode(Format.JSON, agg.merge(accs[0], accs[1]), "accumulator")
            )
        if op == pb.AGGREGATE_OP_RESULT and len(accs) == 1:
            return pb.RecordResult(outputs=[_encode(f.output, agg.result(accs[0]))])
        raise _Permanent(f"bad window-aggregate request: op {op} with {len(accs)} accumulator(s)")
