#!/usr/bin/env bash
# Installs what building and testing Headwater needs, once; safe to run again. Sourced by ./dev
# and scripts/test.sh. On a fresh Debian/Ubuntu machine it needs only rustup and python3 (>= 3.10);
# everything else comes from apt (with sudo unless root), PyPI and the Go module proxy.
#
# At source time (every ./dev command): the apt packages of the native build, the Rust toolchain
# of rust-toolchain.toml, and the libpython that pyo3 links. Exports CARGO_TARGET_DIR.
# setup_python  the SDK's virtual environment ($HEADWATER_VENV); exports HEADWATER_PYTHON
# setup_go      a Go >= $HEADWATER_GO_MIN on PATH (MinIO for the S3 tests, the Go SDK checks)
set -euo pipefail

HEADWATER_CACHE="${HEADWATER_CACHE:-$HOME/.cache/headwater}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HEADWATER_CACHE/target}"
mkdir -p "$CARGO_TARGET_DIR"

setup_say() { echo "setup: $*" >&2; }
setup_die() { echo "setup: error: $*" >&2; exit 1; }

# ---- apt ----------------------------------------------------------------------------------------
# Runs a command as root: directly when root, else through sudo (which asks for a password when
# it needs one).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    setup_die "installing system packages needs root: run as root or install sudo (command: $*)"
  fi
}

# (No `| grep -q` on a command's output here: with pipefail, grep's early exit can fail the
# pipeline through SIGPIPE.)
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

# apt-get update at most once per ./dev command (exported: scripts/test.sh sources this again).
apt_update_once() {
  [ "${HEADWATER_APT_UPDATED:-0}" = 1 ] && return 0
  setup_say "apt-get update"
  as_root apt-get update -qq
  export HEADWATER_APT_UPDATED=1
}

# apt_install PKG... installs those of the packages that are not installed yet.
apt_install() {
  local p missing=()
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    setup_die "these Debian/Ubuntu packages are missing: ${missing[*]}. This machine has no apt-get:
  install their equivalents with its package manager, then rerun."
  fi
  apt_update_once
  setup_say "installing ${missing[*]} (apt-get; a few minutes the first time)"
  # sudo drops the environment: DEBIAN_FRONTEND goes through env.
  as_root env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The first of the packages that apt can install here, else nothing (call apt_update_once first).
apt_first_available() {
  local p policy
  for p in "$@"; do
    policy=$(apt-cache policy "$p" 2>/dev/null || true)
    if [[ "$policy" == *"Candidate: "[0-9]* ]]; then echo "$p"; return 0; fi
  done
}

# ---- system packages of the build and of the test services --------------------------------------
# libclang for RocksDB's bindings, a C/C++ compiler (build-essential) for RocksDB itself; cmake,
# pkg-config and the OpenSSL, zlib and curl headers for librdkafka (built from source by the
# rdkafka crate; zstd and lz4 come from crates, Cyrus SASL is not built; its rdkafka_conf.c
# includes curl/curl.h even with WITH_CURL=0, which a fresh Debian 12 root showed). ca-certificates: cargo and
# go check the TLS certificates of crates.io and the Go module proxy against the system's.
# protoc is not needed: the host's build uses the protoc of the protoc-bin-vendored crate.
APT_PACKAGES=(ca-certificates build-essential pkg-config cmake libclang-dev libssl-dev zlib1g-dev
  libcurl4-openssl-dev)
# Java 17+ and Maven run the real Kafka broker of the tests (integration/kafka/kafka.sh fetches
# Kafka's jars from Maven Central with mvn); a java or mvn already on PATH is used as it is.
java_major() {
  local line
  line=$(java -version 2>&1 | head -n 1) || return 1
  line=$(sed -E 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/' <<<"$line")
  if [[ "$line" == 1\ * ]]; then echo "${line#1 }"; else echo "${line%% *}"; fi
}
need_jdk=0
if ! command -v java >/dev/null 2>&1; then
  need_jdk=1
elif ! [[ "$(java_major || true)" =~ ^[0-9]+$ ]] || (("$(java_major)" < 17)); then
  setup_say "java on PATH is not Java 17 or newer ($(java -version 2>&1 | head -n 1)); installing one"
  need_jdk=1
fi
if ((need_jdk)) && command -v apt-get >/dev/null 2>&1; then
  installed_jdk=""
  for p in openjdk-17-jre-headless openjdk-21-jre-headless openjdk-25-jre-headless; do
    pkg_installed "$p" && installed_jdk=$p && break
  done
  if [ -z "$installed_jdk" ]; then
    # Debian 12 and Ubuntu 22.04/24.04 have 17; Debian 13 only 21 and 25.
    apt_update_once
    jdk=$(apt_first_available openjdk-17-jre-headless openjdk-21-jre-headless openjdk-25-jre-headless)
    [ -n "$jdk" ] || setup_die "no OpenJDK 17, 21 or 25 package in apt: install Java 17+ (or set PATH to one) and rerun"
    APT_PACKAGES+=("$jdk")
  fi
fi
command -v mvn >/dev/null 2>&1 || APT_PACKAGES+=(maven)
apt_install "${APT_PACKAGES[@]}"
unset need_jdk installed_jdk jdk p

# ---- Rust ---------------------------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
  if command -v cargo >/dev/null 2>&1; then
    setup_die "cargo is not rustup's ($(command -v cargo)): Headwater pins its Rust version in
  rust-toolchain.toml, which only rustup follows. Install rustup (https://rustup.rs), then rerun."
  fi
  setup_die "Rust is missing: install it with rustup (https://rustup.rs), open a new shell, then rerun"
fi
# rust-toolchain.toml pins the compiler and adds rustfmt and clippy: install them when missing
# (`rustup toolchain install` with no name installs the pinned one; older rustups: `rustup show`).
if ! rustup which rustc >/dev/null 2>&1 || ! rustup which rustfmt >/dev/null 2>&1 \
    || ! rustup which cargo-clippy >/dev/null 2>&1; then
  setup_say "installing the Rust toolchain of rust-toolchain.toml (with rustfmt and clippy)"
  rustup toolchain install >&2 2>/dev/null || rustup show >&2
  rustup which cargo-clippy >/dev/null 2>&1 \
    || setup_die "rustup did not install the toolchain of rust-toolchain.toml with clippy (see above)"
fi
# The Wasm UDF examples and tests build guests for wasm32-wasip1 (listed in rust-toolchain.toml's
# `targets`, which older rustups do not add to a toolchain that is already installed).
if [[ "$(rustup target list --installed 2>/dev/null || true)" != *wasm32-wasip1* ]]; then
  setup_say "adding the Rust target wasm32-wasip1 (Wasm UDFs)"
  rustup target add wasm32-wasip1 >&2
fi

# ---- Python: the interpreter, libpython for pyo3 ------------------------------------------------
# `python3` is the interpreter everything uses: pyo3 links its libpython into the host (the
# in-process UDF runtime), and the SDK's venv is made from it (the worker processes).
command -v python3 >/dev/null 2>&1 || setup_die "python3 is missing: install Python 3.10 or newer (apt-get install python3)"
HEADWATER_PY_VERSION=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || setup_die "python3 is Python $HEADWATER_PY_VERSION; Headwater needs 3.10 or newer"
# A Debian/Ubuntu package owns the interpreter when dpkg knows its file (pyenv's, conda's and
# /usr/local builds are not packaged: apt cannot add to them).
python_is_packaged() {
  local exe
  exe=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
  command -v dpkg >/dev/null 2>&1 && dpkg -S "$exe" >/dev/null 2>&1
}
# The shared libpython pyo3 links: LIBDIR/LDLIBRARY (Debian: /usr/lib/<multiarch>/libpython3.X.so,
# a symlink in libpython3.X-dev; pyenv: its own lib/ when built with --enable-shared).
libpython_path() {
  python3 - <<'EOF'
import os, sysconfig as s
v = s.get_config_var
if v("Py_ENABLE_SHARED"):
    for d in (v("LIBDIR"), os.path.join(v("LIBDIR") or "", v("MULTIARCH") or ""), v("LIBPL")):
        if d and os.path.exists(os.path.join(d, v("LDLIBRARY"))):
            print(os.path.join(d, v("LDLIBRARY")))
            break
EOF
}
if [ -z "$(libpython_path)" ]; then
  if python_is_packaged; then
    # libpython3.X-dev: the .so link and the headers (python3.X-dev depends on it).
    setup_say "pyo3 links libpython$HEADWATER_PY_VERSION.so, which is in libpython$HEADWATER_PY_VERSION-dev"
    apt_install "libpython$HEADWATER_PY_VERSION-dev"
  fi
  if [ -z "$(libpython_path)" ]; then
    setup_die "python3 ($(command -v python3), $HEADWATER_PY_VERSION) has no shared libpython, which the
  host links (pyo3, for in-process Python UDFs). A pyenv Python needs rebuilding with
  PYTHON_CONFIGURE_OPTS=--enable-shared (pyenv install --force $HEADWATER_PY_VERSION); or put the
  system's Python first on PATH (apt-get install python3 libpython3-dev)."
  fi
fi

# ---- The Python SDK's virtual environment -------------------------------------------------------
# Outside the clone, reused between runs; the host starts Python workers with its interpreter.
export HEADWATER_VENV="${HEADWATER_VENV:-$HEADWATER_CACHE/venv}"

# venv_state VENV: ok, or why the venv cannot be used as it is.
venv_state() {
  local venv=$1 v
  [ -e "$venv" ] || { echo "missing"; return; }
  [ -x "$venv/bin/python" ] || { echo "broken: no bin/python"; return; }
  v=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    || { echo "broken: its bin/python does not run (was its Python removed?)"; return; }
  [ "$v" = "$HEADWATER_PY_VERSION" ] \
    || { echo "stale: made with Python $v, python3 is now $HEADWATER_PY_VERSION"; return; }
  [ -x "$venv/bin/pip" ] || { echo "broken: no bin/pip (made without ensurepip?)"; return; }
  "$venv/bin/python" -m pip --version >/dev/null 2>&1 || { echo "broken: its pip fails"; return; }
  echo ok
}

setup_python() {
  local state
  state=$(venv_state "$HEADWATER_VENV")
  if [ "$state" != ok ]; then
    # Debian/Ubuntu split ensurepip (which venv needs to put pip in) into python3.X-venv;
    # `python3 -m venv --help` works without it, so check for ensurepip itself.
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
      if python_is_packaged; then
        setup_say "python3 cannot make a venv with pip: installing python$HEADWATER_PY_VERSION-venv"
        apt_install "python$HEADWATER_PY_VERSION-venv"
      fi
      python3 -c 'import ensurepip' >/dev/null 2>&1 || setup_die "python3 ($(command -v python3)) has no
  ensurepip module, so it cannot make a virtual environment with pip in it. Debian/Ubuntu:
  apt-get install python$HEADWATER_PY_VERSION-venv; other Pythons: reinstall with ensurepip."
    fi
    if [ "$state" = missing ]; then
      setup_say "creating the Python environment in $HEADWATER_VENV"
    else
      setup_say "the Python environment in $HEADWATER_VENV is $state: recreating it"
      rm -rf "$HEADWATER_VENV"
    fi
    python3 -m venv "$HEADWATER_VENV"
    state=$(venv_state "$HEADWATER_VENV")
    [ "$state" = ok ] || setup_die "python3 -m venv $HEADWATER_VENV made a venv that is $state"
  fi
  # Installs (or refreshes) the SDK in editable mode with its dev tools; quick when present.
  "$HEADWATER_VENV/bin/python" -m pip install -q --disable-pip-version-check -e "sdk-python[dev]"
  export HEADWATER_PYTHON="$HEADWATER_VENV/bin/python"
}

# ---- Go -------------------------------------------------------------------------------------------
# The tests build MinIO with `go install` (integration/s3/s3.sh), and the Go SDK's checks pin a
# staticcheck that needs Go 1.26. A `go` on PATH (or /usr/local/go) of at least HEADWATER_GO_MIN
# is used as it is; otherwise Go HEADWATER_GO_VERSION is installed into ~/.cache/headwater/go.
# It comes from the Go module proxy (the module golang.org/toolchain, which is also what
# GOTOOLCHAIN downloads; checked against the checksum database), fetched with whatever go there
# is, else Debian's golang-go: go.dev/dl is never used.
HEADWATER_GO_MIN="${HEADWATER_GO_MIN:-1.26}"
HEADWATER_GO_VERSION="${HEADWATER_GO_VERSION:-1.26.11}"

# go_version GO: prints e.g. 1.26.8 (nothing when it does not run).
go_version() {
  (cd / && GOTOOLCHAIN=local "$1" version 2>/dev/null) | awk '{print $3}' | sed 's/^go//' || true
}
version_at_least() { # version_at_least HAVE WANT
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

setup_go() {
  local go v dir="$HEADWATER_CACHE/go/go$HEADWATER_GO_VERSION"
  for go in "$(command -v go || true)" /usr/local/go/bin/go "$dir/bin/go"; do
    [ -n "$go" ] && [ -x "$go" ] || continue
    v=$(go_version "$go")
    if version_at_least "$v" "$HEADWATER_GO_MIN"; then
      use_go "$go"
      return 0
    fi
  done
  install_go "$dir"
  v=$(go_version "$dir/bin/go")
  version_at_least "$v" "$HEADWATER_GO_MIN" \
    || setup_die "installed Go $HEADWATER_GO_VERSION into $dir but it reports '$v' (need >= $HEADWATER_GO_MIN)"
  use_go "$dir/bin/go"
}

# use_go GO: puts GO first on PATH; GOTOOLCHAIN=local so that no go.mod (MinIO's, the SDK's)
# makes it fetch another toolchain.
use_go() {
  local bin
  bin=$(dirname "$1")
  case ":$PATH:" in
    ":$bin:"*) ;;
    *) export PATH="$bin:$PATH" ;;
  esac
  export GOTOOLCHAIN=local
  setup_say "Go $(go_version "$1") ($1)"
}

install_go() {
  local dir=$1 boot="" g arch tmp mod json src
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) setup_die "no Go toolchain for $(uname -m) is set up here: install Go >= $HEADWATER_GO_MIN yourself" ;;
  esac
  mod="golang.org/toolchain@v0.0.1-go$HEADWATER_GO_VERSION.linux-$arch"
  # Any go can download a module: the one on PATH even when too old, else Debian's.
  for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -n "$g" ] && [ -n "$(go_version "$g")" ]; then boot=$g; break; fi
  done
  if [ -z "$boot" ]; then
    setup_say "no go here: installing Debian's golang-go, only to download Go $HEADWATER_GO_VERSION"
    apt_install golang-go
    boot=/usr/lib/go/bin/go
    [ -x "$boot" ] || boot=$(command -v go || true)
    [ -n "$boot" ] || setup_die "installed golang-go but found no go command"
  fi
  setup_say "Go >= $HEADWATER_GO_MIN is needed (MinIO, the Go SDK's staticcheck); downloading $mod"
  setup_say "  from the Go module proxy with $boot (Go $(go_version "$boot")) into $dir (~75 MB)"
  mkdir -p "$(dirname "$dir")"
  tmp=$(mktemp -d "$(dirname "$dir")/.download.XXXXXX")
  printf 'module headwater.invalid/bootstrap\n\ngo 1.13\n' >"$tmp/go.mod"
  # A throw-away module cache (writable, so it can be removed): only the unpacked tree is kept.
  if ! json=$(cd "$tmp" && env GOPATH="$tmp/gopath" GOMODCACHE="$tmp/gopath/pkg/mod" \
      GOFLAGS=-modcacherw GO111MODULE=on GOTOOLCHAIN=local GOENV=off \
      "$boot" mod download -json "$mod" 2>"$tmp/err"); then
    cat "$tmp/err" >&2
    printf '%s\n' "$json" | grep -i '"Error"' >&2 || true
    chmod -R u+w "$tmp" 2>/dev/null || true
    rm -rf "$tmp"
    setup_die "could not download $mod through the Go module proxy
  (GOPROXY=$("$boot" env GOPROXY 2>/dev/null)). Install Go >= $HEADWATER_GO_MIN yourself and put it
  on PATH, or set HEADWATER_GO_VERSION to a version the proxy has."
  fi
  src=$(printf '%s\n' "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("Dir", ""))')
  if [ -z "$src" ] || [ ! -f "$src/bin/go" ]; then
    chmod -R u+w "$tmp" 2>/dev/null || true
    rm -rf "$tmp"
    setup_die "the download of $mod has no bin/go ($json)"
  fi
  rm -rf "$dir.tmp"
  cp -a "$src" "$dir.tmp"
  chmod -R u+w "$dir.tmp"
  # Module zips carry no executable bits: set them as the go command does for GOTOOLCHAIN.
  find "$dir.tmp/bin" "$dir.tmp/pkg/tool" -type f -exec chmod 755 {} +
  find "$dir.tmp/lib" -name '*.sh' -type f -exec chmod 755 {} + 2>/dev/null || true
  chmod -R u+w "$tmp"
  rm -rf "$tmp" "$dir"
  mv "$dir.tmp" "$dir"
  setup_say "installed Go $HEADWATER_GO_VERSION into $dir"
}
