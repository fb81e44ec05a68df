#!/usr/bin/env bash
# Smoke test for integration/s3/s3.sh: start a real MinIO on its own port with a temp
# data dir, exercise the S3 API (PUT/GET/LIST/DELETE, multipart, conditional PUT) with
# the standard-library SigV4 client, then stop it. Exits non-zero on any failure.
#
# Usage: integration/s3/smoke.sh [--help]
#   S3_SMOKE_PORT [19091]  port for the throwaway server (not S3_PORT, so a dev server
#                          on the default port is left alone)
#   S3_SMOKE_REQUIRE_CONDITIONAL [1]  0: only report If-None-Match/If-Match support
# The first run on a machine builds MinIO (~7 min on 2 cores); see s3.sh --help.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export S3_PORT="${S3_SMOKE_PORT:-19091}"
export S3_BUCKET="${S3_BUCKET:-headwater}"
unset HEADWATER_S3_DIR   # always a fresh temp data dir, removed by stop

S3="$HERE/s3.sh"
"$S3" build >/dev/null

cleanup() { "$S3" stop || true; }
trap cleanup EXIT

t0=$(date +%s%N)
"$S3" start
t1=$(date +%s%N)
echo "smoke: start-to-ready (incl. bucket creation): $(( (t1 - t0) / 1000000 )) ms"
"$S3" status

eval "$("$S3" env 2>/dev/null)"
python3 "$HERE/smoke.py"
