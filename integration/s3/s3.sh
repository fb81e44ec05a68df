#!/usr/bin/env bash
# Run a real S3-compatible object store (MinIO, built from source with `go install`)
# on 127.0.0.1 for Headwater development and CI. See `s3.sh --help`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="integration/s3/s3.sh"

# ---- configuration (all overridable from the environment) --------------------------------
# MinIO publishes no semver tags, so the Go module proxy serves it by pseudo-version.
# This one is the 2026-02-12 master commit (the repository's last before it was archived).
MINIO_MODULE="github.com/minio/minio"
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
S3_HOST="${S3_HOST:-127.0.0.1}"
S3_PORT="${S3_PORT:-19000}"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-headwater}"              # MinIO: >= 3 characters
S3_SECRET_KEY="${S3_SECRET_KEY:-headwater-dev-secret}"   # MinIO: >= 8 characters
S3_BUCKET="${S3_BUCKET:-headwater}"
S3_REGION="${S3_REGION:-us-east-1}"
S3_START_TIMEOUT="${S3_START_TIMEOUT:-60}"
S3_CACHE_DIR="${S3_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/headwater/s3}"
S3_RUN_DIR="${S3_RUN_DIR:-${TMPDIR:-/tmp}/headwater-s3-$S3_PORT}"
ENDPOINT="http://$S3_HOST:$S3_PORT"

BIN_DIR="$S3_CACHE_DIR/bin"
MINIO_BIN="${S3_SERVER_BIN:-$BIN_DIR/minio-$MINIO_VERSION}"
PID_FILE="$S3_RUN_DIR/server.pid"
LOG_FILE="$S3_RUN_DIR/server.log"
DATA_FILE="$S3_RUN_DIR/data-dir"       # where this instance keeps its objects
EPHEMERAL_FILE="$S3_RUN_DIR/ephemeral" # present: data dir is a temp dir, removed on stop

usage() {
  cat <<EOF
Usage: $PROG start|stop|status|logs [-f]|env|build|--help

Runs a real S3-compatible server (MinIO $MINIO_VERSION, built from source with
'go install' and cached) on $S3_HOST:\$S3_PORT for local development and CI.

Commands:
  start    build the server if not cached, start it in the background, wait until a
           signed ListBuckets succeeds, create bucket \$S3_BUCKET, print the endpoint.
           Idempotent: if this instance already runs, it only re-checks the bucket.
  stop     stop the server started by 'start' (pid file); a temp data dir is removed.
  status   print whether it runs and answers; exit 0 if ready, 1 otherwise.
  logs     print the last 100 lines of the server log ('logs -f' follows it).
  env      print 'export' lines for clients: object_store's AmazonS3Builder::from_env(),
           the AWS CLI/SDKs, s3client.py. Use:  eval "\$($PROG env)"
  build    only build/install the server binary (e.g. to warm a CI cache).

Environment (defaults in brackets):
  S3_PORT          [19000] port of the S3 API (bound to \$S3_HOST [127.0.0.1])
  S3_ACCESS_KEY    [headwater]              access key (>= 3 chars)
  S3_SECRET_KEY    [headwater-dev-secret]   secret key (>= 8 chars)
  S3_BUCKET        [headwater] bucket created by 'start'
  S3_REGION        [us-east-1]
  HEADWATER_S3_DIR data directory, kept across restarts; unset: a fresh temp dir,
                   deleted by 'stop'
  S3_START_TIMEOUT [60] seconds to wait for readiness
  S3_CACHE_DIR     [\$XDG_CACHE_HOME|~/.cache/headwater/s3] binaries and build logs
  S3_RUN_DIR       [\${TMPDIR:-/tmp}/headwater-s3-\$S3_PORT] pid file and server log
  MINIO_VERSION    [$MINIO_VERSION] Go module version to build
  S3_SERVER_BIN    use this MinIO binary instead of building one
  GO               go command [go on PATH, else /usr/local/go/bin/go]

The first 'start' on a machine compiles MinIO (about 7 minutes on 2 cores, ~110 MB
binary, ~2 GB of Go module + build cache); later starts take about a second.
Needs: bash, python3 (standard library only), Go >= 1.24 for the first build.
EOF
}

die() { echo "s3.sh: error: $*" >&2; exit 1; }
log() { echo "s3.sh: $*" >&2; }

client() { python3 "$HERE/s3client.py" --endpoint "$ENDPOINT" --access-key "$S3_ACCESS_KEY" \
  --secret-key "$S3_SECRET_KEY" --region "$S3_REGION" "$@"; }

find_go() {
  if [[ -n "${GO:-}" ]]; then command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not an executable"; echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go; return; fi
  die "Go is needed to build MinIO once, and was not found (not on PATH, not /usr/local/go/bin/go).
  ./dev test installs one (scripts/setup.sh, setup_go: from the Go module proxy into
  ~/.cache/headwater/go); or install Go >= 1.24 yourself (Debian 12's golang-go is 1.19, too old),
  set GO=/path/to/go, or point S3_SERVER_BIN at an existing MinIO binary."
}

build() {
  if [[ -x "$MINIO_BIN" ]]; then return 0; fi
  [[ -z "${S3_SERVER_BIN:-}" ]] || die "S3_SERVER_BIN=$S3_SERVER_BIN is not an executable file"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed (readiness check and bucket creation use it)"
  local go; go="$(find_go)"
  mkdir -p "$BIN_DIR"
  # Serialize concurrent builds (two shells starting at once) when flock is available.
  if command -v flock >/dev/null 2>&1 && [[ -z "${_S3_BUILD_LOCKED:-}" ]]; then
    exec 9>"$BIN_DIR/.build.lock"; flock 9; export _S3_BUILD_LOCKED=1
    if [[ -x "$MINIO_BIN" ]]; then return 0; fi
  fi
  local build_log="$S3_CACHE_DIR/build-$MINIO_VERSION.log" tmp_bin="$BIN_DIR/.gobin.$$"
  log "building $MINIO_MODULE@$MINIO_VERSION with $("$go" version | cut -d' ' -f3) (first run only; ~7 min on 2 cores)"
  log "build log: $build_log"
  local t0=$SECONDS
  rm -rf "$tmp_bin"
  if ! ( cd "$BIN_DIR" && GOBIN="$tmp_bin" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
         "$go" install -trimpath -ldflags "-s -w" "$MINIO_MODULE@$MINIO_VERSION" ) >"$build_log" 2>&1; then
    echo "---- last 30 lines of $build_log ----" >&2
    tail -n 30 "$build_log" >&2
    rm -rf "$tmp_bin"
    die "building MinIO failed (see above). Check that the Go module proxy is reachable
  (GOPROXY=$("$go" env GOPROXY)) and that Go is >= 1.24 ($("$go" version))."
  fi
  mv "$tmp_bin/minio" "$MINIO_BIN"; rm -rf "$tmp_bin"
  log "built $MINIO_BIN in $((SECONDS - t0))s ($(du -h "$MINIO_BIN" | cut -f1))"
}

# pid of our server if its pid file names a live MinIO process, else nothing.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: the process must be a minio server.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'minio.* server ' || return 1
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/$S3_HOST/$S3_PORT") 2>/dev/null; }

show_log_tail() {
  if [[ -f "$LOG_FILE" ]]; then echo "---- last 30 lines of $LOG_FILE ----" >&2; tail -n 30 "$LOG_FILE" >&2; fi
}

ensure_bucket() {
  local out
  out="$(client mb "$S3_BUCKET" 2>&1)" || { echo "$out" >&2; die "could not create bucket '$S3_BUCKET'"; }
  log "$out"
}

start() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    client --timeout 5 ready || die "server pid $pid runs but does not answer signed requests on $ENDPOINT; try '$PROG stop' then start"
    ensure_bucket
    echo "$ENDPOINT"
    return 0
  fi
  [[ "$S3_PORT" =~ ^[0-9]+$ ]] || die "S3_PORT must be a number, got '$S3_PORT'"
  (( ${#S3_ACCESS_KEY} >= 3 )) || die "S3_ACCESS_KEY must be at least 3 characters (MinIO rule)"
  (( ${#S3_SECRET_KEY} >= 8 )) || die "S3_SECRET_KEY must be at least 8 characters (MinIO rule)"
  build
  if port_busy; then
    die "port $S3_PORT on $S3_HOST is already in use by another process; set S3_PORT to a free port"
  fi

  mkdir -p "$S3_RUN_DIR"
  rm -f "$PID_FILE" "$EPHEMERAL_FILE"
  local data
  if [[ -n "${HEADWATER_S3_DIR:-}" ]]; then
    mkdir -p "$HEADWATER_S3_DIR"; data="$(cd "$HEADWATER_S3_DIR" && pwd)"
  else
    data="$(mktemp -d "${TMPDIR:-/tmp}/headwater-s3-data.XXXXXX")"; touch "$EPHEMERAL_FILE"
  fi
  echo "$data" >"$DATA_FILE"

  local t0; t0="$(date +%s.%N)"
  # The web console is turned off (MINIO_BROWSER=off): only the S3 API listens.
  # setsid detaches the server from this shell's process group and terminal.
  local setsid=(); if command -v setsid >/dev/null 2>&1; then setsid=(setsid); fi
  env MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
      MINIO_BROWSER=off MINIO_UPDATE=off MINIO_REGION="$S3_REGION" \
      "${setsid[@]}" "$MINIO_BIN" server --address "$S3_HOST:$S3_PORT" "$data" \
      >"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"

  local deadline=$(( $(date +%s) + S3_START_TIMEOUT ))
  until client --timeout 2 ready 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail; rm -f "$PID_FILE"
      die "MinIO exited during startup (see log above)"
    fi
    if (( $(date +%s) >= deadline )); then
      show_log_tail
      die "MinIO (pid $pid) not ready on $ENDPOINT after ${S3_START_TIMEOUT}s; it is left running: '$PROG logs', '$PROG stop'"
    fi
    sleep 0.2
  done
  local ready_s; ready_s="$(python3 -c "import sys;print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")"
  log "MinIO ready in ${ready_s}s (pid $pid, data $data, log $LOG_FILE)"
  ensure_bucket
  echo "$ENDPOINT"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running (no live server for pid file $PID_FILE)"
    rm -f "$PID_FILE"
  else
    kill -TERM "$pid"
    local _
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"; kill -KILL "$pid" || true; fi
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
  fi
  if [[ -f "$EPHEMERAL_FILE" && -f "$DATA_FILE" ]]; then
    local data; data="$(cat "$DATA_FILE")"
    case "$data" in "${TMPDIR:-/tmp}"/headwater-s3-data.*) rm -rf "$data"; log "removed temp data dir $data" ;; esac
    rm -f "$EPHEMERAL_FILE" "$DATA_FILE"
  fi
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if client --timeout 3 ready 2>/dev/null; then
      echo "running: pid $pid, endpoint $ENDPOINT, bucket $S3_BUCKET, data $(cat "$DATA_FILE" 2>/dev/null || echo '?'), log $LOG_FILE"
      return 0
    fi
    echo "running but NOT answering: pid $pid, endpoint $ENDPOINT (see '$PROG logs')"
    return 1
  fi
  echo "not running (port $S3_PORT)"
  return 1
}

print_env() {
  # Consumers: object_store's AmazonS3Builder::from_env() reads every AWS_* variable
  # (AWS_ENDPOINT / AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_BUCKET, AWS_CONDITIONAL_PUT, ...);
  # AWS CLI/SDKs read AWS_ENDPOINT_URL and AWS_REGION.
  cat <<EOF
export AWS_ACCESS_KEY_ID='$S3_ACCESS_KEY'
export AWS_SECRET_ACCESS_KEY='$S3_SECRET_KEY'
export AWS_REGION='$S3_REGION'
export AWS_DEFAULT_REGION='$S3_REGION'
export AWS_ENDPOINT_URL='$ENDPOINT'
export AWS_ENDPOINT='$ENDPOINT'
export AWS_ALLOW_HTTP=true
export AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
export AWS_CONDITIONAL_PUT=etag
export AWS_BUCKET='$S3_BUCKET'
export S3_BUCKET='$S3_BUCKET'
export S3_ENDPOINT='$ENDPOINT'
unset AWS_SESSION_TOKEN AWS_PROFILE
EOF
  running_pid >/dev/null || log "note: no server is running on port $S3_PORT yet ('$PROG start')"
}

logs() {
  [[ -f "$LOG_FILE" ]] || die "no log at $LOG_FILE (never started on port $S3_PORT?)"
  if [[ "${1:-}" == "-f" ]]; then exec tail -n 100 -f "$LOG_FILE"; fi
  tail -n 100 "$LOG_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  logs) shift; logs "$@" ;;
  env) print_env ;;
  build) build; echo "$MINIO_BIN" ;;
  -h|--help|help) usage ;;
  "") usage >&2; exit 2 ;;
  *) echo "s3.sh: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac
