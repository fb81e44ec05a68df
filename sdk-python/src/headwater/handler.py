"""The worker side of the protocol, without gRPC: turns requests into responses.

Kept free of networking so it can be tested by building a request, calling the handler and
checking the response (the Flink StateFun SDK way), and reused by any transport.
"""

from __future__ import annotations

import json
import platform
import traceback
from collections.abc import Iterable
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


def _decode(fmt: Format, raw: bytes) -> Any:
    if fmt is Format.BYTES:
        return raw
    try:
        return json.loads(raw)
    except ValueError as e:
        raise _Permanent(f"input is not valid JSON: {e}") from e


def _encode(fmt: Format, value: Any) -> bytes:
    if fmt is Format.BYTES:
        if not isinstance(value, (bytes, bytearray)):
            raise _Permanent(f"a bytes function must return bytes, got {type(value).__name__}")
        return bytes(value)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as e:
        raise _Permanent(f"result cannot be encoded as JSON: {e}") from e


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


def _failure(cls: Any, message: str, e: BaseException) -> pb.RecordResult:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return pb.RecordResult(error=_error(cls, message, tb))


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
        )

    def process(self, request: pb.BatchRequest) -> pb.BatchResponse:
        function = self.registry.get(request.function)
        response = pb.BatchResponse(batch_id=request.batch_id)
        for record in request.records:
            if function is None:
                known = ", ".join(f.name for f in self.registry.all()) or "none"
                result = pb.RecordResult(
                    error=_error(
                        pb.ERROR_CLASS_PERMANENT,
                        f"unknown function {request.function!r}; this worker has: {known}",
                    )
                )
            else:
                result = self._one(function, record, request.aggregate_op)
            response.results.append(result)
        return response

    def _one(self, f: Function, record: pb.Record, op: Any) -> pb.RecordResult:
        try:
            return self._call(f, record, op)
        except TransientError as e:
            return _failure(pb.ERROR_CLASS_TRANSIENT, f"{type(e).__name__}: {e}", e)
        except _Permanent as e:
            return _failure(pb.ERROR_CLASS_PERMANENT, str(e), e)
        except Exception as e:
            return _failure(pb.ERROR_CLASS_PERMANENT, f"{type(e).__name__}: {e}", e)

    def _call(self, f: Function, record: pb.Record, op: Any) -> pb.RecordResult:
        if f.kind is Kind.MAP:
            out = f.func(_decode(f.input, record.value))
            return pb.RecordResult(outputs=[_encode(f.output, out)])
        if f.kind is Kind.FILTER:
            keep = f.func(_decode(f.input, record.value))
            return pb.RecordResult(outputs=[record.value] if keep else [])
        if f.kind is Kind.FLAT_MAP:
            outs = _many(f.func(_decode(f.input, record.value)))
            return pb.RecordResult(outputs=[_encode(f.output, o) for o in outs])
        if f.kind is Kind.KEYED_PROCESS:
            return self._keyed(f, record)
        return self._aggregate(f, record, op)

    def _keyed(self, f: Function, record: pb.Record) -> pb.RecordResult:
        state = json.loads(record.state) if record.HasField("state") else None
        timer = record.timer if record.HasField("timer") else None
        key = json.loads(record.key) if record.key else None
        ctx = KeyedContext(key=key, state=state, event_time=record.event_time, timer=timer)
        value = None if timer is not None else _decode(f.input, record.value)
        outs = _many(f.func(value, ctx))
        result = pb.RecordResult(outputs=[_encode(f.output, o) for o in outs], timers=ctx.timers)
        if ctx.cleared:
            result.clear_state = True
        elif ctx.state_changed:
            result.new_state = _encode(Format.JSON, ctx.state)
        return result

    def _aggregate(self, f: Function, record: pb.Record, op: Any) -> pb.RecordResult:
        agg = f.func
        accs = [json.loads(a) for a in record.accumulators]
        if op == pb.AGGREGATE_OP_CREATE:
            return pb.RecordResult(accumulator=_encode(Format.JSON, agg.create()))
        if op == pb.AGGREGATE_OP_ADD and len(accs) == 1:
            acc = agg.add(accs[0], _decode(f.input, record.value))
            return pb.RecordResult(accumulator=_encode(Format.JSON, acc))
        if op == pb.AGGREGATE_OP_MERGE and len(accs) == 2:
            return pb.RecordResult(accumulator=_encode(Format.JSON, agg.merge(accs[0], accs[1])))
        if op == pb.AGGREGATE_OP_RESULT and len(accs) == 1:
            return pb.RecordResult(outputs=[_encode(f.output, agg.result(accs[0]))])
        raise _Permanent(f"bad window-aggregate request: op {op} with {len(accs)} accumulator(s)")
