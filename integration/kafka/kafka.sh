#!/usr/bin/env bash
# integration/kafka/kafka.sh — run a real Apache Kafka broker (KRaft, no ZooKeeper, no Docker)
# for development and CI, from Apache Kafka's own jars on Maven Central.
#
# Run `integration/kafka/kafka.sh --help` for usage.
set -euo pipefail

PROG="kafka.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---------------------------------------------------------------------------------------------
# Settings (environment)
# ---------------------------------------------------------------------------------------------
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
# Short-lived tool JVMs start faster with the C1 compiler only and a small serial-GC heap.
KAFKA_TOOL_OPTS="${KAFKA_TOOL_OPTS:--Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"
KAFKA_EXTRA_CONFIG="${KAFKA_EXTRA_CONFIG:-}"
KAFKA_CDS="${KAFKA_CDS:-1}"
KAFKA_MVN_ARGS="${KAFKA_MVN_ARGS:-}"

CACHE_ROOT="${HEADWATER_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headwater/kafka}"
LIBS="$CACHE_ROOT/$KAFKA_VERSION/libs"
STATE_ROOT="${HEADWATER_KAFKA_DIR:-${TMPDIR:-/tmp}/headwater-kafka-$(id -u)}"
SINGLE_DIR="$STATE_ROOT/single"
CLUSTER_DIR="$STATE_ROOT/cluster"
CLUSTER_SIZE=3

JAVA="java"
if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; fi
JAVA_VERSION_TEXT=""
# JVM warnings go to stderr (never into a tool's stdout); class-data-sharing notes are dropped.
JAVA_LOG_OPTS=(-Xlog:disable "-Xlog:all=warning,cds*=off:stderr")

usage() {
  cat <<EOF
Usage: integration/kafka/kafka.sh COMMAND [ARGS]

Runs a real Apache Kafka ${KAFKA_VERSION} broker in KRaft mode (combined broker+controller,
no ZooKeeper, no Docker) with the machine's Java 17+, from Kafka's jars on Maven Central.
Progress goes to stderr; 'start' and 'start-cluster' print the bootstrap address on stdout:

    BOOTSTRAP=\$(integration/kafka/kafka.sh start)

Single broker (replication factor 1; transactions / exactly-once producers work):
  start               fetch the jars if needed, format fresh storage (new cluster id), start the
                      broker in the background, wait until it answers metadata requests, print
                      the bootstrap address (${KAFKA_HOST}:\$KAFKA_PORT)
  stop                stop it (SIGTERM, SIGKILL after \$KAFKA_STOP_TIMEOUT s); its data is kept
                      until the next start
  status [single|cluster]
                      say what is running and where; exit 0 if it is running, 3 if not
  logs [N] [-f] [-n LINES]
                      show the single broker's log (or cluster node N's); -f follows it

Three-node cluster (3 combined broker+controller nodes, a 3-voter quorum, node ids 1..3;
default.replication.factor=3, min.insync.replicas=2, internal topics RF 3 / min ISR 2):
  start-cluster       like start, for the three nodes; prints host:p,host:p+1,host:p+2
  kill-node N         kill node N (1..3) with SIGKILL, as a crash (--graceful: SIGTERM)
  start-node N        restart node N on its existing data; wait until it is back in the cluster
  stop-cluster        stop all three nodes

Other:
  fetch               only download the jars into the cache (for warming a CI cache)
  run-class CLASS [ARGS...]
                      run a class from the Kafka jars with quiet logging, e.g.
                        kafka.sh run-class org.apache.kafka.tools.TopicCommand \\
                          --bootstrap-server 127.0.0.1:19092 --list
                      (console tools: org.apache.kafka.tools.ConsoleProducer,
                      org.apache.kafka.tools.consumer.ConsoleConsumer, ProducerPerformance, ...)
  classpath           print the Java classpath of the cached jars
  -h, --help          this help

Environment:
  KAFKA_PORT             client port of the single broker / of cluster node 1 (default 19092);
                         cluster nodes use KAFKA_PORT, +1, +2
  KAFKA_CONTROLLER_PORT  controller port (single: default KAFKA_PORT+1; cluster: first of three,
                         default KAFKA_PORT+3, so nodes use +3, +4, +5)
  KAFKA_HOST             address to listen on and advertise (default 127.0.0.1)
  KAFKA_VERSION          Kafka 4.x version to fetch from Maven Central (default ${KAFKA_VERSION};
                         4.4.0 and 4.1.1 were tried)
  HEADWATER_KAFKA_DIR    state directory: data, logs, pid files
                         (default \${TMPDIR:-/tmp}/headwater-kafka-\$(id -u); now ${STATE_ROOT})
  HEADWATER_KAFKA_CACHE  jar cache, outside the repo; later runs need no network
                         (default \${XDG_CACHE_HOME:-\$HOME/.cache}/headwater/kafka; now ${CACHE_ROOT})
  KAFKA_READY_TIMEOUT    seconds to wait for readiness (default 90)
  KAFKA_STOP_TIMEOUT     seconds to wait for a clean stop before SIGKILL (default 30)
  KAFKA_EXTRA_CONFIG     extra server.properties lines (newline separated), appended last
  KAFKA_HEAP_OPTS, KAFKA_JVM_OPTS, KAFKA_TOOL_OPTS
                         JVM options of the broker and of the tools
  KAFKA_MVN_ARGS         extra arguments for mvn when fetching (e.g. -Dmaven.repo.local=...)
  KAFKA_CDS              1 (default): after the first clean stop of a broker, keep a class-data
                         sharing archive of the JVM next to the jars, which roughly halves the
                         CPU a broker or tool needs to start; 0: don't
  JAVA_HOME              use \$JAVA_HOME/bin/java instead of java on PATH
EOF
}

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
info() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }

need_java() {
  if ! command -v "$JAVA" >/dev/null 2>&1; then
    die "'java' not found on PATH. Kafka ${KAFKA_VERSION} needs Java 17 or newer: install it" \
      "(Debian/Ubuntu: 'apt-get install openjdk-17-jre-headless') or set JAVA_HOME."
  fi
  local line major
  JAVA_VERSION_TEXT="$("$JAVA" -version 2>&1)" || die "'$JAVA -version' failed: $JAVA_VERSION_TEXT"
  line="$(head -n 1 <<<"$JAVA_VERSION_TEXT")"
  major="$(sed -E 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/' <<<"$line")"
  # "1.8.0_x" -> 8, "17.0.15" -> 17
  if [[ "$major" == 1\ * ]]; then major="${major#1 }"; else major="${major%% *}"; fi
  if ! [[ "$major" =~ ^[0-9]+$ ]]; then
    info "warning: could not read the Java version from '$line'; trying anyway"
  elif ((major < 17)); then
    die "Kafka ${KAFKA_VERSION} needs Java 17 or newer but '$JAVA' is Java $major ($line)." \
      "Install openjdk-17-jre-headless (apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
  fi
}

# fetch: copy Kafka's jars and their dependencies from Maven Central into $LIBS (once).
fetch() {
  [[ -f "$LIBS/.complete" ]] && return 0
  command -v mvn >/dev/null 2>&1 || die "the Kafka jars are not cached yet ($LIBS) and 'mvn' is" \
    "not on PATH: install Maven (Debian/Ubuntu: 'apt-get install maven'), which fetches them" \
    "from Maven Central."
  local vdir="$CACHE_ROOT/$KAFKA_VERSION"
  mkdir -p "$vdir"
  # One fetch at a time per version (parallel CI jobs on one machine).
  exec 8>"$vdir/.lock"
  if command -v flock >/dev/null 2>&1; then flock 8; fi
  if [[ -f "$LIBS/.complete" ]]; then exec 8>&-; return 0; fi
  info "fetching Apache Kafka ${KAFKA_VERSION} jars from Maven Central into $LIBS ..."
  local tmp mvnlog start=$SECONDS
  tmp="$(mktemp -d "$vdir/libs.tmp.XXXXXX")"
  chmod 755 "$tmp"
  mvnlog="$vdir/fetch.log"
  local attempt ok=0
  for attempt in 1 2; do
    # shellcheck disable=SC2086  # KAFKA_MVN_ARGS is a list of words on purpose
    if mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
        -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$tmp" $KAFKA_MVN_ARGS >"$mvnlog" 2>&1; then
      ok=1
      break
    fi
    # A missing artifact will not appear on a second try; a network hiccup may pass.
    grep -qE 'Could not find artifact|was not found in' "$mvnlog" && break
    ((attempt == 1)) && { info "mvn failed; trying once more in 5 s"; sleep 5; }
  done
  if ((!ok)); then
    tail -n 30 "$mvnlog" >&2 || true
    rm -rf "$tmp"
    die "could not fetch Kafka ${KAFKA_VERSION} from Maven Central (mvn log: $mvnlog)." \
      "Check the network/Maven settings, or pick another version with KAFKA_VERSION."
  fi
  [[ -f "$tmp/kafka_2.13-${KAFKA_VERSION}.jar" ]] || { rm -rf "$tmp"; die "mvn succeeded but" \
    "kafka_2.13-${KAFKA_VERSION}.jar is missing (mvn log: $mvnlog)"; }
  touch "$tmp/.complete"
  rm -rf "$LIBS" "$vdir/cds"
  mv "$tmp" "$LIBS"
  exec 8>&-
  info "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $((SECONDS - start)) s"
}

# Class-data sharing (CDS): an archive of the classes a broker loaded, made by the JVM when a
# broker launched with -XX:ArchiveClassesAtExit stops cleanly. It is only valid for the same JVM
# build and the same jars, so it is keyed on 'java -version' and dropped when the jars are
# fetched again; a JVM that cannot use it ignores it (-Xshare:auto, warnings dropped).
cds_archive() { # prints the archive path for this JVM (needs need_java first)
  local key
  key="$(printf '%s\n%s\n' "$JAVA_VERSION_TEXT" "$(uname -m)" | cksum | cut -d' ' -f1)"
  echo "$CACHE_ROOT/$KAFKA_VERSION/cds/jvm-$key.jsa"
}

cds_use_opts() { # fills CDS_OPTS with the options to use the archive, if there is one
  CDS_OPTS=()
  [[ "$KAFKA_CDS" == 1 ]] || return 0
  local jsa; jsa="$(cds_archive)"
  if [[ -s "$jsa" ]]; then CDS_OPTS=(-XX:SharedArchiveFile="$jsa"); fi
}

# The command line of a Kafka tool JVM: cached jars, quiet logging, CDS if available.
tool_cmd() {
  cds_use_opts
  # shellcheck disable=SC2206  # KAFKA_TOOL_OPTS is a list of words on purpose
  TOOL_CMD=("$JAVA" $KAFKA_TOOL_OPTS "${JAVA_LOG_OPTS[@]}" ${CDS_OPTS[@]+"${CDS_OPTS[@]}"}
    -Dlog4j2.configurationFile="$HERE/tools-log4j2.properties" -cp "$LIBS/*")
}

# Run a Kafka class (a tool) with the cached jars and quiet logging.
run_class() {
  tool_cmd
  "${TOOL_CMD[@]}" "$@"
}

# A fresh cluster id: 16 random bytes, URL-safe base64 without padding, as Kafka's
# Uuid.randomUuid() makes them (it also never starts with '-').
new_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* && ${#id} -eq 22 ]] && { echo "$id"; return; }
  done
}

port_open() { # host port -> 0 if something accepts connections
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
}

check_port_free() {
  if port_open "$KAFKA_HOST" "$1"; then
    die "port $1 on $KAFKA_HOST is already in use (another broker? see '$PROG status')." \
      "Choose other ports with KAFKA_PORT / KAFKA_CONTROLLER_PORT."
  fi
}

check_number() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a number, got '$2'"; }

# pid of the broker of a node dir if it is running, else nothing (and status 1).
node_pid() {
  local dir="$1" pid
  [[ -f "$dir/pid" ]] || return 1
  pid="$(cat "$dir/pid")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be our broker (checked once it has exec'd java;
  # right after launch the pid may still be the forking shell).
  if [[ "${2:-}" != --starting ]] && command -v ps >/dev/null 2>&1; then
    ps -p "$pid" -o args= 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  fi
  echo "$pid"
}

# write_config DIR NODE_ID CLIENT_PORT CONTROLLER_PORT VOTERS MODE(single|cluster)
write_config() {
  local dir="$1" id="$2" port="$3" cport="$4" voters="$5" mode="$6" rf isr
  if [[ "$mode" == cluster ]]; then rf=3; isr=2; else rf=1; isr=1; fi
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
# Written by integration/kafka/kafka.sh ($mode, node $id). Regenerated on every start.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$KAFKA_HOST:$port,CONTROLLER://$KAFKA_HOST:$cport
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data

num.partitions=1
auto.create.topics.enable=true
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
EOF
  if [[ -n "$KAFKA_EXTRA_CONFIG" ]]; then
    printf '\n# KAFKA_EXTRA_CONFIG\n%s\n' "$KAFKA_EXTRA_CONFIG" >>"$dir/server.properties"
  fi
}

format_node() { # DIR CLUSTER_ID
  if ! run_class kafka.tools.StorageTool format -t "$2" -c "$1/server.properties" \
        >"$1/format.log" 2>&1; then
    cat "$1/format.log" >&2
    die "formatting the storage in $1/data failed (see above)"
  fi
}

launch_node() { # DIR [--make-cds]  (--make-cds: this node may write the CDS archive at stop)
  local dir="$1" jsa tmp
  cds_use_opts
  cds_collect "$dir" 0
  if [[ "$KAFKA_CDS" == 1 && ${#CDS_OPTS[@]} -eq 0 && "${2:-}" == --make-cds ]]; then
    jsa="$(cds_archive)"
    mkdir -p "$(dirname "$jsa")"
    # Drop archives that brokers stopped by someone else (not kafka.sh) left half-way.
    find "$(dirname "$jsa")" -name '*.jsa.tmp.*' -mmin +60 -exec rm -f {} + 2>/dev/null || true
    tmp="$jsa.tmp.$$.$RANDOM"
    CDS_OPTS=(-XX:ArchiveClassesAtExit="$tmp")
    printf '%s\n%s\n' "$tmp" "$jsa" >"$dir/cds-dump"
  fi
  echo "===== $(date '+%F %T') $PROG: starting Kafka ${KAFKA_VERSION}: $dir/server.properties" \
    >>"$dir/server.log"
  # shellcheck disable=SC2086  # the *_OPTS variables are lists of words on purpose
  nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS "${JAVA_LOG_OPTS[@]}" \
    ${CDS_OPTS[@]+"${CDS_OPTS[@]}"} \
    -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
    -Dkafka.logs.dir="$dir" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >>"$dir/server.log" 2>&1 &
  echo "$!" >"$dir/pid"
}

# After a node's JVM has exited: keep the CDS archive it wrote if it exited by itself
# (CLEAN=1), else throw away whatever it left.
cds_collect() { # DIR CLEAN
  local tmp jsa
  [[ -f "$1/cds-dump" ]] || return 0
  { read -r tmp; read -r jsa; } <"$1/cds-dump" || true
  rm -f "$1/cds-dump"
  [[ -n "${tmp:-}" ]] || return 0
  if [[ "$2" == 1 && -s "$tmp" ]]; then
    mv -f "$tmp" "$jsa" 2>/dev/null || rm -f "$tmp"
  else
    rm -f "$tmp"
  fi
}

log_tails() { # DIR...
  local d
  for d in "$@"; do
    [[ -f "$d/server.log" ]] || continue
    echo "----- last 40 lines of $d/server.log -----" >&2
    tail -n 40 "$d/server.log" >&2 || true
  done
}

# Number of brokers that a metadata request to BOOTSTRAP lists (unfenced, live brokers);
# gives up after SECONDS (default 60).
broker_count() {
  local out
  tool_cmd
  out="$(timeout "${2:-60}" "${TOOL_CMD[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$1" 2>/dev/null)" || return 1
  grep -cE '^[^[:space:]]+ \(id: [0-9]+' <<<"$out" || true
}

# wait_ready BOOTSTRAP EXPECTED_BROKERS NODE_DIR...  — the given nodes' processes must stay up,
# their client ports must accept connections and BOOTSTRAP must list EXPECTED_BROKERS brokers.
wait_ready() {
  local bootstrap="$1" want="$2"; shift 2
  local deadline=$((SECONDS + KAFKA_READY_TIMEOUT)) d n have="" all_open
  while :; do
    for d in "$@"; do
      if ! node_pid "$d" --starting >/dev/null; then
        log_tails "$d"
        rm -f "$d/pid"
        cds_collect "$d" 0
        stop_nodes "$@" >/dev/null
        die "the broker in $d exited during startup (log above; full log: $d/server.log)"
      fi
    done
    all_open=1
    for d in "$@"; do
      port_open "$KAFKA_HOST" "$(cat "$d/port")" || { all_open=0; break; }
    done
    if ((all_open)); then
      n="$(broker_count "$bootstrap" "$((deadline - SECONDS > 10 ? deadline - SECONDS : 10))" \
        || true)"
      have="${n:-0}"
      if [[ "$have" =~ ^[0-9]+$ ]] && ((have >= want)); then return 0; fi
    fi
    if ((SECONDS >= deadline)); then
      log_tails "$@"
      info "not ready in time: stopping what was started"
      stop_nodes "$@" >/dev/null
      die "Kafka at $bootstrap was not ready after ${KAFKA_READY_TIMEOUT}s" \
        "(ports open: $([[ $all_open == 1 ]] && echo yes || echo no);" \
        "brokers listed: ${have:-none} of $want). Logs above; raise KAFKA_READY_TIMEOUT if the" \
        "machine is just slow."
    fi
    sleep 1
  done
}

# stop_nodes DIR... — SIGTERM every running node, wait, SIGKILL what is left after
# KAFKA_STOP_TIMEOUT. Prints how many nodes were running.
stop_nodes() {
  local d pid pids=() deadline=$((SECONDS + KAFKA_STOP_TIMEOUT)) left clean=1
  for d in "$@"; do
    if pid="$(node_pid "$d")"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  while :; do
    left=()
    for pid in ${pids[@]+"${pids[@]}"}; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    ((${#left[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      info "still running after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL to ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      clean=0
      sleep 1
      break
    fi
    sleep 0.3
  done
  for d in "$@"; do rm -f "$d/pid"; cds_collect "$d" "$clean"; done
  echo "${#pids[@]}"
}

cluster_node_dir() { echo "$CLUSTER_DIR/node$1"; }

check_node_arg() {
  [[ "${1:-}" =~ ^[1-3]$ ]] || die "expected a node number 1..$CLUSTER_SIZE, got '${1:-}'"
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
cmd_start() {
  check_number KAFKA_PORT "$KAFKA_PORT"
  local cport="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
  check_number KAFKA_CONTROLLER_PORT "$cport"
  local bootstrap="$KAFKA_HOST:$KAFKA_PORT" pid t0=$SECONDS
  if pid="$(node_pid "$SINGLE_DIR")"; then
    die "a broker is already running (pid $pid, $(cat "$SINGLE_DIR/bootstrap")); run '$PROG stop' first"
  fi
  need_java
  fetch
  check_port_free "$KAFKA_PORT"
  check_port_free "$cport"
  rm -rf "$SINGLE_DIR"
  mkdir -p "$SINGLE_DIR"
  write_config "$SINGLE_DIR" 1 "$KAFKA_PORT" "$cport" "1@$KAFKA_HOST:$cport" single
  echo "$KAFKA_PORT" >"$SINGLE_DIR/port"
  echo "$bootstrap" >"$SINGLE_DIR/bootstrap"
  format_node "$SINGLE_DIR" "$(new_cluster_id)"
  launch_node "$SINGLE_DIR" --make-cds
  info "starting Kafka ${KAFKA_VERSION} (pid $(cat "$SINGLE_DIR/pid"), log $SINGLE_DIR/server.log) ..."
  wait_ready "$bootstrap" 1 "$SINGLE_DIR"
  info "ready at $bootstrap in $((SECONDS - t0)) s"
  echo "$bootstrap"
}

cmd_stop() {
  local n
  n="$(stop_nodes "$SINGLE_DIR")"
  if ((n > 0)); then info "stopped the broker"; else info "no broker was running"; fi
}

cluster_ports() { # sets PORTS[1..3] CPORTS[1..3]
  check_number KAFKA_PORT "$KAFKA_PORT"
  local cbase="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + CLUSTER_SIZE))}" i
  check_number KAFKA_CONTROLLER_PORT "$cbase"
  PORTS=() CPORTS=()
  for i in 1 2 3; do PORTS[i]=$((KAFKA_PORT + i - 1)); CPORTS[i]=$((cbase + i - 1)); done
}

cmd_start_cluster() {
  local i d pid t0=$SECONDS voters="" bootstrap="" cid fmt_pids=()
  for i in 1 2 3; do
    if pid="$(node_pid "$(cluster_node_dir "$i")")"; then
      die "cluster node $i is already running (pid $pid); run '$PROG stop-cluster' first"
    fi
  done
  cluster_ports
  need_java
  fetch
  for i in 1 2 3; do check_port_free "${PORTS[i]}"; check_port_free "${CPORTS[i]}"; done
  for i in 1 2 3; do
    voters+="${voters:+,}$i@$KAFKA_HOST:${CPORTS[i]}"
    bootstrap+="${bootstrap:+,}$KAFKA_HOST:${PORTS[i]}"
  done
  rm -rf "$CLUSTER_DIR"
  mkdir -p "$CLUSTER_DIR"
  echo "$bootstrap" >"$CLUSTER_DIR/bootstrap"
  cid="$(new_cluster_id)"
  for i in 1 2 3; do
    d="$(cluster_node_dir "$i")"
    write_config "$d" "$i" "${PORTS[i]}" "${CPORTS[i]}" "$voters" cluster
    echo "${PORTS[i]}" >"$d/port"
    echo "$KAFKA_HOST:${PORTS[i]}" >"$d/bootstrap"
    format_node "$d" "$cid" &
    fmt_pids+=("$!")
  done
  for pid in "${fmt_pids[@]}"; do wait "$pid" || die "formatting the cluster storage failed"; done
  launch_node "$(cluster_node_dir 1)" --make-cds
  launch_node "$(cluster_node_dir 2)"
  launch_node "$(cluster_node_dir 3)"
  info "starting a 3-node Kafka ${KAFKA_VERSION} cluster (logs $CLUSTER_DIR/node{1,2,3}/server.log) ..."
  wait_ready "$bootstrap" 3 "$CLUSTER_DIR"/node1 "$CLUSTER_DIR"/node2 "$CLUSTER_DIR"/node3
  info "cluster ready at $bootstrap in $((SECONDS - t0)) s"
  echo "$bootstrap"
}

cmd_stop_cluster() {
  local n
  n="$(stop_nodes "$CLUSTER_DIR"/node1 "$CLUSTER_DIR"/node2 "$CLUSTER_DIR"/node3)"
  if ((n > 0)); then info "stopped $n cluster node(s)"; else info "no cluster node was running"; fi
}

cmd_kill_node() {
  local n="" graceful=0 a d pid
  for a in "$@"; do
    case "$a" in
      --graceful) graceful=1 ;;
      *) n="$a" ;;
    esac
  done
  check_node_arg "$n"
  d="$(cluster_node_dir "$n")"
  pid="$(node_pid "$d")" || die "cluster node $n is not running"
  if ((graceful)); then
    stop_nodes "$d" >/dev/null
    info "stopped cluster node $n (pid $pid) with SIGTERM"
  else
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$d/pid"
    cds_collect "$d" 0
    info "killed cluster node $n (pid $pid) with SIGKILL"
  fi
}

cmd_start_node() {
  local n="${1:-}" d pid t0=$SECONDS
  check_node_arg "$n"
  d="$(cluster_node_dir "$n")"
  [[ -f "$d/server.properties" && -d "$d/data" ]] || \
    die "cluster node $n has no data ($d); start the cluster with '$PROG start-cluster'"
  if pid="$(node_pid "$d")"; then die "cluster node $n is already running (pid $pid)"; fi
  local i others=0
  for i in 1 2 3; do
    [[ $i != "$n" ]] && node_pid "$(cluster_node_dir "$i")" >/dev/null && others=$((others + 1))
  done
  ((others > 0)) || die "no other cluster node is running: start-node brings one node back into" \
    "a running cluster (a single voter of three has no quorum); use '$PROG start-cluster'"
  need_java
  fetch
  check_port_free "$(cat "$d/port")"
  launch_node "$d" "$([[ $n == 1 ]] && echo --make-cds)"
  info "restarting cluster node $n (pid $(cat "$d/pid")) ..."
  # Ready when the node itself answers and lists all three brokers (it is unfenced again).
  wait_ready "$(cat "$d/bootstrap")" "$CLUSTER_SIZE" "$d"
  info "cluster node $n is back at $(cat "$d/bootstrap") in $((SECONDS - t0)) s"
}

status_single() {
  local pid
  if pid="$(node_pid "$SINGLE_DIR")"; then
    echo "single broker: running, pid $pid, bootstrap $(cat "$SINGLE_DIR/bootstrap"), dir $SINGLE_DIR"
    return 0
  fi
  if [[ -f "$SINGLE_DIR/pid" ]]; then
    echo "single broker: not running (it exited on its own: see '$PROG logs')"
  else
    echo "single broker: not running"
  fi
  return 3
}

status_cluster() {
  local i d pid up=0
  if [[ ! -d "$CLUSTER_DIR" ]]; then echo "cluster: not running"; return 3; fi
  for i in 1 2 3; do
    d="$(cluster_node_dir "$i")"
    if pid="$(node_pid "$d")"; then
      echo "cluster node $i: running, pid $pid, $(cat "$d/bootstrap" 2>/dev/null)"
      up=$((up + 1))
    elif [[ -f "$d/pid" ]]; then
      echo "cluster node $i: not running (it exited on its own: see '$PROG logs $i')"
    else
      echo "cluster node $i: not running"
    fi
  done
  echo "cluster: $up of $CLUSTER_SIZE nodes running, bootstrap $(cat "$CLUSTER_DIR/bootstrap" 2>/dev/null), dir $CLUSTER_DIR"
  ((up == CLUSTER_SIZE)) && return 0
  return 3
}

cmd_status() {
  case "${1:-}" in
    single) status_single ;;
    cluster) status_cluster ;;
    "")
      local rs=0 rc=0
      status_single || rs=$?
      status_cluster || rc=$?
      # 0 if anything is (fully) running
      ((rs == 0 || rc == 0)) && return 0
      return 3 ;;
    *) die "status takes 'single', 'cluster' or nothing, got '$1'" ;;
  esac
}

cmd_logs() {
  local follow=0 lines=100 node="" dir
  while (($#)); do
    case "$1" in
      -f|--follow) follow=1 ;;
      -n|--lines) lines="${2:-}"; shift; check_number "--lines" "$lines" ;;
      [1-3]) node="$1" ;;
      *) die "logs: unknown argument '$1' (usage: logs [N] [-f] [-n LINES])" ;;
    esac
    shift
  done
  if [[ -n "$node" ]]; then dir="$(cluster_node_dir "$node")"; else dir="$SINGLE_DIR"; fi
  [[ -f "$dir/server.log" ]] || die "no log at $dir/server.log (nothing started there yet)"
  if ((follow)); then exec tail -n "$lines" -F "$dir/server.log"; fi
  tail -n "$lines" "$dir/server.log"
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status "$@" ;;
    logs) cmd_logs "$@" ;;
    start-cluster) cmd_start_cluster ;;
    stop-cluster) cmd_stop_cluster ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    fetch) need_java; fetch; echo "$LIBS" ;;
    run-class)
      (($#)) || die "run-class needs a class name, e.g. org.apache.kafka.tools.TopicCommand"
      need_java; fetch; run_class "$@" ;;
    classpath) fetch; echo "$LIBS/*" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "$PROG: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
