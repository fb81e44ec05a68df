"""pipeline.yaml end to end through the real `headwater` binary and Python workers, without
Kafka: `headwater.testing.run_pipeline` runs a copy whose sources read the records given here
(keeping their `event_time`) and whose sinks write files. Skipped when no binary is built.

Run: ~/.cache/headwater/venv/bin/python -m pytest examples/surge
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from headwater.testing import BinaryNotFoundError, find_binary, run_pipeline

import generate
from udfs import encode, surge_multiplier

HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "pipeline.yaml"

try:
    find_binary()
except BinaryNotFoundError as e:  # pragma: no cover - depends on the machine
    pytest.skip(f"no headwater binary: {e}", allow_module_level=True)


def ms(ts: str) -> int:
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


MINUTE = ms("2026-03-06T18:00:00Z")
ORACLE_PARK = (37.7786, -122.3893)  # cell 9q8yyv
MISSION = (37.7599, -122.4148)  # cell 9q8yy3


def ride(t: str, where: tuple[float, float], n: int) -> dict[str, Any]:
    lat, lon = where
    return {"ts": t, "type": "ride_request", "ride": f"r{n}", "lat": lat, "lon": lon}


def driver(t: str, where: tuple[float, float], d: str, status: str = "available") -> dict[str, Any]:
    lat, lon = where
    return {
        "ts": t,
        "type": "driver_position",
        "driver": d,
        "status": status,
        "lat": lat,
        "lon": lon,
    }


def by_cell_and_minute(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["window_start"], r["geohash"]))


def test_demand_supply_and_surge_per_cell_and_minute() -> None:
    rides = [
        ride("2026-03-06T18:00:05Z", ORACLE_PARK, 1),
        ride("2026-03-06T18:00:20Z", ORACLE_PARK, 2),
        ride("2026-03-06T18:00:15Z", ORACLE_PARK, 3),  # out of order, within the 5 s allowed
        ride("2026-03-06T18:00:30Z", MISSION, 4),
        {**ride("2026-03-06T18:00:31Z", ORACLE_PARK, 5), "lat": 91.5},  # a dead letter
        ride("2026-03-06T18:01:02Z", ORACLE_PARK, 6),
        ride("2026-03-06T18:01:09Z", ORACLE_PARK, 7),
        ride("2026-03-06T18:01:15Z", ORACLE_PARK, 8),
        ride("2026-03-06T18:01:40Z", ORACLE_PARK, 9),
        ride("2026-03-06T18:01:41Z", ORACLE_PARK, 10),
        ride("2026-03-06T18:01:50Z", MISSION, 11),
        ride("2026-03-06T18:01:51Z", MISSION, 12),
    ]
    drivers = [
        driver("2026-03-06T18:00:01Z", ORACLE_PARK, "d1"),
        driver("2026-03-06T18:00:31Z", ORACLE_PARK, "d1"),  # the same driver again: counted once
        driver("2026-03-06T18:00:10Z", ORACLE_PARK, "d2", "on_trip"),  # on a trip: no supply
        driver("2026-03-06T18:00:12Z", MISSION, "d3"),
        driver("2026-03-06T18:00:40Z", MISSION, "d4"),
        driver("2026-03-06T18:01:01Z", ORACLE_PARK, "d1"),
        driver("2026-03-06T18:01:03Z", ORACLE_PARK, "d5"),
        driver("2026-03-06T18:01:30Z", ORACLE_PARK, "d6"),
    ]
    result = run_pipeline(PIPELINE, inputs={"rides": rides, "drivers": drivers})

    def row(minute: int, geohash: str, demand: int, supply: int, surge: float) -> dict[str, Any]:
        start = MINUTE + minute * 60_000
        return {
            "geohash": geohash,
            "window_start": start,
            "window_end": start + 60_000,
            "demand": demand,
            "supply": supply,
            "surge": surge,
        }

    assert by_cell_and_minute(result.output) == [
        row(0, "9q8yy3", 1, 2, 1.0),  # 1 request, 2 drivers
        row(0, "9q8yyv", 3, 1, 3.0),  # 3 requests, 1 driver
        row(1, "9q8yy3", 2, 0, 2.0),  # 2 requests, nobody
        row(1, "9q8yyv", 5, 3, 1.7),  # 5 / 3 = 1.67
    ]
    (dead,) = result.dead_letters
    assert dead["step"] == "steps[1] udf geohash"
    assert "lat must be between -90 and 90, got 91.5" in dead["error"]


def oracle(rides: list[dict[str, Any]], drivers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What pipeline.yaml computes, in plain Python."""
    cells: dict[tuple[str, int], tuple[list[int], set[str]]] = defaultdict(lambda: ([0], set()))
    for e in rides + drivers:
        if e["type"] != "ride_request" and e["status"] != "available":
            continue
        try:
            geohash = encode(e["lat"], e.get("lon"))
        except (TypeError, ValueError):  # a dead letter
            continue
        t = ms(e["ts"])
        demand, supply = cells[(geohash, t - t % 60_000)]
        if e["type"] == "ride_request":
            demand[0] += 1
        else:
            supply.add(e["driver"])
    return by_cell_and_minute(
        [
            {
                "geohash": g,
                "window_start": w,
                "window_end": w + 60_000,
                "demand": demand[0],
                "supply": len(supply),
                "surge": surge_multiplier(demand[0], len(supply)),
            }
            for (g, w), (demand, supply) in cells.items()
        ]
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generated_input_matches_a_plain_python_oracle(tmp_path: Path) -> None:
    generate.main(
        ["--rides", "3000", "--drivers", "1500", "--minutes", "3", "--out", str(tmp_path)]
    )
    rides = read_jsonl(tmp_path / "rides.jsonl")
    drivers = read_jsonl(tmp_path / "drivers.jsonl")
    result = run_pipeline(PIPELINE, inputs={"rides": rides, "drivers": drivers})
    expected = oracle(rides, drivers)
    assert len(expected) > 50
    assert by_cell_and_minute(result.output) == expected
    assert len(result.dead_letters) == 2  # generate.py's two impossible coordinates
    assert {s for r in expected if (s := r["surge"]) > 1.0}, "some cell should surge"
