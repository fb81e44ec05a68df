"""The worker process end to end: a real gRPC server on a Unix socket, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import headwater as hw
from headwater.functions import Registry
from headwater.udf.v1 import worker_pb2 as pb
from headwater.udf.v1 import worker_pb2_grpc as pb_grpc
from headwater.worker import serve


@pytest.fixture()
def reg() -> Iterator[Registry]:
    hw.registry.clear()
    yield hw.registry
    hw.registry.clear()


def test_grpc_server_answers_handshake_and_streams_batches(reg: Registry) -> None:
    @hw.map
    def upper(r: dict[str, Any]) -> dict[str, Any]:
        return {"word": r["word"].upper()}

    with tempfile.TemporaryDirectory() as d:
        address = f"unix:{d}/w.sock"
        server = serve(address, reg)
        try:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.WorkerStub(channel)
                hello = stub.Handshake(pb.HandshakeRequest(protocol_version=1), timeout=5)
                assert [f.name for f in hello.functions] == ["upper"]
                requests = [
                    pb.BatchRequest(
                        batch_id=i,
                        function="upper",
                        records=[pb.Record(value=json.dumps({"word": w}).encode())],
                    )
                    for i, w in enumerate(["a", "b", "c"])
                ]
                responses = list(stub.Process(iter(requests), timeout=5))
                got = {r.batch_id: json.loads(r.results[0].outputs[0]) for r in responses}
                assert got == {0: {"word": "A"}, 1: {"word": "B"}, 2: {"word": "C"}}
                assert stub.Health(pb.HealthRequest(), timeout=5).serving
        finally:
            server.stop(grace=None)


def _run_worker(tmp: Path, module_source: str, module: str = "udfs") -> subprocess.Popen[str]:
    (tmp / f"{module}.py").write_text(textwrap.dedent(module_source))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headwater.worker",
            "--module",
            module,
            "--socket",
            str(tmp / "w.sock"),
            "--path",
            str(tmp),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_worker_command_serves_a_module(tmp_path: Path) -> None:
    proc = _run_worker(
        tmp_path,
        """
        import headwater as hw

        @hw.filter
        def positive(r):
            return r["n"] > 0
    """,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "headwater worker ready on unix:" in line and "positive" in line
        with grpc.insecure_channel(f"unix:{tmp_path}/w.sock") as channel:
            stub = pb_grpc.WorkerStub(channel)
            resp = next(
                iter(
                    stub.Process(
                        iter(
                            [
                                pb.BatchRequest(
                                    function="positive",
                                    records=[
                                        pb.Record(value=b'{"n":1}'),
                                        pb.Record(value=b'{"n":-1}'),
                                    ],
                                )
                            ]
                        ),
                        timeout=5,
                    )
                )
            )
            assert [len(r.outputs) for r in resp.results] == [1, 0]
    finally:
        proc.kill()
        proc.wait()


def test_an_import_error_stops_the_worker_with_the_traceback(tmp_path: Path) -> None:
    proc = _run_worker(
        tmp_path,
        """
        import headwater as hw
        raise RuntimeError("missing config file settings.toml")
    """,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "cannot import udfs" in err
    assert "RuntimeError: missing config file settings.toml" in err


def test_a_module_without_functions_is_refused(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = _run_worker(tmp_path, "x = 1\n")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "defines no functions" in err
    assert time.monotonic() - start < 30
