#!/usr/bin/env bash
# Regenerates the Go SDK's protocol code from proto/ into sdk-go/internal/pb/udfv1/.
#   sdk-go/scripts/gen-proto.sh          write the generated files
#   sdk-go/scripts/gen-proto.sh --check  fail if the committed files differ from what proto/
#                                        and the pinned generators give (CI)
# Generator versions are pinned in scripts/versions.env; missing tools are installed first
# (Go tools through the Go module proxy, protoc as PyPI's grpcio-tools).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mode=write
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

REPO="$(cd "$SDK_GO/.." && pwd)"
MODULE=github.com/headwater-streaming/headwater/sdk-go
PROTO=headwater/udf/v1/worker.proto
PKG_DIR=internal/pb/udfv1
IMPORT="$MODULE/$PKG_DIR"

gen_go=$(protoc_gen_go)
gen_go_grpc=$(protoc_gen_go_grpc)
py=$(protoc_python)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# proto/ sets no go_package: the M option maps the file to the SDK's package, and module=
# makes the output paths relative to the module root.
"$py" -m grpc_tools.protoc -I "$REPO/proto" \
  --plugin=protoc-gen-go="$gen_go" --plugin=protoc-gen-go-grpc="$gen_go_grpc" \
  --go_out="$out" --go_opt=module="$MODULE" --go_opt=M"$PROTO"="$IMPORT" \
  --go-grpc_out="$out" --go-grpc_opt=module="$MODULE" --go-grpc_opt=M"$PROTO"="$IMPORT" \
  "$REPO/proto/$PROTO"

generated=(worker.pb.go worker_grpc.pb.go)
if [ "$mode" = check ]; then
  status=0
  for f in "${generated[@]}"; do
    if ! diff -u "$SDK_GO/$PKG_DIR/$f" "$out/$PKG_DIR/$f" >"$out/diff" 2>&1; then
      echo "sdk-go/$PKG_DIR/$f is out of date with proto/ (or with the generator versions in" \
        "sdk-go/scripts/versions.env); run sdk-go/scripts/gen-proto.sh and commit the result:" >&2
      head -40 "$out/diff" >&2
      status=1
    fi
  done
  for f in "$SDK_GO/$PKG_DIR"/*.go; do
    base=$(basename "$f")
    if [ ! -e "$out/$PKG_DIR/$base" ]; then
      echo "sdk-go/$PKG_DIR/$base is not generated from proto/; remove it" >&2
      status=1
    fi
  done
  [ "$status" -eq 0 ] && echo "generated Go code matches proto/" >&2
  exit "$status"
fi

mkdir -p "$SDK_GO/$PKG_DIR"
rm -f "$SDK_GO/$PKG_DIR"/*.pb.go
for f in "${generated[@]}"; do
  cp "$out/$PKG_DIR/$f" "$SDK_GO/$PKG_DIR/$f"
done
echo "wrote sdk-go/$PKG_DIR/{$(IFS=,; echo "${generated[*]}")}" >&2
