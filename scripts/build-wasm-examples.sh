#!/usr/bin/env bash
# Builds the Wasm UDF modules of this repository (docs/wasm.md):
#   examples/wasm/rust-enrich/module/rust_enrich.wasm      the Rust example (headwater-wasm-guest)
#   examples/mixed/module/mixed_risk.wasm                  the mixed example's Wasm step (Rust)
#   sdk-go/examples/wasm-enrich/module/enrich.wasm         the Go example (sdk-go/wasm)
#   OUT/guest-rust.wasm, OUT/guest-go.wasm                 the guests of the host's tests and of
#                                                          `./dev bench wasm` (host/tests/wasm/)
# OUT is --out DIR, default $HEADWATER_CACHE/wasm-modules. Rust builds go through cargo (its own
# incremental cache, in $CARGO_TARGET_DIR); a Go module is rebuilt only when a Go file, go.mod or
# go.sum it is built from changed (a digest kept next to the output). Prints each module's path.
#
#   scripts/build-wasm-examples.sh [--out DIR] [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

HEADWATER_CACHE="${HEADWATER_CACHE:-$HOME/.cache/headwater}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HEADWATER_CACHE/target}"
out="$HEADWATER_CACHE/wasm-modules"
quiet=0
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --quiet) quiet=1; shift ;;
    *) echo "usage: $0 [--out DIR] [--quiet]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
say() { ((quiet)) || echo "build-wasm: $*" >&2; }

# ---- Rust: cdylib crates for wasm32-wasip1 ----------------------------------------------------
if [[ "$(rustup target list --installed 2>/dev/null || true)" != *wasm32-wasip1* ]]; then
  say "adding the Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1 >&2
fi
say "cargo build --release --target wasm32-wasip1 (rust-enrich, mixed-risk, headwater-wasm-test-guest)"
cargo_flags=(--release --locked --target wasm32-wasip1 -p rust-enrich -p mixed-risk -p headwater-wasm-test-guest)
((quiet)) && cargo_flags+=(--quiet)
cargo build "${cargo_flags[@]}" >&2
built="$CARGO_TARGET_DIR/wasm32-wasip1/release"
# Copies only when the content changed, so a module's mtime and cache entries stay put.
place() { cmp -s "$1" "$2" 2>/dev/null || { mkdir -p "$(dirname "$2")"; cp "$1" "$2.tmp.$$"; mv "$2.tmp.$$" "$2"; }; }
place "$built/rust_enrich.wasm" examples/wasm/rust-enrich/module/rust_enrich.wasm
place "$built/mixed_risk.wasm" examples/mixed/module/mixed_risk.wasm
place "$built/headwater_wasm_test_guest.wasm" "$out/guest-rust.wasm"

# ---- Go: reactors (c-shared) for GOOS=wasip1 GOARCH=wasm ---------------------------------------
GO="${HEADWATER_GO:-go}"
command -v "$GO" >/dev/null 2>&1 || { echo "build-wasm: Go 1.24 or newer is needed (go on PATH, or HEADWATER_GO)" >&2; exit 1; }
# go_build MODULE_DIR PACKAGE OUTPUT: builds when the digest of the Go sources it depends on
# (the package's module and sdk-go, which it reaches through a replace) changed.
go_build() {
  local module=$1 package=$2 output=$3 digest
  digest=$( (cd "$root" && find "$module" sdk-go -path '*/testdata' -prune -o \
      \( -name '*.go' -o -name go.mod -o -name go.sum \) -type f -print | LC_ALL=C sort | xargs sha256sum;
    "$GO" version) | sha256sum | cut -d' ' -f1)
  if [ -f "$output" ] && [ "$(cat "$output.digest" 2>/dev/null)" = "$digest" ]; then
    return 0
  fi
  say "GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared $package"
  mkdir -p "$(dirname "$output")"
  (cd "$module" && GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local "$GO" build -buildmode=c-shared \
    -o "$output.tmp.$$" "$package")
  mv "$output.tmp.$$" "$output"
  echo "$digest" > "$output.digest"
}
go_build sdk-go ./examples/wasm-enrich "$root/sdk-go/examples/wasm-enrich/module/enrich.wasm"
go_build host/tests/wasm/guest-go . "$out/guest-go.wasm"

for m in examples/wasm/rust-enrich/module/rust_enrich.wasm examples/mixed/module/mixed_risk.wasm \
    sdk-go/examples/wasm-enrich/module/enrich.wasm \
    "$out/guest-rust.wasm" "$out/guest-go.wasm"; do
  echo "$m"
done
