"""The surge example's Python UDFs; the host runs them in worker processes it supervises.

- ``locate`` (a map, before the window): the event's geohash cell, and whether it is a ride
  request. It runs on ride requests and driver positions alike (both sources feed the same
  steps).
- ``price`` (a map, after the window): the surge multiplier of one cell and minute, from the
  window's ``demand`` and ``supply``.

``encode`` and ``surge_multiplier`` are plain functions, tested in ``test_udfs.py``.
"""

from __future__ import annotations

import math

import headwater as hw

#: Geohash cells of 6 characters are about 1.2 km x 0.6 km (0.011 x 0.0055 degrees).
PRECISION = 6

_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"

#: The multiplier never goes below 1.0 (no discount) nor above 3.0 (a price cap).
MIN_SURGE = 1.0
MAX_SURGE = 3.0


def _coordinate(value: object, name: str, limit: float) -> float:
    # bool is an int in Python, but `true` is no latitude.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    x = float(value)
    if not (math.isfinite(x) and -limit <= x <= limit):
        raise ValueError(f"{name} must be between -{limit:g} and {limit:g}, got {value!r}")
    return x


def encode(lat: float, lon: float, precision: int = PRECISION) -> str:
    """The geohash of a point: ``precision`` base-32 characters (1-12).

    Bits alternate between longitude and latitude, starting with longitude; each bit halves
    the current interval (1: the upper half). Five bits make one character.

    >>> encode(57.64911, 10.40744, 11)
    'u4pruydqqvj'
    """
    lat = _coordinate(lat, "lat", 90.0)
    lon = _coordinate(lon, "lon", 180.0)
    if isinstance(precision, bool) or not isinstance(precision, int):
        raise TypeError(f"precision must be an integer from 1 to 12, got {precision!r}")
    if not 1 <= precision <= 12:
        raise ValueError(f"precision must be an integer from 1 to 12, got {precision!r}")
    lat_lo, lat_hi = -90.0, 90.0
    lon_lo, lon_hi = -180.0, 180.0
    chars = []
    bits = 0
    n_bits = 0
    even = True  # even bits refine the longitude
    while len(chars) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            if lon >= mid:
                bits = bits * 2 + 1
                lon_lo = mid
            else:
                bits *= 2
                lon_hi = mid
        else:
            mid = (lat_lo + lat_hi) / 2
            if lat >= mid:
                bits = bits * 2 + 1
                lat_lo = mid
            else:
                bits *= 2
                lat_hi = mid
        even = not even
        n_bits += 1
        if n_bits == 5:
            chars.append(_BASE32[bits])
            bits = 0
            n_bits = 0
    return "".join(chars)


def bounds(geohash: str) -> tuple[float, float, float, float]:
    """The cell of a geohash as ``(lat_min, lon_min, lat_max, lon_max)``.

    >>> bounds("u4pruyd")
    (57.64801025390625, 10.40679931640625, 57.649383544921875, 10.408172607421875)
    """
    lat_lo, lat_hi = -90.0, 90.0
    lon_lo, lon_hi = -180.0, 180.0
    even = True
    for c in geohash.lower():
        value = _BASE32.find(c)
        if value < 0:
            raise ValueError(f"{geohash!r} is not a geohash: {c!r} is not a geohash character")
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (lon_lo + lon_hi) / 2
                lon_lo, lon_hi = (mid, lon_hi) if bit else (lon_lo, mid)
            else:
                mid = (lat_lo + lat_hi) / 2
                lat_lo, lat_hi = (mid, lat_hi) if bit else (lat_lo, mid)
            even = not even
    return (lat_lo, lon_lo, lat_hi, lon_hi)


def surge_multiplier(demand: int, supply: int) -> float:
    """The price multiplier of a cell for one window.

    ``demand / max(supply, 1)`` -- ride requests per available driver -- rounded half up to
    one decimal, then clamped to [1.0, 3.0]. Integer arithmetic, so 0.25 rounds to 0.3 (never
    to 0.2 by a float's representation error).

    >>> surge_multiplier(30, 12), surge_multiplier(3, 10), surge_multiplier(50, 0)
    (2.5, 1.0, 3.0)
    """
    if demand < 0 or supply < 0:
        raise ValueError(f"demand and supply must not be negative, got {demand} and {supply}")
    drivers = max(supply, 1)
    tenths = (20 * demand + drivers) // (2 * drivers)  # round(10 * demand / drivers), half up
    return min(max(tenths / 10, MIN_SURGE), MAX_SURGE)


@hw.map
def locate(event: dict) -> dict:
    """Adds ``geohash`` (the cell of ``lat``/``lon``) and ``request`` (1 for a ride request,
    0 for a driver position: ``sum(request)`` in the window is the demand).

    An event with a missing or impossible coordinate raises (TypeError, ValueError): the host
    sends it to the dead-letter queue with the error, and the run goes on.
    """
    return {
        **event,
        "geohash": encode(event.get("lat"), event.get("lon")),
        "request": 1 if event.get("type") == "ride_request" else 0,
    }


@hw.map
def price(cell: dict) -> dict:
    """Adds ``surge`` to a window result ``{geohash, window_start, window_end, demand,
    supply}``."""
    return {**cell, "surge": surge_multiplier(cell["demand"], cell["supply"])}
