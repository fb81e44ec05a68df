#!/usr/bin/env bash
# Regenerates the Python SDK's code from proto/ (the Rust host generates its own at build time).
#   scripts/gen-proto.sh          write the generated files
#   scripts/gen-proto.sh --check  fail if the committed files differ from proto/ (CI)
#
# The generator is PyPI's grpcio-tools at exactly the version pinned in sdk-python/pyproject.toml
# (the `dev` extra; ./dev test installs it in the project venv). Its version is written into the
# generated files, so with the pin the check fails only when proto/ changes. The Go SDK generates
# with the same grpcio-tools: sdk-go/scripts/versions.env must pin the same version.
#
# Python: $HEADWATER_PYTHON, else the project venv ($HEADWATER_VENV, ~/.cache/headwater/venv),
# else python3.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=write
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

die() { echo "gen-proto: error: $*" >&2; exit 1; }

# The pin: the `"grpcio-tools==X"` line of sdk-python/pyproject.toml.
PIN=$(sed -n 's/^[[:space:]]*"grpcio-tools==\([^"]*\)".*/\1/p' sdk-python/pyproject.toml)
[ -n "$PIN" ] || die "sdk-python/pyproject.toml pins no grpcio-tools (want a line \"grpcio-tools==X.Y.Z\" in the dev extra)"
GO_VERSIONS=sdk-go/scripts/versions.env
if [ -f "$GO_VERSIONS" ]; then
  go_pin=$(sed -n 's/^GRPCIO_TOOLS_VERSION=\(.*\)$/\1/p' "$GO_VERSIONS")
  [ "$go_pin" = "$PIN" ] || die "grpcio-tools is pinned to $PIN in sdk-python/pyproject.toml but to
  ${go_pin:-nothing} in $GO_VERSIONS (GRPCIO_TOOLS_VERSION): make them equal, then run
  scripts/gen-proto.sh and sdk-go/scripts/gen-proto.sh and commit the results"
fi

VENV="${HEADWATER_VENV:-$HOME/.cache/headwater/venv}"
if [ -n "${HEADWATER_PYTHON:-}" ]; then
  PY=$HEADWATER_PYTHON
elif [ -x "$VENV/bin/python" ]; then
  PY=$VENV/bin/python
else
  PY=python3
fi
have=$("$PY" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)
if [ "$have" != "$PIN" ]; then
  die "the code is generated with grpcio-tools $PIN (sdk-python/pyproject.toml), but $PY has
  ${have:-no grpcio-tools}. Install it: $PY -m pip install grpcio-tools==$PIN
  (or run ./dev test once: it installs sdk-python[dev] into $VENV), then rerun."
fi

out=sdk-python/src
if [ "$mode" = check ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
"$PY" -m grpc_tools.protoc -I proto --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/headwater/udf/v1/worker.proto

if [ "$mode" = check ]; then
  status=0
  for f in worker_pb2.py worker_pb2.pyi worker_pb2_grpc.py; do
    committed="sdk-python/src/headwater/udf/v1/$f"
    if ! diff -u "$committed" "$out/headwater/udf/v1/$f" >"$out/diff" 2>&1; then
      echo "$committed is out of date with proto/headwater/udf/v1/worker.proto" \
        "(generated with grpcio-tools $PIN):" >&2
      head -n 30 "$out/diff" >&2
      status=1
    fi
  done
  if [ "$status" -ne 0 ]; then
    echo "gen-proto: fix: run scripts/gen-proto.sh and commit the files it rewrites in" \
      "sdk-python/src/headwater/udf/v1/ (also run sdk-go/scripts/gen-proto.sh if proto/ changed)." >&2
    echo "gen-proto: if proto/ did not change, the generator differs: grpcio-tools is pinned in" \
      "sdk-python/pyproject.toml ($PIN); bump the runtime floors there too when you change it." >&2
    exit 1
  fi
  echo "generated Python code matches proto/ (grpcio-tools $PIN)" >&2
fi
