#!/usr/bin/env bash
# Installs what building and testing Headwater needs, once; safe to run again.
# Sourced by ./dev: exports CARGO_TARGET_DIR (outside the clone, shared by every command).
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/headwater/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Native build needs: libclang for RocksDB's bindings, a C++ compiler for RocksDB itself.
APT_PACKAGES=(libclang-dev build-essential pkg-config)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is missing; install it with rustup (https://rustup.rs), then rerun" >&2
  exit 1
fi
# rust-toolchain.toml pins the compiler and adds rustfmt and clippy.
rustup show active-toolchain >/dev/null
