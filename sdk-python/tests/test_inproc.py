"""The in-process entry points the host's ``python-inproc`` runtime calls (no host needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import headwater as hw
from headwater import inproc
from headwater.functions import Registry


@pytest.fixture()
def reg() -> Iterator[Registry]:
    hw.registry.clear()
    yield hw.registry
    hw.registry.clear()


def enc(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_call_batch_returns_outputs_and_per_record_errors(reg: Registry) -> None:
    @hw.map
    def halve(r: dict[str, Any]) -> dict[str, Any]:
        if r["n"] == 0:
            raise hw.TransientError("try later")
        return {"n": 10 // r["n"]}

    @hw.filter
    def big(r: dict[str, Any]) -> bool:
        return bool(r["n"] > 1)

    @hw.flat_map
    def twice(r: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield r
        yield r

    got = inproc.call_batch("halve", [enc({"n": 2}), enc({"n": 0}), enc({"x": 1}), b"{"])
    assert got[0] == (inproc.OK, [b'{"n":5}'], "")
    assert got[1][0] == inproc.TRANSIENT and got[1][1] == "TransientError: try later"
    assert got[2][0] == inproc.PERMANENT and got[2][1] == "KeyError: 'n'"
    assert "Traceback" in got[2][2] and "halve" in got[2][2]
    assert got[3][0] == inproc.PERMANENT and "not valid JSON" in got[3][1]
    assert inproc.call_batch("big", [enc({"n": 1}), enc({"n": 3})]) == [
        (inproc.OK, [], ""),
        (inproc.OK, [enc({"n": 3})], ""),
    ]
    assert inproc.call_batch("twice", [enc({"n": 1})]) == [(inproc.OK, [b'{"n":1}'] * 2, "")]
    unknown = inproc.call_batch("nope", [enc({})])
    assert unknown[0][0] == inproc.PERMANENT and "halve" in unknown[0][1]


def test_load_imports_a_module_and_lists_its_functions(reg: Registry, tmp_path: Path) -> None:
    (tmp_path / "inproc_udfs_for_test.py").write_text(
        "import headwater as hw\n\n@hw.map\ndef f(r):\n    return r\n\n"
        "@hw.keyed_process\ndef k(r, ctx):\n    return []\n"
    )
    assert inproc.load(["inproc_udfs_for_test"], [str(tmp_path)]) == [
        ("f", "map"),
        ("k", "keyed_process"),
    ]


def test_in_process_maps_check_their_outputs_like_the_worker(reg: Registry) -> None:
    @hw.map
    def nothing(r: dict[str, Any]) -> Any:
        return None if r["n"] else {"v": float("-inf")}

    none, inf = inproc.call_batch("nothing", [enc({"n": 1}), enc({"n": 0})])
    assert none[0] == inproc.PERMANENT
    assert none[1] == (
        "map function `nothing` returned None; return a dict (the output record) "
        "or use filter/flat_map"
    )
    assert inf[0] == inproc.PERMANENT
    assert inf[1].startswith("result field `v` is -Infinity, which JSON cannot hold")
