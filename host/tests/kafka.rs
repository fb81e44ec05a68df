//! Kafka end to end against a real broker (Apache Kafka in KRaft mode, started by
//! `integration/kafka/kafka.sh` from the Maven Central jars): Kafka -> Python UDF -> key_by ->
//! window -> transactional Kafka sink, with the host and the Python workers killed with SIGKILL
//! at random moments; a read_committed consumer must find every expected aggregate exactly once.
//!
//! `./dev test` starts one broker for the suite and names it in HEADWATER_TEST_KAFKA; without it
//! this file starts its own on a port derived from the test process id (and stops it when the
//! process exits).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../integration/kafka/kafka.sh")
}

mod common;
use common::{wait_for, wait_while_running};

/// `headwater` in `dir`, with the SDK's Python for the UDFs.
fn headwater(dir: &Path) -> Command {
    let mut c = common::headwater_in(dir);
    if let Some(python) = common::find_python() {
        c.env("HEADWATER_PYTHON", python);
    }
    c
}

/// The broker every test of this file uses.
fn bootstrap() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(b) = std::env::var("HEADWATER_TEST_KAFKA") {
            if !b.is_empty() {
                return b;
            }
        }
        let port = 2 * common::ports::process_port(10000, 400, 0);
        let state = std::env::temp_dir().join(format!("headwater-kafka-test-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(kafka_script())
            .arg("start")
            .env("KAFKA_PORT", port.to_string())
            .env("HEADWATER_KAFKA_DIR", &state)
            .output()
            .expect("run integration/kafka/kafka.sh");
        assert!(
            out.status.success(),
            "integration/kafka/kafka.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Stop the broker when this test process exits, however it exits.
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 1; done; KAFKA_PORT={port} HEADWATER_KAFKA_DIR='{dir}' bash '{script}' stop >/dev/null 2>&1; rm -rf '{dir}'",
                pid = std::process::id(),
                dir = state.display(),
                script = kafka_script().display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client")
}

fn create_topic(name: &str, partitions: i32) {
    let admin = admin();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    let results = futures::executor::block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// A topic name no other test (or earlier run) used.
fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Produces `(partition, key, payload)` messages and waits until all are acknowledged.
fn produce(topic: &str, messages: &[(i32, String, Vec<u8>)]) {
    produce_to(bootstrap(), topic, messages)
}

fn produce_to(brokers: &str, topic: &str, messages: &[(i32, String, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (partition, key, payload) in messages {
        let mut record = BaseRecord::to(topic)
            .partition(*partition)
            .key(key.as_bytes())
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("flush the test input");
}

/// Every message of `topic` a consumer with `isolation` (`read_committed` or
/// `read_uncommitted`) sees now, as text.
fn read_all(topic: &str, isolation: &str) -> Vec<String> {
    read_all_from(bootstrap(), topic, isolation)
}

fn read_all_from(brokers: &str, topic: &str, isolation: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("verifier"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
            open += 1;
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while open > 0 {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into())
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

const UDFS: &str = r#"
import time

import headwater as hw


@hw.map
def enrich(record):
    record["v2"] = record["v"] * 2
    return record


@hw.map
def enrich_slowly(record):
    time.sleep(0.0005)
    return enrich(record)
"#;

/// (user, window start, count, sum of v2), sorted: the rows of the tumbling-window pipeline.
type Rows = Vec<(String, i64, i64, i64)>;

/// `n` events over `partitions` partitions; event time advances 10 ms per event per partition
/// with up to 2 s of disorder (the pipeline allows 5 s, so nothing is late).
fn events(n: usize, partitions: i32, seed: u64) -> (Vec<(i32, String, Vec<u8>)>, Rows) {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut messages = Vec::with_capacity(n);
    let mut acc: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..n {
        let partition = (i % partitions as usize) as i32;
        let step = (i / partitions as usize) as i64;
        let t = 1_767_225_600_000 + step * 10 + (next() % 2000) as i64;
        let user = format!("u{}", next() % 300);
        let v = (next() % 100) as i64;
        messages.push((
            partition,
            user.clone(),
            format!(r#"{{"ts":{t},"user":"{user}","v":{v}}}"#).into_bytes(),
        ));
        let start = t - t.rem_euclid(10_000);
        let e = acc.entry((user, start)).or_default();
        e.0 += 1;
        e.1 += 2 * v;
    }
    let rows = acc
        .into_iter()
        .map(|((u, s), (c, total))| (u, s, c, total))
        .collect();
    (messages, rows)
}

fn rows_of(messages: &[String]) -> Rows {
    let mut rows: Rows = messages
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).expect("json output");
            (
                v["user"].as_str().expect("user").to_string(),
                v["window_start"].as_i64().expect("window_start"),
                v["n"].as_i64().expect("n"),
                v["total"].as_i64().expect("total"),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Writes the pipeline: Kafka -> Python `enrich` -> key_by user -> 10 s tumbling windows ->
/// Kafka, exactly once, checkpoints every `interval` (which may go on with more checkpoint
/// settings: `200ms, mode: unaligned`).
fn write_pipeline(
    dir: &Path,
    name: &str,
    input: &str,
    output: &str,
    interval: &str,
    function: &str,
) {
    std::fs::write(dir.join("my_udfs.py"), UDFS).expect("udfs");
    let b = bootstrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            "name: {name}\nparallelism: 2\n\
sources:\n  events:\n    type: kafka\n    topic: {input}\n    brokers: {b}\n    until: end\n    event_time: {{ field: ts, max_out_of_orderness: 5s }}\n\
udfs:\n  enrich: {{ runtime: python, module: my_udfs, function: {function} }}\n\
steps:\n  - udf: enrich\n  - key_by: user\n  - window:\n      type: tumbling\n      size: 10s\n      aggregates: {{ n: count(), total: sum(v2) }}\n\
sinks:\n  out:\n    type: kafka\n    topic: {output}\n    brokers: {b}\n    key: user\n\
output: out\ncheckpoint: {{ interval: {interval} }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("pipeline");
}

/// A test's input topic filled with `n` events over `partitions` partitions, its output topic
/// name and the pipeline (`write_pipeline`) in a folder of its own.
struct Case {
    dir: tempfile::TempDir,
    input: String,
    output: String,
    /// The oracle: every aggregate the pipeline must commit, once.
    expected: Rows,
}

fn case(name: &str, partitions: i32, n: usize, seed: u64, interval: &str) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = unique(&format!("{name}-in"));
    let output = unique(&format!("{name}-out"));
    create_topic(&input, partitions);
    let (messages, expected) = events(n, partitions, seed);
    produce(&input, &messages);
    write_pipeline(dir.path(), name, &input, &output, interval, "enrich");
    Case {
        dir,
        input,
        output,
        expected,
    }
}

/// Kills every Python worker of the run `host` started (they are its children).
fn kill_workers(host: &Child) -> usize {
    let pids = common::children_matching(host.id(), "headwater.worker");
    for pid in &pids {
        common::signal(pid, "-9");
    }
    pids.len()
}

#[test]
fn kafka_to_python_to_window_to_kafka_is_exactly_once_across_sigkills() {
    kafka_chaos("kchaos", "200ms");
}

#[test]
fn kafka_to_python_to_window_to_kafka_is_exactly_once_across_sigkills_unaligned() {
    kafka_chaos("kchaos-u", "200ms, mode: unaligned");
}

/// Kafka -> Python -> keyed windows -> Kafka (`checkpoint` settings as given), with at least
/// 20 SIGKILLs of the host and 20 of its Python workers: read_committed output equals the
/// oracle.
fn kafka_chaos(name: &str, checkpoint: &str) {
    let Case {
        dir,
        output,
        expected,
        ..
    } = case(name, 4, 2_000_000, 7, checkpoint);

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut host_kills, mut worker_kills, mut runs) = (0, 0, 0);
    let mut fresh = true;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        assert!(Instant::now() < deadline, "the chaos run did not finish");
        let mut args = vec!["run", "pipeline.yaml", "-q"];
        if fresh {
            args.push("--fresh");
        }
        let mut child = headwater(dir.path())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        runs += 1;
        fresh = false;
        let chaos = host_kills < 20 || worker_kills < 20;
        // Some runs lose their workers first, then (most of them) the host. The input must
        // outlast 20 such lives however fast the pipeline runs.
        let life = Duration::from_millis(500 + rand(2000));
        let started = Instant::now();
        let mut workers_done = !chaos || worker_kills >= 20;
        let mut finished = None;
        while started.elapsed() < life || !chaos {
            if let Some(status) = child.try_wait().expect("wait") {
                finished = Some(status);
                break;
            }
            if !workers_done && started.elapsed() > life / 2 {
                worker_kills += kill_workers(&child).min(1);
                workers_done = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match finished {
            Some(status) => {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                assert!(status.success(), "run {runs} failed: {stderr}");
                if !chaos {
                    break;
                }
                // It finished before the kill: the rest of the kills hit resumed runs,
                // which find nothing left to do; start over would hide nothing, so stop.
                break;
            }
            None => {
                if rand(4) != 0 || worker_kills >= 20 {
                    let _ = child.kill();
                    host_kills += 1;
                } else {
                    // Let this run go on a little with its restarted workers, then kill it.
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = child.kill();
                    host_kills += 1;
                }
                let _ = child.wait();
            }
        }
    }
    assert!(
        host_kills >= 20 && worker_kills >= 20,
        "the input was consumed before enough chaos: {host_kills} host kills, {worker_kills} worker kills in {runs} runs; make the input bigger"
    );
    let committed = read_all(&output, "read_committed");
    let got = rows_of(&committed);
    assert_eq!(
        got.len(),
        expected.len(),
        "{} aggregates committed, {} expected ({host_kills} host kills, {worker_kills} worker kills)",
        got.len(),
        expected.len()
    );
    assert!(
        got == expected,
        "committed aggregates differ from the oracle"
    );
    // Everything the crashed runs wrote but did not commit stays invisible: the topic holds
    // more than read_committed shows.
    let all = read_all(&output, "read_uncommitted");
    assert!(
        all.len() >= committed.len(),
        "read_uncommitted sees less than read_committed"
    );
}

#[test]
fn a_second_host_fences_the_first_whose_pending_writes_never_show() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let input = unique("fence-in");
    let output = unique("fence-out");
    create_topic(&input, 2);
    create_topic(&output, 1);
    let (messages, expected) = events(200_000, 2, 11);
    produce(&input, &messages);
    // Long checkpoints: the first host holds an open transaction with results for a while.
    write_pipeline(
        dir_a.path(),
        "fence",
        &input,
        &output,
        "1h",
        "enrich_slowly",
    );
    write_pipeline(dir_b.path(), "fence", &input, &output, "1h", "enrich");
    // Host A runs (checkpoints only when its input ends: the final one) but is slowed so it
    // is still writing when B starts.
    let a = headwater(dir_a.path())
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run A");
    // Wait until A has written (uncommitted) results.
    wait_for(
        "host A's first (uncommitted) results",
        Duration::from_secs(120),
        || !read_all(&output, "read_uncommitted").is_empty(),
    );
    let pending_of_a = read_all(&output, "read_uncommitted").len();
    // Host B, same pipeline name (same transactional ids), its own state folder.
    let b = headwater(dir_b.path())
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .output()
        .expect("run B");
    assert!(
        b.status.success(),
        "host B failed: {}",
        String::from_utf8_lossy(&b.stderr)
    );
    let a = a.wait_with_output().expect("wait A");
    let a_err = String::from_utf8_lossy(&a.stderr);
    if a.status.success() {
        // A finished and committed before B fenced it: then B's results duplicate A's, which
        // is what a second host with its own state does; the test needs A to be slower.
        panic!("host A finished before host B fenced it; the test input is too small");
    }
    assert!(
        a_err.to_lowercase().contains("fenced"),
        "host A should stop because it was fenced: {a_err}"
    );
    let committed = read_all(&output, "read_committed");
    assert!(pending_of_a > 0);
    assert_eq!(
        rows_of(&committed),
        expected,
        "read_committed shows exactly host B's results: A's pending writes never became visible"
    );
}

#[test]
fn poison_messages_go_to_the_dlq_topic_and_the_run_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = unique("poison-in");
    let output = unique("poison-out");
    let dlq = unique("poison-dlq");
    let late = unique("poison-late");
    create_topic(&input, 2);
    let (mut messages, expected) = events(20_000, 2, 5);
    let big = format!(
        r#"{{"ts":1767225600000,"user":"u1","v":1,"pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let poison: Vec<(i32, String, Vec<u8>)> = vec![
        (0, "p".into(), b"not json at all".to_vec()),
        (1, "p".into(), b"[1,2,3]".to_vec()),
        (0, "p".into(), br#"{"user":"u1","v":1}"#.to_vec()),
        (1, "p".into(), big.into_bytes()),
    ];
    for (i, p) in poison.iter().enumerate() {
        messages.insert(1000 * (i + 1), p.clone());
    }
    // An hour late when it arrives: it goes to the late-data topic, not into a window.
    let late_record = r#"{"ts":1767222000000,"user":"u7","v":3}"#;
    messages.insert(9000, (0, "late".into(), late_record.as_bytes().to_vec()));
    produce(&input, &messages);
    write_pipeline(dir.path(), "poison", &input, &output, "300ms", "enrich");
    let b = bootstrap();
    let text = std::fs::read_to_string(dir.path().join("pipeline.yaml")).expect("read");
    let text = text
        .replace(
            "    until: end\n",
            "    until: end\n    max_record_bytes: 1000\n",
        )
        .replace(
            "aggregates: { n: count(), total: sum(v2) }\n",
            "aggregates: { n: count(), total: sum(v2) }\n      late: { sink: late }\n",
        )
        .replace(
            "output: out\n",
            &format!("  dead: {{ type: kafka, topic: {dlq}, brokers: '{b}' }}\n  late: {{ type: kafka, topic: {late}, brokers: '{b}' }}\noutput: out\ndlq: {{ sink: dead }}\n"),
        );
    std::fs::write(dir.path().join("pipeline.yaml"), text).expect("write");
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "--fresh"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        rows_of(&read_all(&output, "read_committed")),
        expected,
        "the good records' aggregates"
    );
    let late_seen = read_all(&late, "read_committed");
    assert_eq!(late_seen.len(), 1, "{late_seen:?}");
    let late_value: serde_json::Value = serde_json::from_str(&late_seen[0]).expect("json");
    assert_eq!(late_value["ts"], 1_767_222_000_000i64, "{late_value}");
    let letters: Vec<serde_json::Value> = read_all(&dlq, "read_committed")
        .iter()
        .map(|l| serde_json::from_str(l).expect("envelope"))
        .collect();
    assert_eq!(letters.len(), 4, "{letters:?}");
    let errors: Vec<String> = letters
        .iter()
        .map(|l| l["error"].as_str().unwrap_or_default().to_string())
        .collect();
    for expected_error in [
        "not valid JSON",
        "expected a JSON object",
        "event-time field `ts` is missing",
        "above the source's max_record_bytes (1000)",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected_error)),
            "no dead letter says `{expected_error}`: {errors:?}"
        );
    }
    for l in &letters {
        assert_eq!(l["source"], "events");
        assert!(
            l["partition_name"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("kafka:{input}["))),
            "{l}"
        );
        assert!(l["offset"].as_u64().is_some(), "{l}");
    }
    // The on-call tools read the dead-letter topic: the same four, grouped by cause.
    let out = headwater(dir.path())
        .args(["dlq", "inspect", "pipeline.yaml", "--json"])
        .output()
        .expect("inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["dead_letters"], 4, "{report}");
    assert_eq!(report["file"], format!("kafka:{dlq}"));
    let groups = report["groups"].as_array().expect("groups");
    let counted: u64 = groups.iter().filter_map(|g| g["count"].as_u64()).sum();
    assert_eq!(counted, 4);
    // A replay finds a group there, and says why a decode failure cannot run again.
    let decode = groups
        .iter()
        .find(|g| g["step"] == "decode")
        .and_then(|g| g["fingerprint"].as_str())
        .expect("a decode group");
    let out = headwater(dir.path())
        .args([
            "dlq",
            "replay",
            "pipeline.yaml",
            "--group",
            decode,
            "--dry-run",
        ])
        .output()
        .expect("replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a udf step"), "{stderr}");
}

/// The DLQ as a Kafka topic: a group read from it is sent back after the fix, each record
/// reaches the Kafka output exactly once (read_committed), and asking again is refused.
#[test]
fn a_group_in_a_dlq_topic_is_replayed_into_the_output_topic_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output, dlq) = (unique("rp-in"), unique("rp-out"), unique("rp-dlq"));
    create_topic(&input, 2);
    let n = 2000i64;
    let messages: Vec<(i32, String, Vec<u8>)> = (0..n)
        .map(|v| {
            let body = format!(
                r#"{{"ts":{},"user":"u{}","v":{v}}}"#,
                1_767_225_600_000 + v,
                v % 5
            );
            ((v % 2) as i32, format!("u{}", v % 5), body.into_bytes())
        })
        .collect();
    produce(&input, &messages);
    let failing = (0..n).filter(|v| v % 97 == 13).count();
    let udfs = |fixed: bool| {
        format!(
            "import headwater as hw\n\n@hw.map\ndef checked(r):\n    if r['v'] % 97 == 13 and not {}:\n        raise ValueError(f\"bad v {{r['v']}}\")\n    return {{**r, 'ok': True}}\n",
            if fixed { "True" } else { "False" }
        )
    };
    std::fs::write(dir.path().join("my_udfs.py"), udfs(false)).expect("udfs");
    let b = bootstrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "name: rp\nparallelism: 2\n\
sources:\n  events:\n    type: kafka\n    topic: {input}\n    brokers: {b}\n    until: end\n    event_time: {{ field: ts }}\n\
udfs:\n  checked: {{ runtime: python, module: my_udfs, function: checked }}\n\
steps:\n  - udf: checked\n\
sinks:\n  out: {{ type: kafka, topic: {output}, brokers: '{b}' }}\n  dead: {{ type: kafka, topic: {dlq}, brokers: '{b}' }}\n\
output: out\ndlq: {{ sink: dead }}\ncheckpoint: {{ interval: 300ms }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("pipeline");
    let run = |fresh: bool| {
        let mut args = vec!["run", "pipeline.yaml", "-q"];
        if fresh {
            args.push("--fresh");
        }
        let out = headwater(dir.path()).args(&args).output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let outputs = || {
        let mut counts = std::collections::BTreeMap::<i64, usize>::new();
        for text in read_all(&output, "read_committed") {
            let v: serde_json::Value = serde_json::from_str(&text).expect("json");
            *counts.entry(v["v"].as_i64().expect("v")).or_default() += 1;
        }
        counts
    };
    run(true);
    assert_eq!(outputs().len(), n as usize - failing);
    let letters = read_all(&dlq, "read_committed");
    assert_eq!(letters.len(), failing);
    let envelope: serde_json::Value = serde_json::from_str(&letters[0]).expect("envelope");
    let group = envelope["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();

    std::fs::write(dir.path().join("my_udfs.py"), udfs(true)).expect("fix");
    let replay = || {
        headwater(dir.path())
            .args(["dlq", "replay", "pipeline.yaml", "--group", &group])
            .output()
            .expect("replay")
    };
    let out = replay();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("queued replay 1: {failing} record(s)")),
        "{stdout}"
    );
    run(false);
    let counts = outputs();
    assert_eq!(
        counts.len(),
        n as usize,
        "every record is in the output now"
    );
    assert!(counts.values().all(|&c| c == 1), "each once: {counts:?}");
    let out = replay();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sent back already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(false);
    assert!(
        outputs().values().all(|&c| c == 1),
        "a further run adds nothing"
    );
}

#[test]
fn at_least_once_delivers_everything_without_transactions() {
    let Case {
        dir,
        input,
        output,
        expected,
    } = case("alo", 2, 50_000, 9, "500ms");
    let text = std::fs::read_to_string(dir.path().join("pipeline.yaml")).expect("read");
    let text = text.replace(
        "    key: user\n",
        "    key: user\n    delivery: at_least_once\n",
    );
    std::fs::write(dir.path().join("pipeline.yaml"), text).expect("write");
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No transactions: read_uncommitted and read_committed agree, and a clean run has no
    // duplicates.
    assert_eq!(rows_of(&read_all(&output, "read_uncommitted")), expected);
    assert_eq!(rows_of(&read_all(&output, "read_committed")), expected);
    // The source committed its checkpointed offsets to the consumer group (for lag tools):
    // the end of each partition.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "headwater-alo")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition(&input, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("committed offsets");
    for p in 0..2 {
        let (_, high) = consumer
            .fetch_watermarks(&input, p, Duration::from_secs(30))
            .expect("watermarks");
        let offset = committed
            .find_partition(&input, p)
            .map(|e| e.offset())
            .expect("partition");
        assert_eq!(
            offset,
            Offset::Offset(high),
            "group offset of partition {p}"
        );
    }
}

/// A three-node cluster (RF 3, min.insync.replicas 2) of this test's own.
struct Cluster {
    env: Vec<(String, String)>,
    bootstrap: String,
}

impl Cluster {
    fn kafka(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(kafka_script())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("kafka.sh")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.kafka(&["stop-cluster"]);
        if let Some((_, dir)) = self.env.iter().find(|(k, _)| k == "HEADWATER_KAFKA_DIR") {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn a_broker_killed_and_restarted_mid_run_loses_nothing() {
    let port = 21000 + 6 * (std::process::id() % 100);
    let state =
        std::env::temp_dir().join(format!("headwater-kafka-cluster-{}", std::process::id()));
    let mut cluster = Cluster {
        env: vec![
            ("KAFKA_PORT".into(), port.to_string()),
            ("HEADWATER_KAFKA_DIR".into(), state.display().to_string()),
        ],
        bootstrap: String::new(),
    };
    let out = cluster.kafka(&["start-cluster"]);
    assert!(
        out.status.success(),
        "start-cluster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let b = cluster.bootstrap.clone();
    // Topics replicated three times.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .expect("admin");
    let input = unique("rf3-in");
    let output = unique("rf3-out");
    for (t, p) in [(&input, 4), (&output, 2)] {
        let topic = NewTopic::new(t, p, TopicReplication::Fixed(3));
        for r in futures::executor::block_on(admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
        ))
        .expect("create")
        {
            r.expect("created");
        }
    }
    // Few records, slowly processed: the run lasts ~20 s, across the broker's death and return.
    let (messages, expected) = events(40_000, 4, 21);
    produce_to(&b, &input, &messages);
    let dir = tempfile::tempdir().expect("tempdir");
    // The slow UDF keeps the run going while a broker dies and comes back.
    std::fs::write(dir.path().join("my_udfs.py"), UDFS).expect("udfs");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "name: rf3\nparallelism: 2\n\
sources:\n  events:\n    type: kafka\n    topic: {input}\n    brokers: {b}\n    until: end\n    event_time: {{ field: ts, max_out_of_orderness: 5s }}\n\
udfs:\n  enrich: {{ runtime: python, module: my_udfs, function: enrich_slowly }}\n\
steps:\n  - udf: enrich\n  - key_by: user\n  - window:\n      type: tumbling\n      size: 10s\n      aggregates: {{ n: count(), total: sum(v2) }}\n\
sinks:\n  out: {{ type: kafka, topic: {output}, brokers: '{b}', key: user, commit_topic: {output}-commits }}\n\
output: out\ncheckpoint: {{ interval: 300ms }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("pipeline");
    let mut child = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // Under way: it has consumed and taken a checkpoint.
    let ended = wait_while_running(
        &mut child,
        "the run's first checkpoint",
        Duration::from_secs(120),
        || common::newest_checkpoint(dir.path(), "rf3") > 0,
    );
    if ended.is_some() {
        let out = child.wait_with_output().expect("wait");
        panic!(
            "the run ended ({}) before a broker could be killed: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let killed = cluster.kafka(&["kill-node", "2"]);
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the run ended while the broker was down: the test no longer covers the restart"
    );
    let restarted = cluster.kafka(&["start-node", "2"]);
    assert!(
        restarted.status.success(),
        "{}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "the run did not survive the broker restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read_all_from(&b, &output, "read_committed");
    assert_eq!(rows_of(&got), expected);
}

#[test]
fn a_crash_between_checkpoint_and_kafka_commit_is_redone_exactly_once() {
    // Each run but the last aborts right after writing a checkpoint's manifest, before its
    // Kafka transactions commit (or after one of the two sink instances committed): the next
    // run must commit that epoch exactly once (it redoes it from the epoch's records: the
    // crashed run's transaction is aborted when the new run fences it).
    let Case {
        dir,
        output,
        expected,
        ..
    } = case("kcrash", 2, 600_000, 13, "150ms");
    let mut redone = 0;
    let mut log = Vec::new();
    // Until three runs redid an interrupted commit (a run's 3rd checkpoint may come before any
    // result on a loaded machine, so the number of rounds that takes varies). The input must
    // outlast those rounds however fast the pipeline is: each round reads ~0.5 s of it.
    let mut round = 0;
    while redone < 3 && round < 15 {
        round += 1;
        let mut c = headwater(dir.path());
        c.args(["run", "pipeline.yaml", "-q"]);
        if round == 1 {
            c.arg("--fresh");
        }
        // The 3rd checkpoint of the run: results are usually flowing by then. Every other
        // round dies after the first of the two sink instances committed: the next run must
        // redo only the other one's epoch.
        let point = if round % 2 == 1 {
            "manifest-written:3"
        } else {
            "committed-one:3"
        };
        let out = c
            .env("HEADWATER_CRASH_AT", point)
            .env("HEADWATER_LOG", "info")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("redoing the interrupted commit") {
            redone += 1;
        }
        log.extend(
            stderr
                .lines()
                .filter(|l| l.contains("redoing") || l.contains("resuming"))
                .map(str::to_string),
        );
        if out.status.success() {
            break; // the input ran out before a 3rd checkpoint
        }
        assert!(
            stderr.contains("aborting on purpose"),
            "round {round} should abort at {point}: {stderr}"
        );
    }
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .env("HEADWATER_LOG", "info")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    if stderr.contains("redoing the interrupted commit") {
        redone += 1;
    }
    assert_eq!(
        rows_of(&read_all(&output, "read_committed")),
        expected,
        "committed aggregates differ from the oracle ({redone} runs redid an interrupted commit)"
    );
    assert!(
        redone >= 3,
        "only {redone} runs found an interrupted commit with records to redo:\n{}",
        log.join("\n")
    );
}

/// `text` without ANSI colour sequences (log lines colour their fields).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_rescaled_run_retires_the_sink_instances_it_no_longer_has() {
    // Three tasks, so three sink instances, each with its own transactional producers. Runs
    // abort right after a checkpoint's manifest, before any instance committed its
    // transaction. The next run has one task: instances 1 and 2 no longer exist, yet their
    // epochs must become visible exactly once (redone by the run that retires them) and their
    // open transactions must not linger.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = unique("kscale-in");
    create_topic(&input, 3);
    let n: usize = 300_000;
    let messages: Vec<(i32, String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                (i % 3) as i32,
                format!("k{}", i % 1000),
                format!(
                    r#"{{"ts":{},"id":{i},"k":"k{}"}}"#,
                    1_767_225_600_000 + i,
                    i % 1000
                )
                .into_bytes(),
            )
        })
        .collect();
    produce(&input, &messages);
    let b = bootstrap();
    let pipeline = |parallelism: usize, output: &str| {
        format!(
            "name: kscale\nparallelism: {parallelism}\n\
sources:\n  events: {{ type: kafka, topic: {input}, brokers: '{b}', until: end, event_time: {{ field: ts }} }}\n\
steps:\n  - map: {{ select: [id, k] }}\n\
sinks:\n  out: {{ type: kafka, topic: {output}, brokers: '{b}', key: k }}\n\
output: out\ncheckpoint: {{ interval: 100ms, mode: unaligned }}\ntuning: {{ progress_interval: 0s }}\n"
        )
    };
    // Unaligned checkpoints: results queued in front of a sink instance go into the
    // checkpoint, and the resumed run (with one instance) writes those of all three first.
    // Until a crash leaves records pending in instances 1 and 2 (the first epochs of a run can
    // be empty while the consumers start). Each round starts over (`--fresh`) into an output
    // topic of its own, so the input never runs out; the last round's topic is checked.
    let pending = |instance: usize| {
        let dir = dir.path().join(format!(
            ".headwater/kscale/state/kafka-sinks/out/{instance}"
        ));
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
    };
    let mut round = 0;
    let mut output = String::new();
    while round == 0 || !(pending(1) && pending(2)) {
        round += 1;
        assert!(
            round <= 10,
            "no crash left records pending in instances 1 and 2"
        );
        output = unique("kscale-out");
        std::fs::write(dir.path().join("pipeline.yaml"), pipeline(3, &output)).expect("pipeline");
        let out = headwater(dir.path())
            .args(["run", "pipeline.yaml", "-q", "--fresh"])
            .env("HEADWATER_CRASH_AT", "manifest-written:8")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("aborting on purpose"),
            "round {round} should abort after its 8th manifest: {stderr}"
        );
    }

    // How much the crashed run's newest checkpoint had in flight to the sink instances.
    let newest = std::fs::read_dir(dir.path().join(".headwater/kscale/checkpoints/manifests"))
        .expect("manifests")
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("a manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&newest).expect("read manifest")).expect("json");
    eprintln!(
        "results in flight to sink instances at the restored checkpoint: {}",
        manifest["sink_channels"]
    );

    std::fs::write(dir.path().join("pipeline.yaml"), pipeline(1, &output)).expect("pipeline");
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .env("HEADWATER_LOG", "info")
        .output()
        .expect("run");
    let stderr = without_colours(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for instance in [1, 2] {
        assert!(
            stderr.lines().any(|l| l.contains("retired a sink instance")
                && l.contains(&format!("instance={instance}"))),
            "instance {instance} was not retired:\n{stderr}"
        );
    }
    let redone: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("redoing the interrupted commit"))
        .collect();
    assert!(
        redone.iter().any(|l| l.contains("instance=1"))
            && redone.iter().any(|l| l.contains("instance=2")),
        "the retired instances' interrupted commits were not redone:\n{stderr}"
    );

    let mut seen = vec![0u32; n];
    for m in read_all(&output, "read_committed") {
        let v: serde_json::Value = serde_json::from_str(&m).expect("json output");
        let id = v["id"].as_u64().expect("id") as usize;
        seen[id] += 1;
    }
    let lost = seen.iter().filter(|&&c| c == 0).count();
    let repeated = seen.iter().filter(|&&c| c > 1).count();
    assert_eq!(
        (lost, repeated),
        (0, 0),
        "read_committed output: {lost} records lost, {repeated} repeated"
    );
}

#[test]
fn raw_format_keeps_key_value_and_coordinates_with_the_kafka_timestamp_as_event_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = unique("raw-in");
    create_topic(&input, 1);
    produce(
        &input,
        &[
            (0, "k1".into(), b"plain text, not JSON".to_vec()),
            (0, "k2".into(), br#"{"a":1}"#.to_vec()),
        ],
    );
    let b = bootstrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "name: raw\nparallelism: 1\nsources:\n  r: {{ type: kafka, topic: {input}, brokers: '{b}', format: raw, until: end }}\n\
steps: []\nsinks:\n  out: {{ type: file, path: out.jsonl }}\noutput: out\ncheckpoint: {{ enabled: false }}\n"
        ),
    )
    .expect("pipeline");
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0]["key"], "k1");
    assert_eq!(rows[0]["value"], "plain text, not JSON");
    assert_eq!(rows[1]["value"], r#"{"a":1}"#);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["topic"], input.as_str());
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], i as i64);
        // The producer's timestamp: a recent wall-clock time in ms.
        let ts = r["timestamp"].as_i64().expect("timestamp");
        assert!(ts > 1_700_000_000_000, "{r}");
    }
}

#[test]
fn windows_fire_while_running_with_fewer_partitions_than_tasks_and_an_idle_partition() {
    // Two partitions, three tasks: one task has no partition. Partition 1 holds one early
    // record and then goes quiet; with `idle_timeout` it stops holding the watermark back, and
    // the task without a partition never did. So windows fire while the (unbounded) source
    // keeps running, not only at the end.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = unique("idle-in");
    create_topic(&input, 2);
    let start = 1_767_225_600_000i64;
    let mut messages = vec![(
        1,
        "early".to_string(),
        format!(r#"{{"ts":{start},"user":"early"}}"#).into_bytes(),
    )];
    for i in 0..6_000i64 {
        let t = start + i * 10; // 60 s of event time
        let user = format!("u{}", i % 7);
        messages.push((
            0,
            user.clone(),
            format!(r#"{{"ts":{t},"user":"{user}"}}"#).into_bytes(),
        ));
    }
    produce(&input, &messages);
    let b = bootstrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "name: idle\nparallelism: 3\n\
sources:\n  events:\n    type: kafka\n    topic: {input}\n    brokers: {b}\n    event_time: {{ field: ts, max_out_of_orderness: 1s, idle_timeout: 500ms }}\n\
steps:\n  - key_by: user\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count() }} }}\n\
sinks:\n  out: {{ type: file, path: out/windows.jsonl }}\noutput: out\n\
checkpoint: {{ interval: 200ms }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("pipeline");
    let mut child = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let committed = || -> Vec<serde_json::Value> {
        let Ok(rd) = std::fs::read_dir(dir.path().join("out")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.starts_with("windows-") && n.ends_with(".jsonl")
            })
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut rows = Vec::new();
    // Windows [0, 10 s) .. [40 s, 50 s) close once the watermark (60 s - 1 s) passes them:
    // 5 windows x 7 users.
    while Instant::now() < deadline {
        rows = committed();
        if rows.len() >= 35 {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the unbounded source ended the run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    assert!(
        rows.len() >= 35 && running,
        "{} window results committed while running (expected 35): {}",
        rows.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every committed window holds exactly its records.
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    expected.insert(("early".into(), start), 1);
    for i in 0..6_000i64 {
        let t = start + i * 10;
        *expected
            .entry((format!("u{}", i % 7), t - t.rem_euclid(10_000)))
            .or_default() += 1;
    }
    for r in &rows {
        let key = (
            r["user"].as_str().unwrap_or_default().to_string(),
            r["window_start"].as_i64().unwrap_or_default(),
        );
        assert_eq!(r["n"].as_u64(), expected.get(&key).copied(), "{r}");
    }
}

/// A file input of `per_file` x 4 records (`ts`, `user`, `v`) written by the checkpoint tests'
/// generator's rules: time advances 10 ms per record per file with up to 2 s of disorder.
fn write_file_input(dir: &Path, per_file: usize, seed: u64) -> Vec<(String, i64, i64)> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    std::fs::create_dir_all(dir.join("input")).expect("mkdir");
    let mut all = Vec::new();
    for f in 0..4 {
        let mut text = String::new();
        for i in 0..per_file {
            let t = 1_767_225_600_000 + (i as i64) * 10 + (next() % 2000) as i64;
            let user = format!("u{}", next() % 300);
            let v = (next() % 100) as i64;
            text.push_str(&format!("{{\"ts\":{t},\"user\":\"{user}\",\"v\":{v}}}\n"));
            all.push((user, t, v));
        }
        std::fs::write(dir.join(format!("input/part-{f}.jsonl")), text).expect("write input");
    }
    all
}

/// Runs `pipeline.yaml` in `dir` until it aborts at `point`, then to the end, both with the
/// second source task's barriers 40 ms late (`HEADWATER_TEST_BARRIER_LAG`).
fn crash_then_resume_lagging(dir: &Path, parallelism: usize, point: &str) {
    common::crash_then_resume(
        dir,
        Path::new("pipeline.yaml"),
        parallelism,
        point,
        &common::barrier_lag(40),
    );
}

#[test]
fn unaligned_keyed_windows_into_kafka_resume_exactly_once() {
    // Files -> key_by -> tumbling windows -> Kafka (exactly once), unaligned checkpoints with
    // one source task's barriers late, so window tasks capture records in flight; crashed right
    // after a checkpoint's manifest, then resumed.
    for parallelism in [2, 3] {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = write_file_input(dir.path(), 250_000, 0x4b_0001 + parallelism as u64);
        let output = unique("uwin-out");
        let b = bootstrap();
        std::fs::write(
            dir.path().join("pipeline.yaml"),
            format!(
                "name: uwin\nsources:\n  events: {{ type: file, path: input/*.jsonl, event_time: {{ field: ts, max_out_of_orderness: 5s }} }}\n\
steps:\n  - key_by: user\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count(), total: sum(v) }} }}\n\
sinks:\n  out: {{ type: kafka, topic: {output}, brokers: {b}, key: user }}\noutput: out\n\
checkpoint: {{ interval: 200ms, mode: unaligned, retain: 1000 }}\ntuning: {{ progress_interval: 0s }}\n"
            ),
        )
        .expect("pipeline");
        crash_then_resume_lagging(dir.path(), parallelism, "manifest-written:4");
        let mut acc: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        for (user, t, v) in &input {
            let e = acc
                .entry((user.clone(), t - t.rem_euclid(10_000)))
                .or_default();
            e.0 += 1;
            e.1 += v;
        }
        let expected: Rows = acc
            .into_iter()
            .map(|((u, s), (n, total))| (u, s, n, total))
            .collect();
        assert_eq!(
            rows_of(&read_all(&output, "read_committed")),
            expected,
            "parallelism {parallelism}: committed aggregates differ from the oracle"
        );
    }
}

#[test]
fn unaligned_kafka_sinks_resume_exactly_once_when_their_senders_barriers_arrive_apart() {
    // A selective pass-through into Kafka: the sink instances are fast and wait for their
    // senders, one of which passes its barriers late; crashed after a checkpoint, resumed.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file_input(dir.path(), 250_000, 0x4b_0010);
    let output = unique("usel-out");
    let b = bootstrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "name: usel\nsources:\n  events: {{ type: file, path: input/*.jsonl, event_time: {{ field: ts, max_out_of_orderness: 5s }} }}\n\
steps:\n  - filter: \"v < 5\"\n\
sinks:\n  out: {{ type: kafka, topic: {output}, brokers: {b}, key: user }}\noutput: out\n\
checkpoint: {{ interval: 50ms, mode: unaligned, retain: 1000 }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("pipeline");
    crash_then_resume_lagging(dir.path(), 2, "manifest-written:3");
    let mut want: Vec<(String, i64, i64)> = input.into_iter().filter(|r| r.2 < 5).collect();
    want.sort();
    let mut got: Vec<(String, i64, i64)> = read_all(&output, "read_committed")
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).expect("json");
            (
                v["user"].as_str().expect("user").to_string(),
                v["ts"].as_i64().expect("ts"),
                v["v"].as_i64().expect("v"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "committed records vs the selected input"
    );
    assert!(
        got == want,
        "committed records differ from the selected input"
    );
}

/// Creates `topic` (one partition) with the topic setting `key` = `value`.
fn create_topic_with(topic: &str, key: &str, value: &str) {
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1)).set(key, value);
    let created = futures::executor::block_on(admin().create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("create topic");
    for r in created {
        r.expect("topic created");
    }
}

/// Runs `lines` from a file into the Kafka topic `output` (keyed by `user`, parallelism 2,
/// checkpoints every 200 ms) as pipeline `name` in `dir`, which must succeed. Returns the `v`
/// of every committed message, sorted, and the dead letters by offset.
fn file_into_topic(
    dir: &Path,
    name: &str,
    output: &str,
    lines: &[String],
) -> (Vec<i64>, Vec<serde_json::Value>) {
    std::fs::write(dir.join("in.jsonl"), lines.join("\n") + "\n").expect("input");
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            "name: {name}\nparallelism: 2\nsources:\n  in: {{ type: file, path: in.jsonl, event_time: {{ field: ts }} }}\n\
sinks:\n  out: {{ type: kafka, topic: {output}, brokers: '{}', key: user }}\noutput: out\n\
checkpoint: {{ interval: 200ms }}\ntuning: {{ progress_interval: 0s }}\n",
            bootstrap()
        ),
    )
    .expect("pipeline");
    common::run_ok(headwater(dir).args(["run", "pipeline.yaml", "-q", "--fresh"]));
    let mut seen: Vec<i64> = read_all(output, "read_committed")
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).expect("json");
            v["v"].as_i64().expect("v")
        })
        .collect();
    seen.sort_unstable();
    let dlq = std::fs::read_to_string(dir.join(format!(".headwater/{name}/dlq.jsonl")))
        .unwrap_or_default();
    let mut letters: Vec<serde_json::Value> = dlq
        .lines()
        .map(|l| serde_json::from_str(l).expect("envelope"))
        .collect();
    letters.sort_by_key(|l| l["offset"].as_u64());
    (seen, letters)
}

#[test]
fn a_record_too_large_for_the_topic_is_dead_lettered_and_the_run_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = unique("oversized-out");
    // The topic takes messages of at most 200 kB: less than the producer's 1 MB default.
    create_topic_with(&output, "max.message.bytes", "200000");
    // Padding that compression cannot shrink: the broker sees (almost) its full size.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect()
    };
    let mut line = |i: usize, pad: usize| {
        format!(
            r#"{{"ts":{},"user":"u{}","v":{i},"pad":"{}"}}"#,
            1_767_225_600_000i64 + i as i64 * 10,
            i % 7,
            noise(pad)
        )
    };
    let (big, fits) = (500, 1500);
    let lines: Vec<String> = (0..2000)
        .map(|i| match i {
            _ if i == big => line(i, 300_000),
            _ if i == fits => line(i, 150_000),
            _ => line(i, 3),
        })
        .collect();
    let (seen, letters) = file_into_topic(dir.path(), "oversized", &output, &lines);
    // Every other record is in the topic once, the 150 kB one included.
    let expected: Vec<i64> = (0..2000).filter(|&i| i != big as i64).collect();
    assert_eq!(seen, expected);
    // The large one is a dead letter: its size, the limit, and its first 64 KiB.
    assert_eq!(letters.len(), 1, "{:.500}", format!("{letters:?}"));
    let letter = &letters[0];
    let json = &lines[big];
    let size = json.len() + format!("u{}", big % 7).len();
    let error = letter["error"].as_str().expect("error");
    assert!(
        error.contains(&format!("the message of {size} bytes"))
            && error.contains(&format!(
                "the max.message.bytes of topic `{output}` (200000)"
            )),
        "{error}"
    );
    assert_eq!(letter["step"], "sink out");
    assert_eq!(letter["source"], "in");
    assert_eq!(letter["offset"], big as u64 + 1, "the line of the record");
    assert_eq!(letter["raw_size"], json.len() as u64);
    assert_eq!(letter["raw"].as_str(), Some(&json[..64 << 10]));
}

#[test]
fn records_without_a_key_for_a_compacted_topic_are_dead_lettered_and_the_run_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = unique("compacted-out");
    // A compacted topic refuses a message without a key, which would doom the transaction.
    create_topic_with(&output, "cleanup.policy", "compact");
    let (no_key, null_key) = (1500, 2500);
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            let ts = 1_767_225_600_000i64 + i as i64 * 10;
            match i {
                _ if i == no_key => format!(r#"{{"ts":{ts},"v":{i}}}"#),
                _ if i == null_key => format!(r#"{{"ts":{ts},"user":null,"v":{i}}}"#),
                _ => format!(r#"{{"ts":{ts},"user":"u{i}","v":{i}}}"#),
            }
        })
        .collect();
    let (seen, letters) = file_into_topic(dir.path(), "compacted", &output, &lines);
    let expected: Vec<i64> = (0..3000)
        .filter(|&i| i != no_key as i64 && i != null_key as i64)
        .collect();
    assert_eq!(seen, expected, "every keyed record once");
    assert_eq!(letters.len(), 2, "{:.500}", format!("{letters:?}"));
    for (letter, i) in letters.iter().zip([no_key, null_key]) {
        assert_eq!(letter["offset"], i as u64 + 1, "the line of the record");
        assert_eq!(letter["step"], "sink out");
        assert_eq!(letter["raw"].as_str(), Some(lines[i].as_str()));
        let error = letter["error"].as_str().expect("error");
        assert!(
            error.contains(&format!(
                "topic `{output}` is compacted (cleanup.policy=compact)"
            )) && error.contains("`user` is missing or null"),
            "{error}"
        );
    }
}
