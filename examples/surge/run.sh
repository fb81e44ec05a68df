#!/usr/bin/env bash
# examples/surge/run.sh — the surge-pricing example end to end: Kafka, input, loaders, the
# surge pipeline, its results. Run `examples/surge/run.sh --help` for usage.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KAFKA_SH="$REPO/integration/kafka/kafka.sh"
REFERENCE="$HERE/reference/surge.jsonl"
# The address the YAML files are written for (kafka.sh's default); copies get the real one.
YAML_BROKERS="127.0.0.1:19092"

usage() {
  cat <<'EOF'
Usage: examples/surge/run.sh [--check | --update] [--keep] [-h | --help]

Runs the surge-pricing example end to end:

  1. Kafka: uses $KAFKA_BROKERS if set, else starts a single broker with
     integration/kafka/kafka.sh (port 19092, or the next free pair of ports; its data lives
     in the work folder) and stops it at the end.
  2. Input: generate.py writes 20000 ride requests and 20000 driver positions (10 minutes of
     event time, fixed seed) into the work folder.
  3. Loaders: load-rides.yaml and load-drivers.yaml put them into the topics rides-RUN and
     drivers-RUN (file source -> Kafka sink).
  4. pipeline.yaml (with --fresh): geohash per event (Python), demand and supply per cell and
     minute (tumbling window), the surge multiplier (Python) -> topic surge-RUN, exactly once.
  5. show.yaml prints the topic surge-RUN; this script saves it as surge.jsonl in the work
     folder and prints a table: the surge per minute of every cell that surged.

The YAML files name the broker 127.0.0.1:19092 and the topics rides, drivers and surge. The
script runs copies of them, in a work folder, with its broker's address and with every topic
suffixed by a run id (-RUN), so that runs against one broker never mix their data (topics
outlive runs). Nothing is written into the repository.

Options:
  --check    compare the results (sorted) with examples/surge/reference/surge.jsonl;
             print a diff and exit 1 if they differ
  --update   write the results (sorted) to examples/surge/reference/surge.jsonl
  --keep     keep the work folder (input, YAML copies, .headwater/ state and dead letters,
             surge.jsonl, the broker's data and log) instead of deleting it after success
  -h, --help this help

Environment:
  KAFKA_BROKERS     bootstrap servers of a running Kafka (host:port[,host:port]); unset: start
                    one with integration/kafka/kafka.sh (needs Java 17+; jars are cached in
                    ~/.cache/headwater/kafka after the first fetch)
  KAFKA_PORT        first port to try for the broker this script starts (default 19092)
  HEADWATER_BIN     the headwater binary (default $CARGO_TARGET_DIR/release/headwater)
  CARGO_TARGET_DIR  default $HOME/.cache/headwater/target (where ./dev build puts it)
  HEADWATER_PYTHON  Python for generate.py and the UDF workers (default: the venv
                    $HEADWATER_VENV or ~/.cache/headwater/venv if it exists, else python3).
                    Workers need the headwater SDK; if it is not installed there, the
                    repository's sdk-python/src is put on PYTHONPATH (grpcio, protobuf needed)
  SURGE_RUN_ID      topic suffix (default <pid>-<epoch seconds>); letters, digits, . _ -
  SURGE_WORK_DIR    work folder (default: a new temporary folder; a given one is never deleted)
  SURGE_GENERATE_ARGS
                    extra generate.py options, e.g. "--rides 2000 --drivers 2000" (the
                    results then differ from the reference: don't combine with --check)

Exit codes: 0 success, 1 a step failed or --check found a difference, 2 bad usage.
EOF
}

say() { echo "run.sh: $*" >&2; }
die() {
  echo "run.sh: error: $*" >&2
  exit 1
}

MODE=run
KEEP=0
while (($#)); do
  case "$1" in
    --check) MODE=check ;;
    --update) MODE=update ;;
    --keep) KEEP=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "run.sh: unknown option '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done

# --- the binary and Python ------------------------------------------------------------------
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/headwater/target}"
HW="${HEADWATER_BIN:-$CARGO_TARGET_DIR/release/headwater}"
[[ -x "$HW" ]] || die "no headwater binary at $HW: build it with './dev build' (or set HEADWATER_BIN)"

if [[ -z "${HEADWATER_PYTHON:-}" ]]; then
  venv="${HEADWATER_VENV:-$HOME/.cache/headwater/venv}"
  if [[ -x "$venv/bin/python" ]]; then HEADWATER_PYTHON="$venv/bin/python"; else HEADWATER_PYTHON=python3; fi
fi
export HEADWATER_PYTHON # the host starts the UDF workers with it
if ! "$HEADWATER_PYTHON" -c 'import headwater.worker' >/dev/null 2>&1; then
  export PYTHONPATH="$REPO/sdk-python/src${PYTHONPATH:+:$PYTHONPATH}"
  "$HEADWATER_PYTHON" -c 'import headwater.worker' >/dev/null 2>&1 ||
    die "$HEADWATER_PYTHON cannot import the headwater SDK (not even from sdk-python/src:" \
      "grpcio and protobuf missing?). Run './dev quickstart' once to set up" \
      "$HOME/.cache/headwater/venv, or 'pip install ./sdk-python' and set HEADWATER_PYTHON."
  say "the headwater SDK is not installed in $HEADWATER_PYTHON; using $REPO/sdk-python/src"
fi

RUN_ID="${SURGE_RUN_ID:-$$-$(date +%s)}"
[[ "$RUN_ID" =~ ^[A-Za-z0-9._-]+$ ]] || die "SURGE_RUN_ID may only use letters, digits, '.', '_' and '-', got '$RUN_ID'"

# --- the work folder and clean-up -----------------------------------------------------------
OWN_WORK=0
if [[ -n "${SURGE_WORK_DIR:-}" ]]; then
  WORK="$SURGE_WORK_DIR"
  mkdir -p "$WORK"
  WORK="$(cd "$WORK" && pwd)"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/headwater-surge.XXXXXX")"
  OWN_WORK=1
fi

STARTED_BROKER=0
cleanup() {
  local rc=$?
  if ((STARTED_BROKER)); then
    "$KAFKA_SH" stop >/dev/null 2>&1 || say "warning: stopping the broker failed; see '$KAFKA_SH status'"
  fi
  if ((rc == 0 && OWN_WORK && !KEEP)); then
    rm -rf "$WORK"
  else
    say "work folder kept: $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Kafka ----------------------------------------------------------------------------------
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1; }

if [[ -n "${KAFKA_BROKERS:-}" ]]; then
  BROKERS="$KAFKA_BROKERS"
  say "using the Kafka at $BROKERS (KAFKA_BROKERS)"
else
  port="${KAFKA_PORT:-19092}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number, got '$port'"
  tries=0
  # The broker needs two ports: clients on `port`, its controller on `port + 1`.
  while port_open "$port" || port_open "$((port + 1))"; do
    tries=$((tries + 1))
    ((tries < 50)) || die "no two free ports from ${KAFKA_PORT:-19092} on; set KAFKA_PORT or KAFKA_BROKERS"
    port=$((port + 2))
  done
  [[ "$port" == "${KAFKA_PORT:-19092}" ]] || say "port ${KAFKA_PORT:-19092} is in use; the broker gets $port"
  export KAFKA_PORT="$port"
  unset KAFKA_CONTROLLER_PORT
  export HEADWATER_KAFKA_DIR="$WORK/kafka" # this broker's data, log and pid: apart from others
  say "starting Kafka (integration/kafka/kafka.sh start; log: $HEADWATER_KAFKA_DIR/single/server.log) ..."
  STARTED_BROKER=1
  BROKERS="$("$KAFKA_SH" start)"
fi

# --- the YAML copies ------------------------------------------------------------------------
cp "$HERE/udfs.py" "$WORK/"
for f in load-rides.yaml load-drivers.yaml pipeline.yaml show.yaml; do
  sed -E \
    -e "s|${YAML_BROKERS//./\\.}|$BROKERS|g" \
    -e "s/^( +topic: )(rides|drivers|surge)( |$)/\1\2-$RUN_ID\3/" \
    "$HERE/$f" >"$WORK/$f"
  grep -qE "^ +topic: (rides|drivers|surge)-$RUN_ID( |$)" "$WORK/$f" ||
    die "could not rename the topic in $f (expected a line '    topic: rides|drivers|surge')"
done
say "topics: rides-$RUN_ID, drivers-$RUN_ID -> surge-$RUN_ID on $BROKERS; work folder $WORK"

# --- input and loaders ----------------------------------------------------------------------
# shellcheck disable=SC2086 # SURGE_GENERATE_ARGS is a list of words on purpose
"$HEADWATER_PYTHON" "$HERE/generate.py" --out "$WORK/input" ${SURGE_GENERATE_ARGS:-}

say "loading the ride requests and driver positions into Kafka ..."
"$HW" run "$WORK/load-rides.yaml" --quiet   # no checkpoints: each run loads everything
"$HW" run "$WORK/load-drivers.yaml" --quiet

# --- the surge pipeline ---------------------------------------------------------------------
say "running pipeline.yaml ..."
"$HW" run "$WORK/pipeline.yaml" --fresh

# --- the results ----------------------------------------------------------------------------
"$HW" run "$WORK/show.yaml" --quiet >"$WORK/surge.jsonl"
dead=0
if [[ -f "$WORK/.headwater/surge/dlq.jsonl" ]]; then dead="$(wc -l <"$WORK/.headwater/surge/dlq.jsonl")"; fi

"$HEADWATER_PYTHON" - "$WORK/surge.jsonl" <<'EOF'
# A table of the results: the surge per cell (rows, busiest first) and minute (columns).
import json
import sys
from datetime import datetime, timezone

rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
minutes = sorted({r["window_start"] for r in rows})
surge = {(r["geohash"], r["window_start"]): r["surge"] for r in rows}
demand = {}
for r in rows:
    demand[r["geohash"]] = demand.get(r["geohash"], 0) + r["demand"]
hot = sorted({r["geohash"] for r in rows if r["surge"] > 1.0}, key=lambda g: (-demand[g], g))
print(f"\n{len(rows)} results (cell x minute) in the surge topic; {len(hot)} of "
      f"{len(demand)} cells surged at least once. Surge per cell and minute (UTC):\n")
hhmm = [datetime.fromtimestamp(m / 1000, tz=timezone.utc).strftime("%H:%M") for m in minutes]
print("geohash  requests  " + " ".join(f"{h:>5}" for h in hhmm))
for g in hot:
    cells = " ".join(f"{surge[(g, m)]:5.1f}" if (g, m) in surge else "    -" for m in minutes)
    print(f"{g:<7}  {demand[g]:>8}  {cells}")
print()
EOF
kept=""
((OWN_WORK && !KEEP)) && kept=" (the work folder is deleted after success; --keep keeps it)"
say "$(wc -l <"$WORK/surge.jsonl") results; $dead dead letter(s) in $WORK/.headwater/surge/dlq.jsonl$kept"

case "$MODE" in
  check)
    [[ -f "$REFERENCE" ]] || die "no reference at $REFERENCE (write one with --update)"
    LC_ALL=C sort "$WORK/surge.jsonl" >"$WORK/surge.sorted.jsonl"
    if ! diff -u --label reference/surge.jsonl --label "this run" <(LC_ALL=C sort "$REFERENCE") \
      "$WORK/surge.sorted.jsonl" >"$WORK/surge.diff"; then
      head -n 80 "$WORK/surge.diff" >&2
      KEEP=1
      die "check: the results differ from examples/surge/reference/surge.jsonl (diff above: - reference, + this run; full diff $WORK/surge.diff)"
    fi
    say "check: OK, the $(wc -l <"$REFERENCE") results equal examples/surge/reference/surge.jsonl"
    ;;
  update)
    mkdir -p "$(dirname "$REFERENCE")"
    LC_ALL=C sort "$WORK/surge.jsonl" >"$REFERENCE"
    say "wrote $(wc -l <"$REFERENCE") results to examples/surge/reference/surge.jsonl"
    ;;
esac
