"""The test harness: the pipeline rewrite and binary discovery (no binary needed), the run
machinery against a stand-in binary, and end-to-end runs through the real ``headwater``.

The end-to-end tests need the binary (``./dev build``, or HEADWATER_BIN). Without it they are
skipped, unless HEADWATER_REQUIRE_BINARY is set (CI), which makes a missing binary a failure.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from headwater.testing import (
    BinaryNotFoundError,
    PipelineError,
    RunResult,
    _Loader,
    _prepare,
    find_binary,
    run_pipeline,
)

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the rewrite (no binary) -------------------------------------------------------------


def test_rewrite_of_the_quickstart_redirects_sources_sinks_state_and_dlq(tmp_path: Path) -> None:
    lines = (QUICKSTART / "input" / "orders.jsonl").read_text().splitlines()
    work = tmp_path / "work"
    prepared = _prepare(QUICKSTART / "pipeline.yaml", work, lines, None, None)

    original = load(QUICKSTART / "pipeline.yaml")
    spec = load(prepared.pipeline_file)
    assert spec["sources"] == {
        "orders": {
            "type": "file",
            "path": str(work / "input" / "orders.jsonl"),
            "event_time": {"field": "ts", "max_out_of_orderness": "5s"},
        }
    }
    assert spec["sinks"] == {
        name: {"type": "file", "path": str(work / "out" / f"{name}.jsonl")}
        for name in ["results", "console", "late"]
    }
    assert spec["state"] == {"dir": str(work / "state")}
    assert spec["dlq"] == {"path": str(work / "dlq.jsonl")}
    # Everything else is kept as written, in order.
    for key in ["name", "parallelism", "steps", "output", "tuning"]:
        assert spec[key] == original[key], key
    assert list(spec)[: len(original)] == list(original)
    for name, udf in (original.get("udfs") or {}).items():
        if udf.get("runtime") == "python":
            assert spec["udfs"][name]["path"] == str(QUICKSTART.resolve())
    assert prepared.main_sink == "results"
    assert prepared.counts == {"orders": 64}
    assert (work / "input" / "orders.jsonl").read_text().splitlines() == lines
    assert prepared.dlq == work / "dlq.jsonl"


def test_rewrite_keeps_every_scalar_as_written(tmp_path: Path) -> None:
    """The host reads scalars as text: YAML 1.1 typing (dates, `on`, octal, `1:30`) must
    not change them, quoted stays quoted, plain stays plain, an empty value stays null."""
    pipeline = write(
        tmp_path / "p.yaml",
        """
        name: text-kept
        sources:
          in: { type: file, path: in.jsonl, event_time: { field: "ts", max_out_of_orderness: 0 } }
        steps:
          - filter: "flag == 'yes' && n >= 010"
          - key_by: [on, 0123, 1:30, '42', 2024-01-01T00:00:00Z]
          - map: { compute: { a: "1.50", b: 'null' }, drop: [~, null] }
        sinks: { out: { type: stdout } }
        output: out
        tuning: { batch_size: 0x10, progress_interval: }
        """,
    )
    prepared = _prepare(pipeline, tmp_path / "w", [], None, None)

    def scalars(node: yaml.Node, path: str = "") -> list[tuple[str, str, bool]]:
        if isinstance(node, yaml.ScalarNode):
            plain = node.style is None
            # An empty value (null) is written back as `~`, which is the same null.
            return [(path, "~" if plain and node.value == "" else node.value, plain)]
        if isinstance(node, yaml.SequenceNode):
            return [s for i, n in enumerate(node.value) for s in scalars(n, f"{path}[{i}]")]
        assert isinstance(node, yaml.MappingNode)
        return [
            s for k, v in node.value for s in [*scalars(k, path + "."), *scalars(v, f"{path}.")]
        ]

    before = yaml.compose(pipeline.read_text())
    after = yaml.compose(prepared.text)
    assert isinstance(before, yaml.MappingNode) and isinstance(after, yaml.MappingNode)

    def section(root: yaml.MappingNode, key: str) -> yaml.Node:
        found: yaml.Node = next(v for k, v in root.value if k.value == key)
        return found

    for key in ["steps", "tuning", "name", "output"]:
        assert scalars(section(after, key)) == scalars(section(before, key)), key
    step_text = prepared.text.split("steps:")[1].split("sinks:")[0]
    assert "2024-01-01T00:00:00Z" in step_text and "1:30" in step_text and "0123" in step_text
    assert "progress_interval: ~" in prepared.text
    assert load(prepared.pipeline_file)["sources"]["in"]["event_time"] == {
        "field": "ts",
        "max_out_of_orderness": "0",
    }


def test_records_are_written_as_json_lines_and_strings_as_raw_lines(tmp_path: Path) -> None:
    pipeline = write(
        tmp_path / "p.yaml",
        """
        name: p
        sources: { in: { type: stdin, event_time: { field: ts } } }
        sinks: { out: { type: stdout } }
        output: out
        """,
    )
    records: list[Any] = [{"ts": 1, "text": "héllo"}, '{"ts": 2, "broken": ', {"ts": 3}]
    prepared = _prepare(pipeline, tmp_path / "w", iter(records), None, None)
    assert prepared.inputs["in"].read_text(encoding="utf-8").splitlines() == [
        '{"ts": 1, "text": "héllo"}',
        '{"ts": 2, "broken": ',
        '{"ts": 3}',
    ]
    assert load(prepared.pipeline_file)["sources"] == {
        "in": {"type": "file", "path": str(prepared.inputs["in"]), "event_time": {"field": "ts"}}
    }
    with pytest.raises(ValueError, match="line break"):
        _prepare(pipeline, tmp_path / "w2", ["{}\n{}"], None, None)
    with pytest.raises(ValueError, match="record 2 is a int"):
        _prepare(pipeline, tmp_path / "w3", [{"ts": 1}, 5], None, None)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="list of records"):
        _prepare(pipeline, tmp_path / "w4", {"ts": 1}, None, None)


TWO_SOURCES = """
name: two
sources:
  orders: { type: file, path: "orders/*.jsonl", event_time: { field: ts, idle_timeout: 1s } }
  bids: { type: nexmark, events: 100, partitions: 4, only: bid, base_time: 2024-01-01T00:00:00Z }
  typed: { type: stdin, event_time: { field: meta.at, max_out_of_orderness: 2s } }
sinks:
  main: { type: blackhole }
  "odd/name": { type: stdout }
output: [main]
"""


def test_inputs_feed_named_sources_and_the_others_read_nothing(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.yaml", TWO_SOURCES)
    work = tmp_path / "w"
    prepared = _prepare(pipeline, work, None, {"bids": [{"date_time": 5, "price": 1}]}, None)
    spec = load(prepared.pipeline_file)
    assert spec["sources"] == {
        "orders": {
            "type": "file",
            "path": str(work / "input" / "orders.jsonl"),
            "event_time": {"field": "ts", "idle_timeout": "1s"},
        },
        # Nexmark's built-in event time becomes an explicit field; its generator keys go.
        "bids": {
            "type": "file",
            "path": str(work / "input" / "bids.jsonl"),
            "event_time": {"field": "date_time"},
        },
        "typed": {
            "type": "file",
            "path": str(work / "input" / "typed.jsonl"),
            "event_time": {"field": "meta.at", "max_out_of_orderness": "2s"},
        },
    }
    assert prepared.counts == {"orders": 0, "bids": 1, "typed": 0}
    assert (work / "input" / "orders.jsonl").read_text() == ""
    assert read_jsonl(work / "input" / "bids.jsonl") == [{"date_time": 5, "price": 1}]
    # Sink names that are not file-name safe still get a file inside the work folder.
    assert prepared.sinks == {
        "main": work / "out" / "main.jsonl",
        "odd/name": work / "out" / "sink1.jsonl",
    }
    assert prepared.main_sink == "main"


def test_records_and_inputs_must_fit_the_sources(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.yaml", TWO_SOURCES)
    with pytest.raises(ValueError, match=r"has 3 sources \(orders, bids, typed\).*inputs="):
        _prepare(pipeline, tmp_path / "w", [{"ts": 1}], None, None)
    with pytest.raises(ValueError, match=r"'nope', not a source.*orders, bids, typed"):
        _prepare(pipeline, tmp_path / "w", None, {"nope": []}, None)
    with pytest.raises(ValueError, match="not both"):
        _prepare(pipeline, tmp_path / "w", [], {"orders": []}, None)
    with pytest.raises(ValueError, match="cannot read the pipeline file"):
        _prepare(tmp_path / "missing.yaml", tmp_path / "w", [], None, None)
    bad = write(tmp_path / "bad.yaml", "name: x\nsources: [a]\nsinks: {}\n")
    with pytest.raises(ValueError, match="`sources` must be a mapping"):
        _prepare(bad, tmp_path / "w", [], None, None)


UDFS = """
name: udfs
sources: { in: { type: stdin, event_time: { field: ts } } }
udfs:
  default_path: { runtime: python, module: a, function: f }
  relative: { runtime: python, module: b, function: f, path: lib/udfs, python: venv/bin/python }
  absolute: { runtime: python, module: c, function: f, path: /opt/udfs, python: python3.12 }
  native: { runtime: native, function: geohash }
steps: [{ udf: default_path }, { udf: relative }, { udf: absolute }, { udf: native }]
sinks: { out: { type: stdout } }
output: out
checkpoint: { interval: 5s, location: "s3://prod-bucket/checkpoints" }
"""


def test_python_udfs_import_from_the_pipeline_folder(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "project" / "p.yaml", UDFS)
    base = pipeline.parent.resolve()
    work = tmp_path / "w"
    udfs = load(_prepare(pipeline, work, [], None, None).pipeline_file)["udfs"]
    assert udfs == {
        "default_path": {"runtime": "python", "module": "a", "function": "f", "path": str(base)},
        "relative": {
            "runtime": "python",
            "module": "b",
            "function": "f",
            "path": str(base / "lib" / "udfs"),
            "python": str(base / "venv" / "bin" / "python"),
        },
        # Absolute paths and interpreters looked up on PATH are left alone.
        "absolute": {
            "runtime": "python",
            "module": "c",
            "function": "f",
            "path": "/opt/udfs",
            "python": "python3.12",
        },
        "native": {"runtime": "native", "function": "geohash"},
    }
    spec = load(work / "pipeline.yaml")
    assert spec["checkpoint"] == {"interval": "5s", "location": str(work / "checkpoints")}

    # An explicit interpreter replaces every Python UDF's own.
    udfs = load(_prepare(pipeline, tmp_path / "w2", [], None, "/my/python").pipeline_file)["udfs"]
    assert [u.get("python") for u in udfs.values()] == ["/my/python"] * 3 + [None]


def test_main_output_is_the_first_output_sink_or_the_only_sink(tmp_path: Path) -> None:
    def main_sink(output: str) -> str | None:
        text = f"""
        name: m
        sources: {{ in: {{ type: stdin, event_time: {{ field: ts }} }} }}
        sinks: {{ a: {{ type: stdout }}{", b: { type: stdout }" if "b" in output else ""} }}
        {output}
        """
        return _prepare(write(tmp_path / "p.yaml", text), tmp_path / "w", [], None, None).main_sink

    assert main_sink("output: b") == "b"
    assert main_sink("output: [b, a]") == "b"
    assert main_sink("") == "a"  # invalid for the host, which says so; the only sink here
    assert main_sink("# b") is None


# --- finding the binary --------------------------------------------------------------------


def executable(path: Path) -> Path:
    write(path, "#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_find_binary_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("HEADWATER_BIN", raising=False)
    monkeypatch.delenv("CARGO_TARGET_DIR", raising=False)

    with pytest.raises(BinaryNotFoundError) as e:
        find_binary()
    message = str(e.value)
    assert "`headwater` on PATH" in message
    assert "$CARGO_TARGET_DIR is not set" in message
    assert str(home / ".cache/headwater/target/release/headwater") in message
    assert "./dev build" in message and "HEADWATER_BIN" in message

    cached = executable(home / ".cache/headwater/target/release/headwater")
    assert find_binary() == cached
    monkeypatch.setenv("CARGO_TARGET_DIR", str(tmp_path / "target"))
    targeted = executable(tmp_path / "target/release/headwater")
    assert find_binary() == targeted
    on_path = executable(tmp_path / "bin/headwater")
    assert find_binary() == on_path
    from_env = executable(tmp_path / "env/headwater")
    monkeypatch.setenv("HEADWATER_BIN", str(from_env))
    assert find_binary() == from_env
    given = executable(tmp_path / "given/headwater")
    assert find_binary(given) == given

    # An explicit choice that is wrong is an error, not a silent fallback.
    with pytest.raises(BinaryNotFoundError, match=r"binary= \(.*nope\) does not exist"):
        find_binary(tmp_path / "nope")
    monkeypatch.setenv("HEADWATER_BIN", str(tmp_path / "nope"))
    with pytest.raises(BinaryNotFoundError, match=r"\$HEADWATER_BIN .* does not exist"):
        find_binary()
    not_exec = write(tmp_path / "plain", "")
    with pytest.raises(BinaryNotFoundError, match="is not executable"):
        find_binary(not_exec)


# --- the run machinery, against a stand-in binary ------------------------------------------

FAKE_HOST = """
import json, os, subprocess, sys, time
import yaml

_, command, pipeline, *rest = sys.argv
spec = yaml.safe_load(open(pipeline))
print("fake host:", " ".join(sys.argv[1:]), file=sys.stderr)
if os.environ.get("FAKE_SLEEP"):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(os.environ["FAKE_SLEEP"], "w").write(str(child.pid))
    time.sleep(60)
if os.environ.get("FAKE_EXIT"):
    print("error: something broke", file=sys.stderr)
    sys.exit(int(os.environ["FAKE_EXIT"]))
(source,) = spec["sources"].values()
outputs = spec["output"] if isinstance(spec["output"], list) else [spec["output"]]
with open(spec["dlq"]["path"], "w") as dlq:
    files = {n: open(spec["sinks"][n]["path"], "w") for n in outputs}
    for line in open(source["path"]):
        record = json.loads(line)
        if record.get("bad"):
            dlq.write(json.dumps({"step": "steps[0] udf f", "raw": line.strip()}) + "\\n")
            continue
        record["python"] = os.environ["HEADWATER_PYTHON"]
        record["args"] = rest
        record["greeting"] = os.environ.get("GREETING")
        for f in files.values():
            f.write(json.dumps(record) + "\\n")
"""


@pytest.fixture()
def fake_host(tmp_path: Path) -> Path:
    script = write(tmp_path / "fake" / "host.py", FAKE_HOST)
    launcher = write(
        tmp_path / "fake" / "headwater", f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n'
    )
    launcher.chmod(0o755)
    return launcher


PIPELINE = """
name: fake
sources: { in: { type: stdin, event_time: { field: ts } } }
sinks: { a: { type: stdout }, b: { type: file, path: out/b.jsonl }, unused: { type: blackhole } }
output: [b, a]
"""


def test_run_collects_every_sink_and_the_dead_letters(fake_host: Path, tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p" / "pipeline.yaml", PIPELINE)
    result = run_pipeline(
        pipeline,
        [{"ts": 1}, {"ts": 2, "bad": True}, {"ts": 3}],
        binary=fake_host,
        env={"GREETING": "hi"},
        parallelism=3,
    )
    expected = [
        {"ts": 1, "python": sys.executable, "args": ["--fresh", "-p", "3"], "greeting": "hi"},
        {"ts": 3, "python": sys.executable, "args": ["--fresh", "-p", "3"], "greeting": "hi"},
    ]
    assert isinstance(result, RunResult)
    assert result.output == expected
    assert result.outputs == {"a": expected, "b": expected, "unused": []}
    assert result.dead_letters == [{"step": "steps[0] udf f", "raw": '{"ts": 2, "bad": true}'}]
    assert result.returncode == 0
    assert result.inputs == {"in": 3}
    assert "fake host: run " in result.stderr
    # Nothing was written next to the pipeline.
    assert sorted(p.name for p in pipeline.parent.iterdir()) == ["pipeline.yaml"]


def test_python_and_env_choose_the_worker_interpreter(fake_host: Path, tmp_path: Path) -> None:
    pipeline = write(tmp_path / "pipeline.yaml", PIPELINE)
    result = run_pipeline(pipeline, [{"ts": 1}], binary=fake_host, python="/venv/bin/python")
    assert result.output[0]["python"] == "/venv/bin/python"
    result = run_pipeline(
        pipeline, [{"ts": 1}], binary=fake_host, env={"HEADWATER_PYTHON": "/other/python"}
    )
    assert result.output[0]["python"] == "/other/python"


def test_workdir_is_kept(fake_host: Path, tmp_path: Path) -> None:
    pipeline = write(tmp_path / "pipeline.yaml", PIPELINE)
    work = tmp_path / "kept"
    run_pipeline(pipeline, [{"ts": 1}], binary=fake_host, workdir=work)
    assert (work / "pipeline.yaml").read_text().startswith("# Rewritten by headwater.testing")
    assert read_jsonl(work / "input" / "in.jsonl") == [{"ts": 1}]
    assert read_jsonl(work / "out" / "b.jsonl")[0]["ts"] == 1


def test_a_failed_run_raises_with_exit_code_stderr_and_pipeline(
    fake_host: Path, tmp_path: Path
) -> None:
    pipeline = write(tmp_path / "pipeline.yaml", PIPELINE)
    with pytest.raises(PipelineError) as e:
        run_pipeline(pipeline, [{"ts": 1}], binary=fake_host, env={"FAKE_EXIT": "2"})
    assert e.value.returncode == 2
    assert "error: something broke" in e.value.stderr
    message = str(e.value)
    assert "exit code 2 (2: the pipeline is invalid or could not start)" in message
    assert "error: something broke" in message
    assert "   1 | # Rewritten by headwater.testing" in message
    assert "name: fake" in e.value.pipeline_text

    result = run_pipeline(
        pipeline, [{"ts": 1}], binary=fake_host, env={"FAKE_EXIT": "1"}, check=False
    )
    assert result.returncode == 1
    assert "error: something broke" in result.stderr
    assert result.outputs == {"a": [], "b": [], "unused": []}


def test_a_timeout_kills_the_host_and_its_children(fake_host: Path, tmp_path: Path) -> None:
    pipeline = write(tmp_path / "pipeline.yaml", PIPELINE)
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(PipelineError, match="did not finish within 2s") as e:
        run_pipeline(
            pipeline, [{"ts": 1}], binary=fake_host, env={"FAKE_SLEEP": str(pid_file)}, timeout=2
        )
    assert time.monotonic() - started < 30
    assert e.value.returncode is None
    assert "fake host: run" in e.value.stderr
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the host's child process outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "\nState:\tZ" not in status


# --- end to end, with the real binary -----------------------------------------------------


@pytest.fixture(scope="session")
def headwater_bin() -> Path:
    try:
        return find_binary()
    except BinaryNotFoundError as e:
        if os.environ.get("HEADWATER_REQUIRE_BINARY", "") not in ("", "0"):
            pytest.fail(f"HEADWATER_REQUIRE_BINARY is set but {e}")
        pytest.skip(f"end-to-end test needs the headwater binary: {e}")


ENRICH = """
import os
import sys

import headwater as hw


@hw.map
def enrich(order):
    if order["quantity"] < 0:
        raise ValueError(f"negative quantity in order {order['id']}")
    return {**order, "revenue": order["price"] * order["quantity"]}


@hw.filter
def big(order):
    return order["revenue"] >= 10


@hw.map
def where(record):
    return {"id": record["id"], "python": sys.executable, "greeting": os.environ.get("GREETING")}
"""

ORDERS_PIPELINE = """
name: orders
parallelism: 1
sources:
  orders: { type: stdin, event_time: { field: ts } }
udfs:
  enrich: { runtime: python, module: order_udfs, function: enrich, path: udfs, timeout: 10s }
  big: { runtime: python, module: order_udfs, function: big, kind: filter, path: udfs }
steps:
  - udf: enrich
  - udf: big
  - map: { select: [id, revenue] }
sinks:
  results: { type: file, path: out/results.jsonl }
  console: { type: stdout }
output: [results, console]
tuning: { progress_interval: 0s }
"""

ORDERS = [
    {"ts": 1000, "id": 1, "price": 2.5, "quantity": 4},
    {"ts": 2000, "id": 2, "price": 1.0, "quantity": 3},
    {"ts": 3000, "id": 3, "price": 12.0, "quantity": -1},
    {"ts": 4000, "id": 4, "price": 20.0, "quantity": 2},
]


@pytest.fixture()
def orders_pipeline(tmp_path: Path) -> Path:
    write(tmp_path / "project" / "udfs" / "order_udfs.py", ENRICH)
    return write(tmp_path / "project" / "pipeline.yaml", ORDERS_PIPELINE)


def test_e2e_python_map_and_filter_udfs(headwater_bin: Path, orders_pipeline: Path) -> None:
    valid = [o for o in ORDERS if o["quantity"] >= 0]
    result = run_pipeline(orders_pipeline, valid, binary=headwater_bin, timeout=60)
    assert result.output == [{"id": 1, "revenue": 10.0}, {"id": 4, "revenue": 40.0}]
    assert result.outputs["console"] == result.output
    assert result.dead_letters == []
    assert result.returncode == 0
    # The run left nothing in the project: no .headwater/ state or DLQ, no out/.
    assert sorted(p.name for p in orders_pipeline.parent.iterdir()) == ["pipeline.yaml", "udfs"]


def test_e2e_a_failing_record_goes_to_the_dlq(headwater_bin: Path, orders_pipeline: Path) -> None:
    result = run_pipeline(orders_pipeline, ORDERS, binary=headwater_bin, timeout=60)
    assert result.output == [{"id": 1, "revenue": 10.0}, {"id": 4, "revenue": 40.0}]
    assert len(result.dead_letters) == 1
    dead = result.dead_letters[0]
    assert dead["source"] == "orders"
    assert dead["step"] == "steps[0] udf enrich"
    assert dead["error_class"] == "permanent"
    assert dead["error"] == "ValueError: negative quantity in order 3"
    assert "Traceback" in dead["detail"] and "order_udfs.py" in dead["detail"]
    assert json.loads(dead["raw"]) == ORDERS[2]
    assert dead["event_time"] == 3000


def test_e2e_workers_use_this_interpreter_and_env(headwater_bin: Path, tmp_path: Path) -> None:
    write(tmp_path / "order_udfs.py", ENRICH)
    pipeline = write(
        tmp_path / "pipeline.yaml",
        """
        name: where
        sources: { in: { type: file, path: "does/not/exist/*.jsonl", event_time: { field: ts } } }
        udfs: { where: { runtime: python, module: order_udfs, function: where } }
        steps: [{ udf: where }]
        sinks: { out: { type: blackhole } }
        output: out
        """,
    )
    result = run_pipeline(
        pipeline, [{"ts": 1, "id": 7}], binary=headwater_bin, env={"GREETING": "hello"}, timeout=60
    )
    assert result.output == [{"id": 7, "python": sys.executable, "greeting": "hello"}]


def test_e2e_python_udf_then_windows_over_two_sources(headwater_bin: Path, tmp_path: Path) -> None:
    write(tmp_path / "order_udfs.py", ENRICH)
    pipeline = write(
        tmp_path / "pipeline.yaml",
        """
        name: per-shop
        parallelism: 2
        sources:
          web: { type: file, path: web/*.jsonl, event_time: { field: ts } }
          shop: { type: file, path: shop/*.jsonl, event_time: { field: ts } }
        udfs:
          enrich: { runtime: python, module: order_udfs, function: enrich, workers: 2 }
        steps:
          - udf: enrich
          - key_by: shop
          - window: { type: tumbling, size: 10s, aggregates: { n: count(), revenue: sum(revenue) } }
        sinks: { totals: { type: stdout } }
        output: totals
        """,
    )
    web = [{"ts": 1000 * i, "id": i, "shop": "web", "price": 1.5, "quantity": i} for i in range(15)]
    shop = [{"ts": 500, "id": 100, "shop": "east", "price": 4.0, "quantity": 2}]
    result = run_pipeline(
        pipeline, inputs={"web": web, "shop": shop}, binary=headwater_bin, timeout=60
    )
    totals = sorted(result.output, key=lambda r: (r["shop"], r["window_start"]))
    assert totals == [
        {"shop": "east", "window_start": 0, "window_end": 10000, "n": 1, "revenue": 8.0},
        {"shop": "web", "window_start": 0, "window_end": 10000, "n": 10, "revenue": 67.5},
        {"shop": "web", "window_start": 10000, "window_end": 20000, "n": 5, "revenue": 90.0},
    ]
    assert result.dead_letters == []


def test_e2e_an_import_error_raises_with_the_traceback(headwater_bin: Path, tmp_path: Path) -> None:
    write(tmp_path / "order_udfs.py", "import headwater\nimport not_installed_anywhere\n")
    pipeline = write(tmp_path / "pipeline.yaml", ORDERS_PIPELINE.replace("path: udfs", "path: ."))
    with pytest.raises(PipelineError) as e:
        run_pipeline(pipeline, ORDERS, binary=headwater_bin, timeout=60)
    assert e.value.returncode == 2
    assert "No module named 'not_installed_anywhere'" in e.value.stderr


@pytest.mark.skipif(not QUICKSTART.is_dir(), reason="needs the examples of a source checkout")
def test_e2e_the_quickstart_matches_its_golden_output(headwater_bin: Path) -> None:
    lines = (QUICKSTART / "input" / "orders.jsonl").read_text().splitlines()
    result = run_pipeline(QUICKSTART / "pipeline.yaml", lines, binary=headwater_bin, timeout=60)

    def key(r: dict[str, Any]) -> str:
        return json.dumps(r, sort_keys=True)

    expected = QUICKSTART / "expected"
    assert sorted(result.output, key=key) == sorted(read_jsonl(expected / "results.jsonl"), key=key)
    assert result.outputs["console"] == result.output
    assert result.outputs["late"] == read_jsonl(expected / "late.jsonl")

    def envelope(d: dict[str, Any]) -> dict[str, Any]:
        ignored = ("failed_at", "first_failed_at", "partition_name")
        return {k: v for k, v in d.items() if k not in ignored}

    assert [envelope(d) for d in result.dead_letters] == [
        envelope(d) for d in read_jsonl(expected / "dlq.jsonl")
    ]
