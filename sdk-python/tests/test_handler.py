"""Protocol round trips through the handler: build a request, call it, check the response.
No host and no network needed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import headwater as hw
from headwater.functions import Registry
from headwater.handler import PROTOCOL_VERSION, Handler
from headwater.udf.v1 import worker_pb2 as pb


@pytest.fixture()
def reg() -> Iterator[Registry]:
    hw.registry.clear()
    yield hw.registry
    hw.registry.clear()


def rec(value: Any, **kw: Any) -> pb.Record:
    return pb.Record(value=json.dumps(value).encode(), **kw)


def outputs(result: pb.RecordResult) -> list[Any]:
    return [json.loads(o) for o in result.outputs]


def test_handshake_lists_functions_with_kinds_and_formats(reg: Registry) -> None:
    @hw.map
    def enrich(r: dict[str, Any]) -> dict[str, Any]:
        return r

    @hw.filter(name="paid", input="json")
    def is_paid(r: dict[str, Any]) -> bool:
        return True

    @hw.flat_map(input="bytes", output="bytes")
    def split(b: bytes) -> list[bytes]:
        return b.split(b",")

    resp = Handler(reg).handshake(pb.HandshakeRequest(protocol_version=1))
    assert resp.protocol_version == PROTOCOL_VERSION
    assert resp.worker.startswith("headwater-python")
    got = {(f.name, f.kind, f.input, f.output) for f in resp.functions}
    assert got == {
        ("enrich", pb.FUNCTION_KIND_MAP, pb.FORMAT_JSON, pb.FORMAT_JSON),
        ("paid", pb.FUNCTION_KIND_FILTER, pb.FORMAT_JSON, pb.FORMAT_JSON),
        ("split", pb.FUNCTION_KIND_FLAT_MAP, pb.FORMAT_BYTES, pb.FORMAT_BYTES),
    }


def test_the_code_version_follows_the_source_of_the_functions_modules(
    reg: Registry, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "cv_udfs.py"

    def version_of(source: str) -> str:
        reg.clear()
        sys.modules.pop("cv_udfs", None)
        path.write_text(source)
        importlib.invalidate_caches()
        importlib.import_module("cv_udfs")
        return Handler(reg).handshake(pb.HandshakeRequest(protocol_version=1)).code_version

    body = "import headwater as hw\n\n@hw.map\ndef f(r):\n    return r\n"
    first = version_of(body)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert version_of(body) == first, "the same source, the same version"
    assert version_of(body.replace("return r", "return {**r, 'x': 1}")) != first
    monkeypatch.delitem(sys.modules, "cv_udfs")


def test_map_filter_and_flat_map_outputs(reg: Registry) -> None:
    @hw.map
    def double(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "n": r["n"] * 2}

    @hw.filter
    def even(r: dict[str, Any]) -> bool:
        return bool(r["n"] % 2 == 0)

    @hw.flat_map
    def explode(r: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for i in range(r["n"]):
            yield {"i": i}

    h = Handler(reg)
    resp = h.process(pb.BatchRequest(batch_id=7, function="double", records=[rec({"n": 2})]))
    assert resp.batch_id == 7
    assert outputs(resp.results[0]) == [{"n": 4}]
    resp = h.process(pb.BatchRequest(function="even", records=[rec({"n": 2}), rec({"n": 3})]))
    assert [outputs(r) for r in resp.results] == [[{"n": 2}], []]
    resp = h.process(pb.BatchRequest(function="explode", records=[rec({"n": 3}), rec({"n": 0})]))
    assert [outputs(r) for r in resp.results] == [[{"i": 0}, {"i": 1}, {"i": 2}], []]


def test_a_failing_record_never_fails_its_batch(reg: Registry) -> None:
    @hw.map
    def strict(r: dict[str, Any]) -> dict[str, Any]:
        if r["price"] < 0:
            raise ValueError("price must be positive")
        if r["price"] == 0:
            raise hw.TransientError("pricing service unavailable")
        return r

    resp = Handler(reg).process(
        pb.BatchRequest(
            function="strict",
            records=[rec({"price": 1}), rec({"price": -1}), rec({"price": 0}), rec({"x": 1})],
        )
    )
    ok, bad, flaky, missing = resp.results
    assert outputs(ok) == [{"price": 1}] and not ok.HasField("error")
    assert bad.error.message == "ValueError: price must be positive"
    assert getattr(bad.error, "class") == pb.ERROR_CLASS_PERMANENT
    assert "Traceback" in bad.error.traceback and "strict" in bad.error.traceback
    assert getattr(flaky.error, "class") == pb.ERROR_CLASS_TRANSIENT
    assert missing.error.message == "KeyError: 'price'"


def test_bad_shapes_are_permanent_errors(reg: Registry) -> None:
    @hw.flat_map
    def single(r: dict[str, Any]) -> dict[str, Any]:
        return r

    @hw.map
    def unencodable(r: dict[str, Any]) -> Any:
        return {"handle": object()}

    h = Handler(reg)
    r = h.process(pb.BatchRequest(function="single", records=[rec({"a": 1})])).results[0]
    assert "iterable of records" in r.error.message
    r = h.process(pb.BatchRequest(function="unencodable", records=[rec({})])).results[0]
    assert "cannot be encoded as JSON" in r.error.message
    r = h.process(pb.BatchRequest(function="nope", records=[rec({})])).results[0]
    assert "unknown function 'nope'" in r.error.message
    r = h.process(
        pb.BatchRequest(function="single", records=[pb.Record(value=b"{not json")])
    ).results[0]
    assert "not valid JSON" in r.error.message


def test_keyed_process_reads_and_returns_state_and_timers(reg: Registry) -> None:
    @hw.keyed_process
    def running_total(order: dict[str, Any] | None, ctx: hw.KeyedContext) -> Iterator[Any]:
        if ctx.timer is not None:
            ctx.clear()
            yield {"shop": ctx.key, "expired": True}
            return
        total = (ctx.state or 0) + order["amount"] if order else 0
        ctx.state = total
        ctx.set_timer(ctx.event_time + 1000)
        yield {"shop": ctx.key, "total": total}

    h = Handler(reg)
    first = h.process(
        pb.BatchRequest(
            function="running_total",
            records=[rec({"amount": 5}, key=b'"north"', event_time=100)],
        )
    ).results[0]
    assert outputs(first) == [{"shop": "north", "total": 5}]
    assert json.loads(first.new_state) == 5 and list(first.timers) == [1100]
    second = h.process(
        pb.BatchRequest(
            function="running_total",
            records=[rec({"amount": 2}, key=b'"north"', state=first.new_state)],
        )
    ).results[0]
    assert json.loads(second.new_state) == 7
    fired = h.process(
        pb.BatchRequest(
            function="running_total",
            records=[pb.Record(key=b'"north"', state=second.new_state, timer=1100)],
        )
    ).results[0]
    assert fired.clear_state and not fired.HasField("new_state")
    assert outputs(fired) == [{"shop": "north", "expired": True}]


def test_window_aggregate_create_add_merge_result(reg: Registry) -> None:
    @hw.window_aggregate
    class Spread:
        def create(self) -> list[float]:
            return []

        def add(self, acc: list[float], record: dict[str, Any]) -> list[float]:
            return [*acc, record["v"]]

        def merge(self, a: list[float], b: list[float]) -> list[float]:
            return a + b

        def result(self, acc: list[float]) -> dict[str, float]:
            return {"spread": max(acc) - min(acc)}

    h = Handler(reg)

    def call(op: Any, value: Any = None, accs: list[bytes] | None = None) -> pb.RecordResult:
        r = pb.Record(accumulators=accs or [])
        if value is not None:
            r.value = json.dumps(value).encode()
        request = pb.BatchRequest(function="Spread", aggregate_op=op, records=[r])
        return h.process(request).results[0]

    empty = call(pb.AGGREGATE_OP_CREATE).accumulator
    a = call(pb.AGGREGATE_OP_ADD, {"v": 3}, [empty]).accumulator
    b = call(pb.AGGREGATE_OP_ADD, {"v": 10}, [empty]).accumulator
    merged = call(pb.AGGREGATE_OP_MERGE, None, [a, b]).accumulator
    assert outputs(call(pb.AGGREGATE_OP_RESULT, None, [merged])) == [{"spread": 7}]
    assert "bad window-aggregate request" in call(pb.AGGREGATE_OP_MERGE, None, [a]).error.message
    # ADD of several records at once, starting from create() when no accumulator is given.
    folded = h.process(
        pb.BatchRequest(
            function="Spread",
            aggregate_op=pb.AGGREGATE_OP_ADD,
            records=[pb.Record(values=[json.dumps({"v": v}).encode() for v in (4, 9, 1)])],
        )
    ).results[0]
    assert json.loads(folded.accumulator) == [4, 9, 1]


def test_duplicate_names_are_refused(reg: Registry) -> None:
    @hw.map
    def f(r: Any) -> Any:
        return r

    with pytest.raises(ValueError, match="two functions are named 'f'"):
        hw.map(name="f")(lambda r: r)


def test_messages_round_trip_through_bytes() -> None:
    req = pb.BatchRequest(
        batch_id=3, function="f", records=[pb.Record(value=b"{}", state=b"1", timer=5)]
    )
    back = pb.BatchRequest.FromString(req.SerializeToString())
    assert back == req and back.records[0].HasField("timer")


def test_a_udf_calling_exit_fails_its_record_not_the_batch(reg: Registry) -> None:
    @hw.map
    def quitter(r: dict[str, Any]) -> dict[str, Any]:
        if r["n"] == 1:
            raise SystemExit(3)
        return r

    request = pb.BatchRequest(function="quitter", records=[rec({"n": 0}), rec({"n": 1})])
    results = Handler(reg).process(request).results
    assert outputs(results[0]) == [{"n": 0}]
    assert results[1].error.message == "SystemExit: 3"


def test_a_map_returning_none_or_a_scalar_fails_that_record_with_a_hint(reg: Registry) -> None:
    @hw.map
    def forgetful(r: dict[str, Any]) -> Any:
        if r["n"] == 1:
            r["seen"] = True  # forgot the `return r`
            return None
        if r["n"] == 2:
            return r["n"] * 10
        if r["n"] == 3:
            return [r]
        return r

    resp = Handler(reg).process(
        pb.BatchRequest(
            function="forgetful",
            records=[rec({"n": 1}), rec({"n": 2}), rec({"n": 3}), rec({"n": 4})],
        )
    )
    none, scalar, listed, fine = resp.results
    assert none.error.message == (
        "map function `forgetful` returned None; return a dict (the output record) "
        "or use filter/flat_map"
    )
    assert getattr(none.error, "class") == pb.ERROR_CLASS_PERMANENT
    assert not none.outputs
    assert scalar.error.message == (
        "map function `forgetful` returned a int (20); return a dict (the output record) "
        "or use filter/flat_map"
    )
    assert listed.error.message.startswith("map function `forgetful` returned a list ([{")
    assert outputs(fine) == [{"n": 4}] and not fine.HasField("error")


def test_a_flat_map_yielding_a_non_record_fails_that_record(reg: Registry) -> None:
    @hw.flat_map
    def pieces(r: dict[str, Any]) -> Iterator[Any]:
        yield {"part": 1}
        yield None if r["n"] == 1 else {"part": 2}

    ok, bad = (
        Handler(reg)
        .process(pb.BatchRequest(function="pieces", records=[rec({"n": 0}), rec({"n": 1})]))
        .results
    )
    assert outputs(ok) == [{"part": 1}, {"part": 2}]
    assert bad.error.message == (
        "flat_map function `pieces` yielded None; every item must be a dict (an output record)"
    )
    assert not bad.outputs


def test_nan_and_infinity_fail_the_record_naming_the_field(reg: Registry) -> None:
    @hw.map
    def ratio(r: dict[str, Any]) -> dict[str, Any]:
        total = r["total"]
        return {**r, "stats": {"share": [1.0, r["part"] / total if total else float("nan")]}}

    @hw.map
    def overflow(r: dict[str, Any]) -> dict[str, Any]:
        return {"big": r["x"] * float("inf")}

    h = Handler(reg)
    ok, nan = h.process(
        pb.BatchRequest(
            function="ratio",
            records=[rec({"part": 1, "total": 4}), rec({"part": 1, "total": 0})],
        )
    ).results
    assert outputs(ok) == [{"part": 1, "total": 4, "stats": {"share": [1.0, 0.25]}}]
    assert nan.error.message == (
        "result field `stats.share[1]` is NaN, which JSON cannot hold; use None or a string for it"
    )
    assert getattr(nan.error, "class") == pb.ERROR_CLASS_PERMANENT
    assert not nan.outputs
    (inf,) = h.process(pb.BatchRequest(function="overflow", records=[rec({"x": 1e3})])).results
    assert inf.error.message.startswith("result field `big` is Infinity")


def test_nan_in_keyed_state_is_named_as_state(reg: Registry) -> None:
    @hw.keyed_process
    def keep(order: dict[str, Any] | None, ctx: hw.KeyedContext) -> list[Any]:
        ctx.state = {"avg": float("inf")}
        return []

    (r,) = (
        Handler(reg)
        .process(pb.BatchRequest(function="keep", records=[rec({"a": 1}, key=b'"k"')]))
        .results
    )
    assert r.error.message.startswith("state field `avg` is Infinity")


@pytest.fixture(params=["msgspec", "json"])
def json_library(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test with the worker's fast JSON library (msgspec) and with the standard one."""
    import importlib.util

    from headwater import handler

    assert importlib.util.find_spec("msgspec") is not None, "msgspec is a dependency of the SDK"
    handler.use_msgspec(request.param == "msgspec")
    yield request.param
    handler.use_msgspec(True)


ROUND_TRIPS = [
    {"n": 1, "s": "plain", "f": 0.1, "neg": -7, "t": True, "no": None},
    {"unicode": "naïve ☃ \U0001f30a", "escapes": 'quote " backslash \\ tab \t nl \n'},
    {"u64": 18446744073709551615, "i64": -9223372036854775808, "beyond": 2**70, "neg": -(2**70)},
    {"floats": [1e16, 1.5e-7, 123456789.125, -0.0, 5e-324, 1.7976931348623157e308]},
    {"nested": {"a": [1, [2, {"b": []}], {}], "empty": ""}},
]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_records_round_trip_exactly_with_either_json_library(
    reg: Registry, json_library: str, value: dict[str, Any]
) -> None:
    @hw.map
    def same(r: dict[str, Any]) -> dict[str, Any]:
        assert r == value
        return r

    (res,) = Handler(reg).process(pb.BatchRequest(function="same", records=[rec(value)])).results
    assert not res.HasField("error"), res.error.message
    assert outputs(res) == [value]
    assert repr(outputs(res)[0]) == repr(value), "floats and big integers keep their exact value"


def test_the_fast_library_keeps_the_standard_rules(reg: Registry, json_library: str) -> None:
    @hw.map
    def shapes(r: dict[str, Any]) -> dict[Any, Any]:
        if r["case"] == "int_keys":
            return {1: "one", "two": 2}
        if r["case"] == "null_and_nan":
            return {"missing": None, "ratio": float("nan")}
        return {"missing": None, "fine": 1.5}

    results = (
        Handler(reg)
        .process(
            pb.BatchRequest(
                function="shapes",
                records=[rec({"case": c}) for c in ("int_keys", "null_and_nan", "null_only")],
            )
        )
        .results
    )
    int_keys, nan, null = results
    assert outputs(int_keys) == [{"1": "one", "two": 2}], "keys become strings, as json does"
    assert nan.error.message.startswith("result field `ratio` is NaN"), (
        "never written as null silently"
    )
    assert outputs(null) == [{"missing": None, "fine": 1.5}]


def test_dataclasses_datetimes_and_sets_become_json(reg: Registry) -> None:
    """With msgspec (the SDK's JSON library) results may hold more than plain JSON types."""
    import dataclasses
    import datetime

    @dataclasses.dataclass
    class Order:
        id: int
        at: datetime.datetime

    @hw.map
    def typed(r: dict[str, Any]) -> Any:
        at = datetime.datetime(2026, 1, 1, 10, 0, 3, tzinfo=datetime.timezone.utc)
        return {"order": Order(r["id"], at), "tags": {"a"}}

    (res,) = (
        Handler(reg).process(pb.BatchRequest(function="typed", records=[rec({"id": 7})])).results
    )
    assert outputs(res) == [{"order": {"id": 7, "at": "2026-01-01T10:00:03Z"}, "tags": ["a"]}]
