"""Tests of generate.py, the input generator.

Run: ~/.cache/headwater/venv/bin/python -m pytest examples/surge
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import generate


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generate_is_deterministic(tmp_path: Path) -> None:
    args = ["--rides", "500", "--drivers", "300", "--minutes", "2"]
    generate.main([*args, "--out", str(tmp_path / "a")])
    generate.main([*args, "--out", str(tmp_path / "b")])
    generate.main([*args, "--seed", "7", "--out", str(tmp_path / "c")])
    for name in ("rides.jsonl", "drivers.jsonl"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()
    assert len(read_jsonl(tmp_path / "a" / "rides.jsonl")) == 500
    assert len(read_jsonl(tmp_path / "a" / "drivers.jsonl")) == 300


def test_records_are_in_order_within_the_allowed_disorder(tmp_path: Path) -> None:
    generate.main(["--rides", "2000", "--drivers", "2000", "--out", str(tmp_path)])
    for name in ("rides.jsonl", "drivers.jsonl"):
        newest = 0
        for r in read_jsonl(tmp_path / name):
            t = generate.parse_start(r["ts"])
            # pipeline.yaml allows 5 s of disorder (max_out_of_orderness): nothing is late
            assert t > newest - 5_000
            newest = max(newest, t)


def test_drivers_report_once_a_minute(tmp_path: Path) -> None:
    generate.main(["--rides", "0", "--drivers", "1000", "--out", str(tmp_path)])
    seen: dict[tuple[str, int], int] = {}
    for r in read_jsonl(tmp_path / "drivers.jsonl"):
        minute = generate.parse_start(r["ts"]) // 60_000
        seen[(r["driver"], minute)] = seen.get((r["driver"], minute), 0) + 1
    assert set(seen.values()) == {1}
    assert len({d for d, _ in seen}) == 100  # 1000 reports over 10 minutes


def test_timestamps_are_rfc3339_with_milliseconds() -> None:
    assert generate.timestamp(1772820000412) == "2026-03-06T18:00:00.412Z"
    assert generate.parse_start("2026-03-06T18:00:00.412Z") == 1772820000412


def test_help_explains_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        generate.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--rides", "--drivers", "--seed", "--out", "--bad", "--minutes", "--start"):
        assert option in text
