#!/usr/bin/env bash
# Regenerates the Python SDK's code from proto/ (the Rust host generates its own at build time).
#   scripts/gen-proto.sh          write the generated files
#   scripts/gen-proto.sh --check  fail if the committed files differ from proto/ (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${HEADWATER_PYTHON:-python3}"
out=sdk-python/src
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
"$PY" -m grpc_tools.protoc -I proto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/headwater/udf/v1/worker.proto
if [ "${1:-}" = "--check" ]; then
  for f in worker_pb2.py worker_pb2.pyi worker_pb2_grpc.py; do
    if ! diff -q "$out/headwater/udf/v1/$f" "sdk-python/src/headwater/udf/v1/$f" >/dev/null; then
      echo "sdk-python/src/headwater/udf/v1/$f is out of date with proto/; run scripts/gen-proto.sh" >&2
      exit 1
    fi
  done
  echo "generated Python code matches proto/" >&2
fi
