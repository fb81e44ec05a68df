"""Tests of the surge example's UDFs: the geohash encoder and the surge formula.

Run: ~/.cache/headwater/venv/bin/python -m pytest examples/surge
"""

from __future__ import annotations

import doctest
import math
import random

import pytest

import udfs
from udfs import bounds, encode, locate, price, surge_multiplier

# (lat, lon, precision, geohash): published examples, and points checked with
# `reference_encode` below.
KNOWN = [
    (57.64911, 10.40744, 11, "u4pruydqqvj"),  # Wikipedia's example
    (42.6, -5.6, 5, "ezs42"),  # Wikipedia's decoding example, encoded back
    (-25.382708, -49.265506, 12, "6gkzwgjzn820"),  # the southern and western hemispheres
    (37.7786, -122.3893, 6, "9q8yyv"),  # Oracle Park, San Francisco (a hot spot of the demo)
    (51.4779, -0.0015, 7, "gcpuzgq"),  # Royal Observatory, Greenwich: just west of 0
    (0.0, 0.0, 6, "s00000"),  # the equator and the prime meridian are upper halves
    (-90.0, -180.0, 6, "000000"),
    (90.0, 180.0, 6, "zzzzzz"),
]


@pytest.mark.parametrize(("lat", "lon", "precision", "expected"), KNOWN)
def test_known_geohashes(lat: float, lon: float, precision: int, expected: str) -> None:
    assert encode(lat, lon, precision) == expected


def reference_encode(lat: float, lon: float, precision: int) -> str:
    """A second, independent encoder: scale each coordinate to an integer of its bit count,
    interleave the bits (longitude first) and cut them into base-32 digits."""
    bits = 5 * precision
    lon_bits, lat_bits = (bits + 1) // 2, bits // 2
    x = min(math.floor((lon + 180) / 360 * 2**lon_bits), 2**lon_bits - 1)
    y = min(math.floor((lat + 90) / 180 * 2**lat_bits), 2**lat_bits - 1)
    value = 0
    for i in range(bits):
        if i % 2 == 0:
            value = value * 2 + ((x >> (lon_bits - 1 - i // 2)) & 1)
        else:
            value = value * 2 + ((y >> (lat_bits - 1 - i // 2)) & 1)
    alphabet = "0123456789bcdefghjkmnpqrstuvwxyz"
    return "".join(alphabet[(value >> (5 * (precision - 1 - j))) & 31] for j in range(precision))


def test_agrees_with_an_independent_encoder() -> None:
    rng = random.Random(5)
    points = [(lat, lon, 6) for lat, lon, _, _ in KNOWN]
    points += [
        (rng.uniform(-90, 90), rng.uniform(-180, 180), rng.randint(1, 12)) for _ in range(3000)
    ]
    # the demo's city, where most cells border each other
    points += [(rng.gauss(37.78, 0.02), rng.gauss(-122.40, 0.02), 6) for _ in range(3000)]
    for lat, lon, precision in points:
        assert encode(lat, lon, precision) == reference_encode(lat, lon, precision)


def test_default_precision_is_6_and_a_prefix_of_longer_hashes() -> None:
    assert udfs.PRECISION == 6
    assert encode(57.64911, 10.40744) == "u4pruy"
    full = encode(57.64911, 10.40744, 12)
    for n in range(1, 13):
        assert encode(57.64911, 10.40744, n) == full[:n]


def test_integer_coordinates_are_accepted() -> None:
    assert encode(0, 0, 3) == encode(0.0, 0.0, 3) == "s00"


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(57.64911, 10.40744), (-33.8568, 151.2153), (37.7599, -122.4148), (-0.0001, -0.0001)],
)
def test_a_point_lies_in_the_cell_of_its_geohash(lat: float, lon: float) -> None:
    previous = (-90.0, -180.0, 90.0, 180.0)
    for n in range(1, 13):
        lat_min, lon_min, lat_max, lon_max = bounds(encode(lat, lon, n))
        assert lat_min <= lat < lat_max or lat == lat_max == 90.0
        assert lon_min <= lon < lon_max or lon == lon_max == 180.0
        # each character narrows the cell down
        assert previous[0] <= lat_min and lat_max <= previous[2]
        assert previous[1] <= lon_min and lon_max <= previous[3]
        previous = (lat_min, lon_min, lat_max, lon_max)


def test_a_precision_6_cell_is_about_1_2_km_by_0_6_km() -> None:
    lat_min, lon_min, lat_max, lon_max = bounds("9q8yyv")
    assert lon_max - lon_min == pytest.approx(360 / 2**15)
    assert lat_max - lat_min == pytest.approx(180 / 2**15)
    km_per_degree = 111.32
    assert (lon_max - lon_min) * km_per_degree == pytest.approx(1.22, abs=0.01)  # at the equator
    assert (lat_max - lat_min) * km_per_degree == pytest.approx(0.61, abs=0.01)


@pytest.mark.parametrize(
    ("lat", "lon", "error", "message"),
    [
        (91.5, 10.0, ValueError, "lat must be between -90 and 90, got 91.5"),
        (10.0, -180.5, ValueError, "lon must be between -180 and 180, got -180.5"),
        (math.nan, 10.0, ValueError, "lat must be between -90 and 90, got nan"),
        (None, 10.0, TypeError, "lat must be a number, got None"),
        ("57.6", 10.0, TypeError, "lat must be a number, got '57.6'"),
        (True, 10.0, TypeError, "lat must be a number, got True"),
    ],
)
def test_impossible_coordinates_raise(
    lat: object, lon: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as e:
        encode(lat, lon)  # type: ignore[arg-type]
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("precision", "error"), [(0, ValueError), (13, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_precision_must_be_1_to_12(precision: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="precision must be an integer from 1 to 12"):
        encode(1.0, 2.0, precision)  # type: ignore[arg-type]


def test_bounds_rejects_what_is_no_geohash() -> None:
    with pytest.raises(ValueError, match="'a' is not a geohash character"):
        bounds("9q8a")


# (demand, supply, surge)
SURGE = [
    (0, 0, 1.0),  # no demand: never below 1.0
    (0, 25, 1.0),
    (8, 10, 1.0),  # more drivers than requests
    (10, 10, 1.0),
    (11, 10, 1.1),
    (25, 10, 2.5),
    (29, 10, 2.9),
    (30, 10, 3.0),
    (31, 10, 3.0),  # capped at 3.0
    (500, 3, 3.0),
    (5, 4, 1.3),  # 1.25 rounds half up
    (21, 20, 1.1),  # 1.05 rounds half up (a float product would give 10.5 -> 10)
    (27, 20, 1.4),  # 1.35
    (33, 20, 1.7),  # 1.65
    (2, 0, 2.0),  # no driver counts as one: 2 requests, nobody to take them
    (1, 0, 1.0),
    (7, 3, 2.3),  # 2.333...
    (8, 3, 2.7),  # 2.666...
]


@pytest.mark.parametrize(("demand", "supply", "expected"), SURGE)
def test_surge_multiplier(demand: int, supply: int, expected: float) -> None:
    got = surge_multiplier(demand, supply)
    assert got == expected
    assert repr(got) == repr(expected)  # exactly one decimal: 2.3, never 2.3000000000000003


def test_surge_multiplier_is_ratio_rounded_and_clamped() -> None:
    for supply in range(40):
        for demand in range(130):
            ratio = demand / max(supply, 1)
            got = surge_multiplier(demand, supply)
            assert 1.0 <= got <= 3.0
            if 1.0 <= ratio <= 3.0:
                assert abs(got - ratio) <= 0.05 + 1e-9
            assert got == min(max(math.floor(10 * ratio + 0.5 + 1e-9) / 10, 1.0), 3.0)


def test_surge_multiplier_grows_with_demand_and_falls_with_supply() -> None:
    for supply in range(12):
        values = [surge_multiplier(d, supply) for d in range(60)]
        assert values == sorted(values)
    for demand in range(60):
        values = [surge_multiplier(demand, s) for s in range(12)]
        assert values == sorted(values, reverse=True)


def test_negative_counts_raise() -> None:
    with pytest.raises(ValueError):
        surge_multiplier(-1, 3)


def test_locate_adds_the_cell_and_whether_it_is_a_request() -> None:
    ride = {
        "ts": "2026-03-06T18:00:00.412Z",
        "type": "ride_request",
        "ride": "r000001",
        "lat": 37.7786,
        "lon": -122.3893,
    }
    driver = {
        "ts": "2026-03-06T18:00:01.000Z",
        "type": "driver_position",
        "driver": "d0042",
        "status": "available",
        "lat": 37.7786,
        "lon": -122.3893,
    }
    assert locate(ride) == {**ride, "geohash": "9q8yyv", "request": 1}
    assert locate(driver) == {**driver, "geohash": "9q8yyv", "request": 0}
    assert "geohash" not in ride  # the input is not modified


def test_locate_rejects_a_missing_coordinate() -> None:
    with pytest.raises(TypeError, match="lon must be a number, got None"):
        locate({"type": "ride_request", "lat": 37.7786})


def test_price_adds_the_surge() -> None:
    cell = {
        "geohash": "9q8yyv",
        "window_start": 1772820000000,
        "window_end": 1772820060000,
        "demand": 30,
        "supply": 12,
    }
    assert price(cell) == {**cell, "surge": 2.5}


def test_the_docstring_examples() -> None:
    result = doctest.testmod(udfs)
    assert result.attempted >= 3
    assert result.failed == 0
