#!/usr/bin/env bash
# Installs what building and testing Headwater needs, once; safe to run again.
# Sourced by ./dev: exports CARGO_TARGET_DIR (outside the clone, shared by every command).
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/headwater/target}"
mkdir -p "$CARGO_TARGET_DIR"

# Native build needs: libclang for RocksDB's bindings, a C++ compiler for RocksDB itself;
# cmake, OpenSSL, curl and zlib headers for librdkafka (built from source by the rdkafka crate).
# Java 17 and Maven run the real Kafka broker of the tests (integration/kafka/kafka.sh).
APT_PACKAGES=(libclang-dev build-essential pkg-config cmake libssl-dev zlib1g-dev libcurl4-openssl-dev
  openjdk-17-jre-headless maven)
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

# The Python SDK's virtual environment (outside the clone, reused between runs).
export HEADWATER_VENV="${HEADWATER_VENV:-$HOME/.cache/headwater/venv}"
setup_python() {
  if [ ! -x "$HEADWATER_VENV/bin/python" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
      SUDO=""
      [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "setup: creating the Python environment in $HEADWATER_VENV" >&2
    python3 -m venv "$HEADWATER_VENV"
  fi
  # Installs (or refreshes) the SDK in editable mode with its dev tools; quick when present.
  "$HEADWATER_VENV/bin/pip" install -q --disable-pip-version-check -e "sdk-python[dev]"
  export HEADWATER_PYTHON="$HEADWATER_VENV/bin/python"
}
