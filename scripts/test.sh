#!/usr/bin/env bash
# The whole test suite, as CI runs it. Every step must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

step "cargo test (unit, property and golden tests; release profile)"
cargo test --release --locked --workspace

step "quickstart runs end to end"
out=$(mktemp -d)
"$CARGO_TARGET_DIR/release/headwater" run examples/quickstart/pipeline.yaml --quiet > "$out/stdout.jsonl"
test -s "$out/stdout.jsonl" || { echo "quickstart printed no results" >&2; exit 1; }
echo "quickstart: $(wc -l < "$out/stdout.jsonl") window results" >&2
rm -rf "$out"

step "Python SDK: ruff, mypy, generated code, pytest"
setup_python
V="$HEADWATER_VENV/bin"
(cd sdk-python && "$V/ruff" check . && "$V/ruff" format --check . && "$V/mypy")
scripts/gen-proto.sh --check
(cd sdk-python && "$V/python" -m pytest -q)
