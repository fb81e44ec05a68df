#!/usr/bin/env bash
# The whole test suite, as CI runs it. Every step must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step() { printf '\n==> %s\n' "$*" >&2; }

# The Python SDK first: host tests start real Python workers from this checkout's SDK.
step "Python environment (SDK installed from this checkout)"
setup_python

# Go builds MinIO (below) and runs the Go SDK's checks: a go >= 1.26 on PATH is used, else one
# is installed from the Go module proxy into ~/.cache/headwater/go (scripts/setup.sh, setup_go).
step "Go toolchain"
setup_go

# Checkpoint tests run against a real S3-compatible server (MinIO, built once with Go and
# cached under ~/.cache/headwater/s3; the first build takes ~7 minutes on 2 cores).
step "S3-compatible server for the checkpoint tests (integration/s3/s3.sh build)"
integration/s3/s3.sh build

# Kafka tests run against a real broker: Apache Kafka (KRaft) from the Maven Central jars,
# cached under ~/.cache/headwater/kafka, started here on a port of this run's own and stopped
# when the suite ends.
step "Kafka broker for the Kafka tests (integration/kafka/kafka.sh start)"
export KAFKA_PORT="${HEADWATER_TEST_KAFKA_PORT:-$((22000 + 2 * ($$ % 400)))}"
HEADWATER_KAFKA_DIR="$(mktemp -d -t headwater-kafka-ci.XXXXXX)"
export HEADWATER_KAFKA_DIR
stop_kafka() { integration/kafka/kafka.sh stop >/dev/null 2>&1 || true; rm -rf "$HEADWATER_KAFKA_DIR"; }
trap stop_kafka EXIT
HEADWATER_TEST_KAFKA="$(integration/kafka/kafka.sh start)"
export HEADWATER_TEST_KAFKA
echo "Kafka broker at $HEADWATER_TEST_KAFKA" >&2

step "cargo fmt --check"
cargo fmt --all -- --check

step "imports run one way between the host's modules (scripts/check-layers.py)"
python3 scripts/check-layers.py

step "cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings

step "cargo test (unit, property and golden tests; release profile)"
cargo test --release --locked --workspace

step "quickstart runs end to end (Python UDF), prints and commits the expected results"
out=$(mktemp -d)
hw="$CARGO_TARGET_DIR/release/headwater"
"$hw" run examples/quickstart/pipeline.yaml --quiet --fresh > "$out/stdout.jsonl"
diff -u examples/quickstart/expected/stdout.jsonl "$out/stdout.jsonl" >&2 \
  || { echo "quickstart output differs from examples/quickstart/expected/stdout.jsonl" >&2; exit 1; }
cat examples/quickstart/out/results-*.jsonl > "$out/committed.jsonl"
diff -u <(sort examples/quickstart/expected/stdout.jsonl) <(sort "$out/committed.jsonl") >&2 \
  || { echo "the quickstart's committed part files differ from its expected results" >&2; exit 1; }
# Run again: it resumes from the final checkpoint, so nothing is read or written twice.
"$hw" run examples/quickstart/pipeline.yaml --quiet > "$out/again.jsonl"
[ ! -s "$out/again.jsonl" ] \
  || { echo "a resumed quickstart printed results again" >&2; exit 1; }
echo "quickstart: $(wc -l < "$out/stdout.jsonl") window results, committed once, none repeated on resume" >&2
rm -rf "$out"

step "Python SDK: ruff, mypy, generated code, pytest (harness tests use the real binary)"
V="$HEADWATER_VENV/bin"
(cd sdk-python && "$V/ruff" check . && "$V/ruff" format --check . && "$V/mypy")
scripts/gen-proto.sh --check
(cd sdk-python && HEADWATER_BIN="$CARGO_TARGET_DIR/release/headwater" HEADWATER_REQUIRE_BINARY=1 \
  "$V/python" -m pytest -q)

# Pinned tools (staticcheck, protoc-gen-go*) are installed on first use with `go install` into
# ~/.cache/headwater/gobin; protoc is PyPI's grpcio-tools (sdk-go/scripts/lib.sh).
step "Go SDK: generated code, gofmt, go mod tidy, go vet, staticcheck, go test -race (end-to-end tests use the real binary)"
HEADWATER_BIN="$CARGO_TARGET_DIR/release/headwater" HEADWATER_REQUIRE_BINARY=1 sdk-go/scripts/check.sh

step "Go programs outside the SDK (host tests' worker, benchmark, mixed example): gofmt, go vet, go test"
for m in host/tests/go-worker bench/go-udf examples/mixed/velocity; do
  (
    cd "$m"
    unformatted=$(gofmt -l .)
    [ -z "$unformatted" ] || { echo "$m: not gofmt-ed (run gofmt -w): $unformatted" >&2; exit 1; }
    GOTOOLCHAIN=local go vet ./...
    GOTOOLCHAIN=local go test -count=1 ./...
  )
done

step "mixed example (Python UDF -> Go UDF -> Wasm UDF): a run prints and commits the expected results"
"$V/ruff" check examples/mixed && "$V/ruff" format --check examples/mixed
scripts/build-wasm-examples.sh --quiet > /dev/null   # the Wasm step's module/mixed_risk.wasm
out=$(mktemp -d)
hw="$CARGO_TARGET_DIR/release/headwater"
"$hw" run examples/mixed/pipeline.yaml --quiet --fresh > "$out/stdout.jsonl"
# Accounts are screened concurrently: each account's payments come out in order, the accounts
# interleaved; the expected file is sorted (by time).
diff -u examples/mixed/expected/stdout.jsonl <(sort "$out/stdout.jsonl") >&2 \
  || { echo "mixed output differs from examples/mixed/expected/stdout.jsonl" >&2; exit 1; }
cat examples/mixed/out/screened-*.jsonl > "$out/committed.jsonl"
diff -u examples/mixed/expected/stdout.jsonl <(sort "$out/committed.jsonl") >&2 \
  || { echo "the mixed example's committed part files differ from its expected results" >&2; exit 1; }
dlq=examples/mixed/.headwater/mixed/dlq.jsonl
[ "$(wc -l < "$dlq")" -eq 1 ] && grep -qF "payment p07: no exchange rate for 'XYZ'" "$dlq" \
  || { echo "the mixed example's DLQ should hold payment p07 alone: $(cat "$dlq")" >&2; exit 1; }
"$hw" run examples/mixed/pipeline.yaml --quiet > "$out/again.jsonl"
[ ! -s "$out/again.jsonl" ] \
  || { echo "a resumed mixed example printed results again" >&2; exit 1; }
echo "mixed: $(wc -l < "$out/stdout.jsonl") payments screened and rated (Python, then Go, then Wasm), 1 dead letter, none repeated on resume" >&2
rm -rf "$out"

step "surge example (Kafka -> Python UDF -> window -> Kafka): UDF and pipeline tests, then a real run against the broker matches its reference"
(cd examples/surge && "$V/ruff" check . && "$V/ruff" format --check . \
  && HEADWATER_BIN="$CARGO_TARGET_DIR/release/headwater" "$V/python" -m pytest -q -p no:cacheprovider)
KAFKA_BROKERS="$HEADWATER_TEST_KAFKA" HEADWATER_BIN="$CARGO_TARGET_DIR/release/headwater" \
  HEADWATER_PYTHON="$V/python" examples/surge/run.sh --check
