#!/usr/bin/env bash
# integration/kafka/smoke.sh — checks that integration/kafka/kafka.sh gives a working Kafka:
#   1. single broker: start, create a topic, produce/consume with a consumer group, a
#      transactional (exactly-once) produce read back with read_committed, stop;
#   2. three-node cluster: start, check RF 3 / min ISR 2, produce/consume, kill one node,
#      produce with acks=all (and transactionally) on the two left, restart the node, wait
#      until every partition has 3 in-sync replicas again, stop.
# Exits non-zero on the first failed check. Ends with a line 'smoke: N passed, N failed'.
#
# Environment: KAFKA_PORT (default 19192 here, away from a dev broker on 19092; the cluster uses
# KAFKA_PORT..+5), HEADWATER_KAFKA_DIR (default: a temp dir, removed on success), and all the
# other kafka.sh settings.
# shellcheck disable=SC2015  # "check && check || fail" is meant: fail when either check fails
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K="$HERE/kafka.sh"

export KAFKA_PORT="${KAFKA_PORT:-19192}"
OWN_DIR=0
if [[ -z "${HEADWATER_KAFKA_DIR:-}" ]]; then
  HEADWATER_KAFKA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/headwater-kafka-smoke.XXXXXX")"
  OWN_DIR=1
fi
export HEADWATER_KAFKA_DIR
TOOL_TIMEOUT="${SMOKE_TOOL_TIMEOUT:-180}"

PASSED=0
FAILED=0
OUT="$HEADWATER_KAFKA_DIR/smoke-last-output.txt"

summary() { echo "smoke: $PASSED passed, $FAILED failed"; }

cleanup() {
  local rc=$?
  "$K" stop >/dev/null 2>&1 || true
  "$K" stop-cluster >/dev/null 2>&1 || true
  if ((rc == 0 && FAILED == 0 && OWN_DIR == 1)); then
    rm -rf "$HEADWATER_KAFKA_DIR"
  else
    echo "smoke: broker logs and data kept in $HEADWATER_KAFKA_DIR"
  fi
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL: $*"
  if [[ -s "$OUT" ]]; then echo "----- output -----"; tail -n 40 "$OUT"; echo "------------------"; fi
  summary
  exit 1
}
indent() { sed 's/^/    /'; }

# Seconds since START (a `date +%s.%N`), with one decimal.
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# kt CLASS ARGS... — a Kafka tool through kafka.sh; stdout and stderr to $OUT.
kt() { timeout "$TOOL_TIMEOUT" "$K" run-class "$@" >"$OUT" 2>&1; }
# ktout CLASS ARGS... — the same, stdout only to $OUT (stderr to $OUT.err).
ktout() { timeout "$TOOL_TIMEOUT" "$K" run-class "$@" >"$OUT" 2>"$OUT.err"; }

TOPICS=org.apache.kafka.tools.TopicCommand
PRODUCER=org.apache.kafka.tools.ConsoleProducer
CONSUMER=org.apache.kafka.tools.consumer.ConsoleConsumer
PERF=org.apache.kafka.tools.ProducerPerformance
OFFSETS=org.apache.kafka.tools.GetOffsetShell
TXNS=org.apache.kafka.tools.TransactionsCommand
CONFIGS=org.apache.kafka.tools.ConfigCommand

# produce BOOTSTRAP TOPIC LINES... — keyed "k:v" lines with acks=all; retries long enough to
# ride out a leader change after a node dies (the dead node is fenced after ~9 s).
produce() {
  local b="$1" t="$2"; shift 2
  printf '%s\n' "$@" | timeout "$TOOL_TIMEOUT" "$K" run-class "$PRODUCER" --bootstrap-server "$b" \
    --topic "$t" --reader-property parse.key=true --reader-property key.separator=: \
    --request-required-acks all --request-timeout-ms 10000 \
    --message-send-max-retries 1000 --retry-backoff-ms 500 --sync >"$OUT" 2>&1
}

# consume BOOTSTRAP TOPIC GROUP N — N messages from the beginning, read_committed, "k:v" lines.
consume() {
  ktout "$CONSUMER" --bootstrap-server "$1" --topic "$2" --group "$3" --from-beginning \
    --isolation-level read_committed --max-messages "$4" --timeout-ms 60000 \
    --formatter-property print.key=true --formatter-property key.separator=:
}

# expect_lines FILE LINES... — FILE holds exactly LINES, in any order.
expect_lines() {
  local f="$1"; shift
  diff <(sort "$f") <(printf '%s\n' "$@" | sort) >/dev/null
}

# tx_produce BOOTSTRAP TOPIC TXN_ID N — N records 0..N-1 (payload = record number) in
# transactions of ~100 ms with an exactly-once (transactional, idempotent) producer.
tx_produce() {
  kt "$PERF" --bootstrap-server "$1" --topic "$2" --num-records "$4" --payload-monotonic \
    --throughput -1 --transactional-id "$3" --transaction-duration-ms 100 \
    --command-property acks=all --command-property delivery.timeout.ms=120000 &&
    grep -q "^$4 records sent" "$OUT"
}

# check_tx_topic BOOTSTRAP TOPIC N — read_committed sees exactly 0..N-1 once each, and the log
# end offset is past N (commit markers were written: the records really went through
# transactions).
check_tx_topic() {
  ktout "$CONSUMER" --bootstrap-server "$1" --topic "$2" --from-beginning \
    --isolation-level read_committed --max-messages "$3" --timeout-ms 60000 || return 1
  [[ "$(sort -n "$OUT" | uniq | wc -l)" == "$3" ]] || return 1
  [[ "$(sort -n "$OUT" | head -n 1)" == 0 && "$(sort -n "$OUT" | tail -n 1)" == $(($3 - 1)) ]] \
    || return 1
  ktout "$OFFSETS" --bootstrap-server "$1" --topic "$2" || return 1
  END_OFFSET="$(awk -F: '{ s += $3 } END { print s + 0 }' "$OUT")"
  ((END_OFFSET > $3))
}

echo "== kafka smoke test: KAFKA_PORT=$KAFKA_PORT HEADWATER_KAFKA_DIR=$HEADWATER_KAFKA_DIR"
echo "== java: $(java -version 2>&1 | head -n 1)"

# ------------------------------------------------------------------ jars
t0=$(date +%s.%N)
"$K" fetch >"$OUT" 2>&1 || fail "fetch the Kafka jars"
pass "jars in $(tail -n 1 "$OUT") ($(find "$(tail -n 1 "$OUT")" -name '*.jar' | wc -l) jars," \
  "$(du -sh "$(tail -n 1 "$OUT")" | cut -f1); $(since "$t0") s)"

# ------------------------------------------------------------------ single broker
echo "== single broker"
t0=$(date +%s.%N)
B="$("$K" start 2>"$OUT")" || fail "kafka.sh start"
pass "single broker ready at $B ($(since "$t0") s from 'kafka.sh start')"

"$K" status single >"$OUT" 2>&1 || fail "kafka.sh status single says it is not running"
pass "status: $(cat "$OUT")"

kt "$TOPICS" --bootstrap-server "$B" --create --topic smoke --partitions 3 --replication-factor 1 \
  || fail "create topic 'smoke'"
kt "$TOPICS" --bootstrap-server "$B" --list && grep -qx smoke "$OUT" || fail "list topics"
pass "created and listed topic 'smoke' (3 partitions)"

produce "$B" smoke k1:v1 k2:v2 k3:v3 k4:v4 k5:v5 || fail "produce 5 messages (acks=all)"
pass "produced 5 keyed messages with the console producer (acks=all)"

consume "$B" smoke smoke-group 5 && expect_lines "$OUT" k1:v1 k2:v2 k3:v3 k4:v4 k5:v5 \
  || fail "consume the 5 messages back"
pass "consumed them back in consumer group 'smoke-group': $(sort "$OUT" | tr '\n' ' ')"

t1=$(date +%s.%N)
tx_produce "$B" smoke-tx smoke-txn 1000 || fail "transactional produce (ProducerPerformance)"
pass "transactional produce: $(grep 'records sent' "$OUT" | cut -d, -f1,2) ($(since "$t1") s)"

check_tx_topic "$B" smoke-tx 1000 || fail "read the transactional records back (read_committed)"
pass "read_committed sees records 0..999 exactly once; log end offset $END_OFFSET > 1000" \
  "(commit markers)"

ktout "$TXNS" --bootstrap-server "$B" describe --transactional-id smoke-txn &&
  grep -q CompleteCommit "$OUT" || fail "the transaction state is CompleteCommit"
pass "transaction 'smoke-txn' is CompleteCommit"

t0=$(date +%s.%N)
"$K" stop >"$OUT" 2>&1 || fail "kafka.sh stop"
if "$K" status single >"$OUT" 2>&1; then fail "the broker still runs after stop"; fi
pass "stopped ($(since "$t0") s); status: $(cat "$OUT")"

# ------------------------------------------------------------------ three-node cluster
echo "== three-node cluster"
t0=$(date +%s.%N)
C="$("$K" start-cluster 2>"$OUT")" || fail "kafka.sh start-cluster"
pass "cluster ready at $C ($(since "$t0") s from 'kafka.sh start-cluster')"

ktout "$CONFIGS" --bootstrap-server "$C" --describe --entity-type brokers --entity-name 1 --all ||
  fail "describe the broker config"
for want in default.replication.factor=3 min.insync.replicas=2 offsets.topic.replication.factor=3 \
  transaction.state.log.replication.factor=3 transaction.state.log.min.isr=2; do
  grep -q "^ *$want " "$OUT" || fail "broker config has $want"
done
pass "broker config: RF 3, min.insync.replicas=2, internal topics RF 3 / min ISR 2"

kt "$TOPICS" --bootstrap-server "$C" --create --topic smoke3 --partitions 3 ||
  fail "create topic 'smoke3'"
ktout "$TOPICS" --bootstrap-server "$C" --describe --topic smoke3 &&
  grep -q 'ReplicationFactor: 3' "$OUT" || fail "topic 'smoke3' has replication factor 3"
pass "created topic 'smoke3' with the default replication factor 3:"
indent <"$OUT"

produce "$C" smoke3 a1:x1 a2:x2 a3:x3 a4:x4 a5:x5 || fail "produce 5 messages to the cluster"
consume "$C" smoke3 smoke3-group-a 5 && expect_lines "$OUT" a1:x1 a2:x2 a3:x3 a4:x4 a5:x5 \
  || fail "consume the 5 messages back from the cluster"
pass "produced (acks=all) and consumed 5 messages on the cluster"

# Transactions before the failure too: this creates __transaction_state with RF 3 while all
# three brokers are up (a 2-broker cluster cannot create an RF 3 topic).
tx_produce "$C" smoke3-tx smoke3-txn-a 500 || fail "transactional produce on the cluster"
check_tx_topic "$C" smoke3-tx 500 || fail "read the cluster's transactional records back"
pass "transactional produce of 500 records on the cluster, read back with read_committed"

"$K" kill-node 2 >"$OUT" 2>&1 || fail "kafka.sh kill-node 2"
if "$K" status cluster >"$OUT" 2>&1; then fail "status cluster still says all nodes run"; fi
grep -q 'cluster: 2 of 3' "$OUT" || fail "status shows 2 of 3 nodes"
pass "killed node 2 (SIGKILL); status: $(grep '^cluster:' "$OUT")"

t1=$(date +%s.%N)
produce "$C" smoke3 b1:y1 b2:y2 b3:y3 b4:y4 b5:y5 ||
  fail "produce with acks=all while node 2 is down"
pass "produced 5 more messages with acks=all while node 2 is down ($(since "$t1") s, incl." \
  "leader failover)"

ktout "$TOPICS" --bootstrap-server "$C" --describe --topic smoke3 ||
  fail "describe 'smoke3' with node 2 down"
if grep -E 'Isr: [0-9,]*2' "$OUT" | grep -q .; then fail "node 2 is still in an ISR"; fi
pass "every partition of 'smoke3' runs on 2 in-sync replicas (min.insync.replicas=2):"
indent <"$OUT"

consume "$C" smoke3 smoke3-group-b 10 &&
  expect_lines "$OUT" a1:x1 a2:x2 a3:x3 a4:x4 a5:x5 b1:y1 b2:y2 b3:y3 b4:y4 b5:y5 ||
  fail "consume all 10 messages while node 2 is down"
pass "consumed all 10 messages while node 2 is down"

tx_produce "$C" smoke3-tx2 smoke3-txn-b 500 || fail "transactional produce while node 2 is down"
check_tx_topic "$C" smoke3-tx2 500 || fail "read back the transactional records (node 2 down)"
pass "transactional produce of 500 records while node 2 is down, read back with read_committed"

t1=$(date +%s.%N)
"$K" start-node 2 >"$OUT" 2>&1 || fail "kafka.sh start-node 2"
pass "restarted node 2 ($(since "$t1") s until it is back in the cluster)"

deadline=$((SECONDS + 90))
while :; do
  ktout "$TOPICS" --bootstrap-server "$C" --describe --under-replicated-partitions || true
  [[ ! -s "$OUT" ]] && break
  ((SECONDS < deadline)) || fail "partitions still under-replicated 90 s after node 2 came back"
  sleep 2
done
pass "node 2 caught up: no under-replicated partitions ($(since "$t1") s after the restart)"

consume "$C" smoke3 smoke3-group-c 10 &&
  expect_lines "$OUT" a1:x1 a2:x2 a3:x3 a4:x4 a5:x5 b1:y1 b2:y2 b3:y3 b4:y4 b5:y5 ||
  fail "consume all 10 messages after the restart"
pass "all 10 messages readable after the restart"

t0=$(date +%s.%N)
"$K" stop-cluster >"$OUT" 2>&1 || fail "kafka.sh stop-cluster"
if "$K" status cluster >"$OUT" 2>&1; then fail "cluster nodes still run after stop-cluster"; fi
pass "stopped the cluster ($(since "$t0") s)"

summary
