#!/usr/bin/env python3
"""Writes the surge example's input: ride requests and driver positions in San Francisco.

Deterministic: the same options always write the same bytes (seeded `random`, no clock).
Standard library only.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

DESCRIPTION = """\
Writes the input of the surge example (examples/surge/): ride requests and driver positions
around four hot spots in San Francisco, as JSON lines, one file per Kafka topic:

  OUT/rides.jsonl    {"ts": "2026-03-06T18:00:00.412Z", "type": "ride_request",
                      "ride": "r000001", "rider": "u04211", "lat": 37.79512, "lon": -122.40121}
  OUT/drivers.jsonl  {"ts": "2026-03-06T18:00:00.871Z", "type": "driver_position",
                      "driver": "d0042", "status": "available", "lat": 37.7601, "lon": -122.4139}

`ts` is the event time (RFC 3339, milliseconds, UTC). Each file is ordered by arrival: a
record arrives up to 2 s after its `ts`, so the files are slightly out of order (the pipeline
allows 5 s). Demand differs by place and minute: the Financial District's evening rush fades,
a ball game lets out at Oracle Park a third of the way in, Union Square stays busy and the
Mission is quiet -- while most drivers wait in the Mission. A driver reports its position
once a minute and is `available` or `on_trip`.

--bad N requests get an impossible coordinate (latitude 91.5, or no longitude): the pipeline's
geohash UDF rejects them and they go to the dead-letter queue.

The same options always write the same files (seeded random numbers), so a run's results can
be compared with a reference (examples/surge/run.sh --check).
"""

EPILOG = """\
examples:
  python3 examples/surge/generate.py                      # 20000 + 20000 records into input/
  python3 examples/surge/generate.py --rides 2000 --drivers 2000 --out /tmp/surge-input
  python3 examples/surge/generate.py --seed 7 --minutes 30
"""


@dataclass(frozen=True)
class HotSpot:
    name: str
    lat: float
    lon: float
    #: Standard deviation of a ride request's distance from the centre, in degrees.
    spread: float
    #: Relative ride demand at `f`, the fraction of the run elapsed (0 <= f < 1).
    demand: Callable[[float], float]
    #: Share of the driver fleet whose shift starts here.
    drivers: float


HOT_SPOTS = [
    HotSpot("financial-district", 37.7946, -122.3999, 0.0030, lambda f: 1.6 - 1.2 * f, 0.25),
    HotSpot(
        "oracle-park", 37.7786, -122.3893, 0.0025, lambda f: 1.6 if 0.3 <= f < 0.6 else 0.3, 0.15
    ),
    HotSpot("union-square", 37.7880, -122.4075, 0.0030, lambda f: 0.7, 0.25),
    HotSpot("mission", 37.7599, -122.4148, 0.0040, lambda f: 0.35, 0.35),
]

#: A record arrives up to this long after its event time (the pipeline allows 5 s).
MAX_DELAY_MS = 2_000
#: Seconds between two position reports of one driver: one report per driver and minute.
PING_INTERVAL_S = 60.0


def timestamp(ms: int) -> str:
    """RFC 3339 with milliseconds, UTC: 2026-03-06T18:00:00.412Z."""
    seconds, millis = divmod(ms, 1000)
    day_time = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{day_time}.{millis:03d}Z"


def parse_start(text: str) -> int:
    """RFC 3339 time -> milliseconds since the epoch."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r} ({e})") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round(t.timestamp() * 1000)


def positive(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {n}")
    return n


def arrival_order(records: list[tuple[int, dict]], rng: random.Random) -> list[dict]:
    """Sorts (event time, record) pairs by arrival: event time plus a random delay."""
    keyed = [(t + rng.randrange(MAX_DELAY_MS + 1), i, r) for i, (t, r) in enumerate(records)]
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [r for _, _, r in keyed]


def rides(n: int, bad: int, start_ms: int, minutes: int, rng: random.Random) -> list[dict]:
    # Demand is drawn per (hot spot, minute) cell, weighted by the spot's profile.
    cells = [(s, m) for s in HOT_SPOTS for m in range(minutes)]
    cumulative = []
    total = 0.0
    for s, m in cells:
        total += s.demand((m + 0.5) / minutes)
        cumulative.append(total)
    out: list[tuple[int, dict]] = []
    for i in range(n):
        spot, minute = cells[bisect.bisect_right(cumulative, rng.random() * total)]
        t = start_ms + minute * 60_000 + rng.randrange(60_000)
        out.append(
            (
                t,
                {
                    "ts": timestamp(t),
                    "type": "ride_request",
                    "ride": f"r{i + 1:06d}",
                    "rider": f"u{rng.randrange(50_000):05d}",
                    "lat": round(rng.gauss(spot.lat, spot.spread), 5),
                    "lon": round(rng.gauss(spot.lon, spot.spread), 5),
                },
            )
        )
    # A few requests with impossible coordinates, spread over the run (dead letters).
    used: set[int] = set()
    for k in range(min(bad, n)):
        i = (k * 7919 + n // 3) % n
        while i in used:  # a different request each time
            i = (i + 1) % n
        used.add(i)
        record = out[i][1]
        if k % 2 == 0:
            record["lat"] = 91.5
        else:
            del record["lon"]
    return arrival_order(out, rng)


def drivers(n: int, start_ms: int, minutes: int, rng: random.Random) -> tuple[list[dict], int]:
    span_ms = minutes * 60_000
    per_driver = max(1, round(span_ms / 1000 / PING_INTERVAL_S))
    fleet = max(1, math.ceil(n / per_driver)) if n else 0
    shares = [s.drivers for s in HOT_SPOTS]
    out: list[tuple[int, dict]] = []
    for d in range(fleet):
        # Driver d reports `pings` times (together exactly n), evenly over the run.
        pings = n // fleet + (1 if d < n % fleet else 0)
        spot = rng.choices(HOT_SPOTS, weights=shares)[0]
        # Where the driver waits for rides: a bit wider around the spot than the demand.
        home_lat = rng.gauss(spot.lat, 1.5 * spot.spread)
        home_lon = rng.gauss(spot.lon, 1.5 * spot.spread)
        lat, lon = home_lat, home_lon
        on_trip = rng.random() < 0.3
        interval = span_ms / pings
        phase = rng.random() * interval
        for k in range(pings):
            t = start_ms + int(phase + k * interval)
            # A random walk that drifts back towards the driver's waiting place.
            lat += 0.3 * (home_lat - lat) + rng.gauss(0, 0.0008)
            lon += 0.3 * (home_lon - lon) + rng.gauss(0, 0.0008)
            if rng.random() < 0.12:
                on_trip = not on_trip
            out.append(
                (
                    t,
                    {
                        "ts": timestamp(t),
                        "type": "driver_position",
                        "driver": f"d{d:04d}",
                        "status": "on_trip" if on_trip else "available",
                        "lat": round(lat, 5),
                        "lon": round(lon, 5),
                    },
                )
            )
    return arrival_order(out, rng), fleet


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, separators=(", ", ": ")))
            f.write("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="generate.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rides", type=positive, default=20_000, help="ride requests to write (default 20000)"
    )
    p.add_argument(
        "--drivers",
        type=positive,
        default=20_000,
        help="driver positions to write (default 20000; one per driver and minute, so the "
        "fleet is DRIVERS / MINUTES drivers)",
    )
    p.add_argument(
        "--bad",
        type=positive,
        default=2,
        help="ride requests with an impossible coordinate, for the dead-letter queue (default 2)",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument(
        "--minutes", type=int, default=10, help="event-time span in minutes (default 10)"
    )
    p.add_argument(
        "--start",
        type=parse_start,
        default="2026-03-06T18:00:00Z",
        help="event time of the first minute, RFC 3339 (default 2026-03-06T18:00:00Z)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "input",
        help="folder for rides.jsonl and drivers.jsonl (default: input/ next to this script)",
    )
    args = p.parse_args(argv)
    if args.minutes < 1:
        p.error("--minutes must be at least 1")

    # One generator per file: changing --drivers leaves the rides as they were.
    ride_records = rides(
        args.rides, args.bad, args.start, args.minutes, random.Random(f"{args.seed}:rides")
    )
    driver_records, fleet = drivers(
        args.drivers, args.start, args.minutes, random.Random(f"{args.seed}:drivers")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "rides.jsonl", ride_records)
    write_jsonl(args.out / "drivers.jsonl", driver_records)
    end = args.start + args.minutes * 60_000
    print(
        f"generate.py: {len(ride_records)} ride requests ({min(args.bad, args.rides)} with a bad "
        f"coordinate) -> {args.out / 'rides.jsonl'}\n"
        f"generate.py: {len(driver_records)} driver positions from {fleet} driver(s) -> "
        f"{args.out / 'drivers.jsonl'}\n"
        f"generate.py: event time {timestamp(args.start)} to {timestamp(end)}, seed {args.seed}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
