"""The worker process: serves the registered functions over gRPC.

    python -m headwater.worker --module my_udfs --socket /tmp/my_udfs.sock

The host normally starts workers itself; run one by hand to debug, or as a sidecar container
(``--address 0.0.0.0:50051``). A module that cannot be imported stops the worker at once with
the import error and exit code 3, so the pipeline fails to start with a message you can act on.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from headwater.functions import Registry, registry
from headwater.handler import Handler
from headwater.udf.v1 import worker_pb2 as pb
from headwater.udf.v1 import worker_pb2_grpc as pb_grpc

EXIT_IMPORT_ERROR = 3


class Servicer(pb_grpc.WorkerServicer):  # type: ignore[misc]
    """gRPC glue around :class:`Handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def Handshake(self, request: pb.HandshakeRequest, context: Any) -> pb.HandshakeResponse:
        return self.handler.handshake(request)

    def Process(
        self, request_iterator: Iterator[pb.BatchRequest], context: Any
    ) -> Iterator[pb.BatchResponse]:
        # Headers now, not with the first response: a client may wait for them before it
        # sends its first request.
        context.send_initial_metadata(())
        for request in request_iterator:
            yield self.handler.process(request)

    def Health(self, request: pb.HealthRequest, context: Any) -> pb.HealthResponse:
        return pb.HealthResponse(serving=True)


def load_modules(names: list[str], search_path: list[str]) -> None:
    """Imports the user's modules, which register their functions as a side effect."""
    for p in reversed(search_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    for name in names:
        importlib.import_module(name)


def serve(address: str, reg: Registry = registry, max_workers: int = 32) -> grpc.Server:
    """Starts a server for `reg` on `address` (``unix:/path`` or ``host:port``)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    pb_grpc.add_WorkerServicer_to_server(Servicer(Handler(reg)), server)
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen on {address}")
    server.start()
    return server


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Exits the process when its parent (the host) is gone: an orphaned worker would hold
    memory and sockets forever."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="headwater-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m headwater.worker",
        description="Serve Headwater UDFs from Python modules over gRPC.",
    )
    parser.add_argument(
        "--module",
        "-m",
        action="append",
        required=True,
        help="module defining @headwater functions (repeat for several)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="Unix domain socket path to listen on")
    where.add_argument("--address", help="host:port to listen on (sidecar containers)")
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        help="folder to import modules from (default: the current folder)",
    )
    args = parser.parse_args(argv)
    if args.socket:
        # Started by a host: exit with it, even when it was killed and could not stop us. The
        # host passes its pid, so a host killed before this line is noticed too.
        host = int(os.environ.get("HEADWATER_HOST_PID", "0") or 0) or os.getppid()
        if os.getppid() != host:
            return 0
        _exit_with_parent(host)
    try:
        load_modules(args.module, args.path or [os.getcwd()])
    except Exception:
        sys.stderr.write(
            f"headwater worker: cannot import {', '.join(args.module)}:\n{traceback.format_exc()}"
        )
        return EXIT_IMPORT_ERROR
    if not registry.all():
        sys.stderr.write(
            f"headwater worker: {', '.join(args.module)} defines no functions; "
            "decorate them with @headwater.map, @headwater.filter, ...\n"
        )
        return EXIT_IMPORT_ERROR
    address = f"unix:{args.socket}" if args.socket else args.address
    if args.socket and os.path.exists(args.socket):
        os.unlink(args.socket)
    server = serve(address)
    names = ", ".join(f.name for f in registry.all())
    print(f"headwater worker ready on {address}: {names}", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop(grace=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
