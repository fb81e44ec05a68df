# Shared by gen-proto.sh and check.sh (sourced, not run): pinned tools, installed on demand.
#
# Go tools go into a project-local GOBIN ($HEADWATER_GOBIN, default ~/.cache/headwater/gobin),
# installed with `go install pkg@version` through the Go module proxy; protoc is PyPI's
# grpcio-tools in a virtual environment ($HEADWATER_PROTOC_VENV, default
# ~/.cache/headwater/go-protoc-venv). Nothing else is downloaded.

SDK_GO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=versions.env
source "$SDK_GO/scripts/versions.env"

# The go.mod `go` line never makes the go command fetch another toolchain.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
GOBIN_DIR="${HEADWATER_GOBIN:-$HOME/.cache/headwater/gobin}"

# ensure_go_tool NAME PACKAGE VERSION VERSION_TEXT: installs PACKAGE@VERSION into GOBIN_DIR
# unless `NAME --version` there already prints VERSION_TEXT; prints the tool's path.
ensure_go_tool() {
  local name=$1 pkg=$2 version=$3 want=$4 bin="$GOBIN_DIR/$1"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF -- "$want"; then
    echo "$bin"
    return
  fi
  echo "installing $pkg@$version into $GOBIN_DIR" >&2
  mkdir -p "$GOBIN_DIR"
  (cd "$SDK_GO" && GOBIN="$GOBIN_DIR" go install "$pkg@$version") >&2
  echo "$bin"
}

protoc_gen_go() {
  ensure_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go \
    "$PROTOC_GEN_GO_VERSION" "protoc-gen-go $PROTOC_GEN_GO_VERSION"
}

protoc_gen_go_grpc() {
  ensure_go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
    "$PROTOC_GEN_GO_GRPC_VERSION" "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}"
}

staticcheck_bin() {
  # `staticcheck -version` prints e.g. "staticcheck 2026.2.2 (0.8.2)".
  ensure_go_tool staticcheck honnef.co/go/tools/cmd/staticcheck \
    "$STATICCHECK_VERSION" "(${STATICCHECK_VERSION#v})"
}

# A Python interpreter whose grpcio-tools is exactly GRPCIO_TOOLS_VERSION: $HEADWATER_PROTOC_PYTHON,
# else the project's venv when it has that version, else a venv of its own made here.
protoc_python() {
  local py candidates=()
  [ -n "${HEADWATER_PROTOC_PYTHON:-}" ] && candidates+=("$HEADWATER_PROTOC_PYTHON")
  candidates+=("${HEADWATER_VENV:-$HOME/.cache/headwater/venv}/bin/python")
  local venv="${HEADWATER_PROTOC_VENV:-$HOME/.cache/headwater/go-protoc-venv}"
  candidates+=("$venv/bin/python")
  for py in "${candidates[@]}"; do
    if [ -x "$py" ] && [ "$(grpcio_tools_version "$py")" = "$GRPCIO_TOOLS_VERSION" ]; then
      echo "$py"
      return
    fi
  done
  echo "installing grpcio-tools==$GRPCIO_TOOLS_VERSION into $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
  echo "$venv/bin/python"
}

grpcio_tools_version() {
  "$1" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true
}
