#!/usr/bin/env bash
# The whole test suite, as CI runs it. Every step must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step() { printf '\n==> %s\n' "$*" >&2; }

# The Python SDK first: host tests start real Python workers from this checkout's SDK.
step "Python environment (SDK installed from this checkout)"
setup_python

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

step "cargo test (unit, property and golden tests; release profile)"
cargo test --release --locked --workspace

step "quickstart runs end to end (Python UDF) and prints the expected results"
out=$(mktemp -d)
"$CARGO_TARGET_DIR/release/headwater" run examples/quickstart/pipeline.yaml --quiet > "$out/stdout.jsonl"
diff -u examples/quickstart/expected/stdout.jsonl "$out/stdout.jsonl" >&2 \
  || { echo "quickstart output differs from examples/quickstart/expected/stdout.jsonl" >&2; exit 1; }
echo "quickstart: $(wc -l < "$out/stdout.jsonl") window results, as expected" >&2
rm -rf "$out"

step "Python SDK: ruff, mypy, generated code, pytest (harness tests use the real binary)"
V="$HEADWATER_VENV/bin"
(cd sdk-python && "$V/ruff" check . && "$V/ruff" format --check . && "$V/mypy")
scripts/gen-proto.sh --check
(cd sdk-python && HEADWATER_BIN="$CARGO_TARGET_DIR/release/headwater" HEADWATER_REQUIRE_BINARY=1 \
  "$V/python" -m pytest -q)
