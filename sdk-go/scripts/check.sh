#!/usr/bin/env bash
# What CI runs for the Go SDK: generated code up to date, gofmt, go vet, staticcheck, and the
# tests (with the race detector). Needs Go 1.26 or newer (staticcheck's pinned release) and
# the Go module proxy; nothing else is downloaded (protoc comes from PyPI's grpcio-tools).
#
#   sdk-go/scripts/check.sh
#
# The end-to-end tests of headwatertest/ and examples/ run when HEADWATER_BIN names a
# headwater binary with the Go runtime; HEADWATER_REQUIRE_BINARY=1 makes its absence a
# failure instead of a skip.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SDK_GO"

step() { printf '\n==> %s\n' "$*" >&2; }

step "go: $(go version)"
step "tool versions agree (scripts/versions.env and go.mod)"
in_gomod=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
if [ "$in_gomod" != "$PROTOC_GEN_GO_VERSION" ]; then
  echo "go.mod links google.golang.org/protobuf $in_gomod but scripts/versions.env pins" \
    "protoc-gen-go $PROTOC_GEN_GO_VERSION; make them equal, then run scripts/gen-proto.sh" >&2
  exit 1
fi

step "generated code matches proto/ (scripts/gen-proto.sh --check)"
scripts/gen-proto.sh --check

step "gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "not gofmt-ed (run gofmt -w on them):" >&2
  echo "$unformatted" >&2
  exit 1
fi

step "go mod tidy leaves go.mod and go.sum as they are"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
cp go.mod go.sum "$tmp/"
go mod tidy
if ! diff -q go.mod "$tmp/go.mod" >/dev/null || ! diff -q go.sum "$tmp/go.sum" >/dev/null; then
  diff -u "$tmp/go.mod" go.mod >&2 || true
  cp "$tmp/go.mod" "$tmp/go.sum" .
  echo "go.mod or go.sum is not tidy; run \`go mod tidy\` in sdk-go/ and commit the result" >&2
  exit 1
fi

step "go vet ./..."
go vet ./...

step "staticcheck ./... ($STATICCHECK_VERSION)"
"$(staticcheck_bin)" ./...

step "go test -race ./..."
go test -race -count=1 ./...
