//! Python UDFs end to end: the real `headwater` binary starts real `python -m
//! headwater.worker` processes (the SDK installed by `./dev test` in its virtual environment,
//! named by HEADWATER_PYTHON), and nothing is lost when a worker misbehaves.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::python_case::*;
use common::udf::*;
use common::{
    follow_progress, kill_after, kill_children_matching, next_progress, python, rss_kb,
    wait_for_running,
};

#[test]
fn map_filter_flat_map_and_failures_go_where_they_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        1000,
        "  - udf: enrich\n  - udf: even\n  - udf: twice\n",
        "",
    );
    let stderr = run_for_stderr(dir.path(), &["run", "pipeline.yaml"]);
    // The summary names the failing step and shows the first failure's Python traceback.
    assert!(
        stderr.contains("steps[0] udf enrich\n                  first: ValueError: bad record 13"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Traceback (most recent call last)") && stderr.contains("in enrich"),
        "{stderr}"
    );
    let failing: Vec<i64> = (0..1000).filter(|n| n % 97 == 13).collect();
    let expected: BTreeMap<i64, usize> = (0..1000)
        .filter(|n| n % 2 == 0 && !failing.contains(n))
        .map(|n| (n, 2))
        .collect();
    assert_eq!(output_ns(dir.path()), expected);
    let dead = dlq(dir.path());
    assert_eq!(
        dead.len(),
        failing.len(),
        "exactly the failing records are dead-lettered"
    );
    for d in &dead {
        assert_eq!(d["step"], "steps[0] udf enrich");
        assert_eq!(d["error_class"], "permanent");
        assert!(
            d["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("ValueError: bad record"),
            "{d}"
        );
        let tb = d["detail"].as_str().unwrap_or("");
        assert!(
            tb.contains("Traceback") && tb.contains("my_udfs.py"),
            "traceback kept: {tb}"
        );
    }
}

/// A UDF step keeps calls to its worker in flight while the host reads and takes apart the
/// next batches; the watermark waits for the calls in flight, so a window after the UDF gets
/// every record on time: nothing late, every window's count whole.
#[test]
fn windows_after_a_pipelined_udf_get_every_record_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 6000;
    write_case(
        dir.path(),
        records,
        "  - udf: tag\n  - key_by: k\n  - window: { type: tumbling, size: 100ms, aggregates: { count: count() } }\n",
        "  tag: { runtime: python, module: my_udfs, function: tag }\n",
    );
    let stderr = run_for_stderr(dir.path(), &["run", "pipeline.yaml", "--fresh"]);
    assert!(
        stderr
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["late", "0"]),
        "no record late: {stderr}"
    );
    let text = headwater::connectors::files::read_committed(&dir.path().join("out.jsonl"))
        .expect("output");
    let mut windows = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let key = (
            v["window_start"].as_i64().unwrap_or(-1),
            v["k"].as_str().unwrap_or("").to_string(),
        );
        assert!(
            windows
                .insert(key, v["count"].as_u64().unwrap_or(0))
                .is_none(),
            "{v}"
        );
    }
    let mut expected = BTreeMap::new();
    for n in 0..records as i64 {
        *expected
            .entry((n / 100 * 100, format!("k{}", n % 3)))
            .or_insert(0u64) += 1;
    }
    assert_eq!(windows, expected, "one whole window per key and 100 ms");
}

#[test]
fn transient_failures_are_retried_as_the_pipeline_and_each_udf_say() {
    // The pipeline allows 2 attempts; `fives` raises its own to 3. A record that keeps
    // failing transiently is called that many times, then dead-lettered with the count.
    let dir = tempfile::tempdir().expect("tempdir");
    let calls = dir.path().join("calls.txt");
    write_case(
        dir.path(),
        100,
        "  - udf: tens\n  - udf: fives\n",
        "  tens: { runtime: python, module: my_udfs, function: down_on_fives }\n  \
fives: { runtime: python, module: my_udfs, function: down_on_fives, retry: { max_attempts: 3 } }\n\
retry: { max_attempts: 2, initial_backoff: 1ms, max_backoff: 5ms }\n",
    );
    common::run_ok(headwater(dir.path()).env("CALLS_FILE", &calls).args([
        "run",
        "pipeline.yaml",
        "-q",
        "--fresh",
    ]));
    let expected: BTreeMap<i64, usize> = (0..100).filter(|n| n % 5 != 0).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
    let mut attempts: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for d in dlq(dir.path()) {
        assert_eq!(d["error_class"], "transient", "{d}");
        assert_eq!(d["tier"], "retry", "the retries gave up: {d}");
        let (first, last) = (d["first_failed_at"].as_str(), d["failed_at"].as_str());
        assert!(
            first.is_some() && first <= last,
            "the first failure comes before the last: {d}"
        );
        let step = d["step"].as_str().expect("step").to_string();
        attempts.insert(
            (step, dead_n(&d)),
            d["attempts"].as_i64().expect("attempts"),
        );
    }
    let want: BTreeMap<(String, i64), i64> = (0..100)
        .filter(|n| n % 5 == 0)
        .map(|n| {
            if n % 10 == 0 {
                (("steps[0] udf tens".to_string(), n), 2)
            } else {
                (("steps[1] udf fives".to_string(), n), 3)
            }
        })
        .collect();
    assert_eq!(attempts, want, "dead letters and their attempts");
    // Each failing record was really called that many times (the first step's retried
    // records never reach the second).
    let mut called: BTreeMap<i64, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&calls).expect("calls").lines() {
        *called.entry(line.parse().expect("n")).or_default() += 1;
    }
    for n in [0, 10, 90] {
        assert_eq!(called.get(&n), Some(&2), "calls of {n}: {called:?}");
    }
    for n in [5, 15, 95] {
        // once by `tens`, three times by `fives`
        assert_eq!(called.get(&n), Some(&4), "calls of {n}: {called:?}");
    }
    assert_eq!(
        called.get(&1),
        Some(&2),
        "one call per step for a record that never fails"
    );
}

/// Fast retries and a short breaker pause, for the outage tests.
const OUTAGE_RETRY: &str =
    "retry: { max_attempts: 2, initial_backoff: 1ms, max_backoff: 1ms, breaker: { cool_down: 100ms } }\n";

/// Starts `pipeline.yaml` in `dir` while `marker` (the "service is down" file the UDFs read
/// through DOWN_MARKER) exists, and waits until the circuit breaker opened; returns the run,
/// its stderr lines (the summary comes at the end), and the lines before the opening.
fn start_in_an_outage(
    dir: &Path,
    marker: &Path,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
) {
    let mut child = headwater(dir)
        .env("DOWN_MARKER", marker)
        .args(["run", "pipeline.yaml", "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let lines = common::control::stderr_lines(&mut child);
    let ((), before) = common::wait_for_line(
        &lines,
        "the breaker opening",
        Duration::from_secs(60),
        |l| l.contains("circuit breaker open").then_some(()),
    );
    (child, lines, before)
}

#[test]
fn an_outage_of_the_service_a_udf_calls_pauses_the_stream_instead_of_filling_the_dlq() {
    // Every call fails transiently while the marker file exists: the circuit breaker opens
    // and holds the records; once the marker goes, they all come through, none dead-lettered.
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("service-down");
    std::fs::write(&marker, "").expect("marker");
    write_case(
        dir.path(),
        300,
        "  - udf: svc\n",
        &format!(
            "{}{OUTAGE_RETRY}",
            "  svc: { runtime: python, module: my_udfs, function: call_service }\n"
        ),
    );
    let (mut child, lines, before) = start_in_an_outage(dir.path(), &marker);
    // Held, not dead-lettered, through a few pauses.
    std::thread::sleep(Duration::from_millis(500));
    assert!(dlq(dir.path()).is_empty(), "{before:?}");
    std::fs::remove_file(&marker).expect("service back");
    let (_, _) = common::wait_for_line(
        &lines,
        "the breaker closing",
        Duration::from_secs(60),
        |l| {
            l.contains("recovered: circuit breaker closed")
                .then_some(())
        },
    );
    let status = child.wait().expect("wait");
    assert!(status.success());
    // The summary names the outage.
    common::wait_for_line(
        &lines,
        "the summary's outage line",
        Duration::from_secs(30),
        |l| {
            l.contains("outages       udf `svc`: its circuit breaker opened 1 time(s)")
                .then_some(())
        },
    );
    let expected: BTreeMap<i64, usize> = (0..300).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected, "every record, once");
    assert!(dlq(dir.path()).is_empty(), "nothing dead-lettered");
}

#[test]
fn an_outage_under_a_window_aggregate_holds_its_records_and_the_counts_come_out_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("service-down");
    std::fs::write(&marker, "").expect("marker");
    write_case(
        dir.path(),
        0,
        "  - key_by: k\n  - window: { type: tumbling, size: 1s, aggregates: { n: count(), m: \"udf(counted)\" } }\n",
        &format!(
            "{}{OUTAGE_RETRY}",
            "  counted: { runtime: python, module: my_udfs, function: count_via_service, kind: window_aggregate }\n"
        ),
    );
    let input: String = (0..300)
        .map(|n| format!("{{\"ts\":{},\"n\":{n},\"k\":\"k{}\"}}\n", n * 10, n % 3))
        .collect();
    std::fs::write(dir.path().join("input.jsonl"), input).expect("input");
    let (mut child, _lines, _) = start_in_an_outage(dir.path(), &marker);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&marker).expect("service back");
    assert!(child.wait().expect("wait").success());
    let text = headwater::connectors::files::read_committed(&dir.path().join("out.jsonl"))
        .expect("output");
    let mut windows = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(
            v["m"], v["n"],
            "the UDF counted every record of its window: {v}"
        );
        windows += 1;
    }
    assert_eq!(windows, 3 * 3, "3 windows of 1s for each of 3 keys");
    assert!(dlq(dir.path()).is_empty(), "nothing dead-lettered");
}

#[test]
fn killing_a_worker_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 60_000;
    write_case(dir.path(), records, "  - udf: slow\n", "");
    let mut child = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // Once results flow (the workers are up and serving), kill -9 every worker of this run a
    // few times while it processes.
    let started = std::time::Instant::now();
    // Output is first written to a pending part file (committed at the next checkpoint).
    let output_started = || {
        std::fs::read_dir(dir.path())
            .map(|rd| {
                rd.filter_map(Result::ok).any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(".out-") && e.metadata().map(|m| m.len()).unwrap_or(0) > 0
                })
            })
            .unwrap_or(false)
    };
    wait_for_running(
        &mut child,
        "output from the workers",
        Duration::from_secs(60),
        output_started,
    );
    let mut kills = 0;
    while kills < 3 && started.elapsed() < Duration::from_secs(60) {
        kills += kill_children_matching(child.id(), "headwater.worker");
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        kills >= 1,
        "the test killed no worker; the run finished too fast"
    );
    assert!(stderr.contains("restarting Python worker"), "{stderr}");
    let expected: BTreeMap<i64, usize> = (0..records as i64).map(|n| (n, 1)).collect();
    assert_eq!(
        output_ns(dir.path()),
        expected,
        "every record exactly once after {kills} kill(s)"
    );
}

#[test]
fn a_worker_that_never_answers_times_out_and_is_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        500,
        "  - udf: hang\n",
        "  hang: { runtime: python, module: my_udfs, function: hang_once, timeout: 1s }\n",
    );
    let out = headwater(dir.path())
        .env("HANG_MARKER", dir.path().join("hung"))
        .args(["run", "pipeline.yaml", "-q"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(dir.path().join("hung").exists(), "the worker did hang once");
    assert!(stderr.contains("no answer within"), "{stderr}");
    let expected: BTreeMap<i64, usize> = (0..500).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
}

#[test]
fn an_import_error_fails_the_pipeline_start_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(dir.path(), 10, "  - udf: enrich\n", "");
    std::fs::write(
        dir.path().join("my_udfs.py"),
        "import headwater\nimport numpy_that_is_not_installed\n",
    )
    .expect("write");
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the Python worker did not start"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ModuleNotFoundError: No module named 'numpy_that_is_not_installed'"),
        "{stderr}"
    );
}

#[test]
fn a_kind_mismatch_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        10,
        "  - udf: wrong\n",
        "  wrong: { runtime: python, module: my_udfs, function: enrich, kind: flat_map }\n",
    );
    let out = headwater(dir.path())
        .args(["validate", "pipeline.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "function `enrich` is a Map function but the pipeline declares it as FlatMap"
        ),
        "{stderr}"
    );
}

#[test]
fn keyed_process_state_and_timers_match_an_oracle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 3000u64;
    write_case(
        dir.path(),
        records,
        "  - map: { compute: { user: \"n % 7\" } }\n  - key_by: user\n  - udf: buckets\n",
        "  buckets: { runtime: python, module: my_udfs, function: bucket_totals, kind: keyed_process, workers: 2 }\n",
    );
    run_ok(dir.path());
    let expected = bucket_oracle(records);
    let got = committed_buckets(dir.path());
    assert_eq!(got, expected);
}

#[test]
fn keyed_python_state_is_exactly_once_across_host_sigkills() {
    // The keyed-process function keeps per-key state and timers in the host (RocksDB); the
    // host is killed with SIGKILL mid-run several times (its workers die with it) and
    // restarted from its checkpoints: every bucket must come out once, with the oracle's sums.
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 60_000u64;
    write_case(
        dir.path(),
        records,
        "  - map: { compute: { user: \"n % 7\" } }\n  - key_by: user\n  - udf: buckets\n",
        "  buckets: { runtime: python, module: my_udfs, function: bucket_totals, kind: keyed_process, workers: 2 }\n",
    );
    let pipeline = dir.path().join("pipeline.yaml");
    let mut text = std::fs::read_to_string(&pipeline).expect("read");
    text.push_str("checkpoint: { interval: 100ms }\n");
    std::fs::write(&pipeline, text).expect("write");
    let mut killed = 0;
    for attempt in 0..12u64 {
        let mut child = headwater(dir.path())
            .args(["run", "pipeline.yaml", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run");
        if !kill_after(
            &mut child,
            Duration::from_millis(500 + (attempt * 397) % 900),
        ) {
            break; // the input is done
        }
        killed += 1;
    }
    common::run_ok(headwater(dir.path()).args(["run", "pipeline.yaml", "-q"]));
    // Workers of killed hosts exit on their own (they watch the host's pid), even those
    // started just before the kill.
    assert_gone(&[format!("headwater.worker.*{}", dir.path().display())]);
    eprintln!("host killed {killed} times");
    assert!(
        killed >= 3,
        "only {killed} kills landed before the input ran out"
    );
    let expected = bucket_oracle(records);
    let got = committed_buckets(dir.path());
    assert_eq!(got.len(), expected.len(), "buckets: none lost");
    assert_eq!(got, expected);
}

#[test]
fn a_slow_udf_applies_backpressure_with_bounded_memory() {
    // An unbounded generator feeding a UDF that takes 2 ms per record: the sources must slow
    // down to the UDF's pace instead of queueing records in memory.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("my_udfs.py"), UDFS).expect("udfs");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "name: bp\nparallelism: 1\nsources:\n  g: { type: nexmark, rate: 1000000, only: bid }\n\
udfs:\n  sleepy: { runtime: python, module: my_udfs, function: sleepy }\n\
steps:\n  - udf: sleepy\nsinks:\n  x: { type: blackhole }\noutput: x\ntuning: { progress_interval: 200ms }\n",
    )
    .expect("pipeline");
    let mut child = headwater(dir.path())
        .args(["run", "pipeline.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let host_pid = child.id();
    let (progress, _stderr) = follow_progress(&mut child, "bp");
    // Ready: the worker serves (some records came out), so the channels in front of it are
    // full.
    while next_progress(&progress)
        .expect("the unbounded run ended by itself")
        .1
        < 200
    {}
    let early = rss_kb(host_pid);
    // Measured over 5 s.
    std::thread::sleep(Duration::from_secs(5));
    let late = rss_kb(host_pid);
    let still_running = child.try_wait().expect("wait").is_none();
    // Kill the host outright: its workers must notice and exit by themselves.
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_running, "the unbounded run ended by itself");
    assert!(
        early > 0 && late > 0,
        "could not read the host's memory use"
    );
    // At 1M records/s offered and ~500/s served, an unbounded queue would grow by hundreds of
    // MB in 5 s; bounded channels keep growth to a few batches.
    assert!(
        late < early + 64 * 1024,
        "memory grew from {early} kB to {late} kB under backpressure"
    );
    assert_gone(&[format!("headwater-{host_pid}-")]);
}

#[test]
fn an_endpoint_worker_started_by_someone_else_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(dir.path(), 300, "  - udf: remote\n", "");
    let socket = dir.path().join("remote.sock");
    let mut worker = Command::new(python())
        .args(["-m", "headwater.worker", "--module", "my_udfs", "--socket"])
        .arg(&socket)
        .arg("--path")
        .arg(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker");
    let pipeline = std::fs::read_to_string(dir.path().join("pipeline.yaml")).expect("read");
    let pipeline = pipeline.replace(
        "udfs:\n",
        &format!("udfs:\n  remote: {{ runtime: python, module: my_udfs, function: enrich, endpoint: 'unix:{}' }}\n", socket.display()),
    );
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline).expect("write");
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .output()
        .expect("run");
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(out.status.success(), "{}", common::stderr_of(&out));
    let expected: BTreeMap<i64, usize> =
        (0..300).filter(|n| n % 97 != 13).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
}

#[test]
fn the_in_process_runtime_gives_the_same_results_and_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        1000,
        "  - udf: enrich_inproc\n  - udf: even_inproc\n",
        "  enrich_inproc: { runtime: python-inproc, module: my_udfs, function: enrich }\n  even_inproc: { runtime: python-inproc, module: my_udfs, function: even, kind: filter }\n",
    );
    run_ok(dir.path());
    let expected: BTreeMap<i64, usize> = (0..1000)
        .filter(|n| n % 2 == 0 && n % 97 != 13)
        .map(|n| (n, 1))
        .collect();
    assert_eq!(output_ns(dir.path()), expected);
    assert!(
        output_lines(dir.path())
            .iter()
            .all(|v| v.get("square").is_some()),
        "the map ran"
    );
    let dead = dlq(dir.path());
    assert_eq!(dead.len(), (0..1000).filter(|n| n % 97 == 13).count());
    for d in &dead {
        assert_eq!(d["step"], "steps[0] udf enrich_inproc");
        assert_eq!(
            d["udf_version"],
            python_code_version().replace("python:", "python-inproc:"),
            "{d}"
        );
        assert!(
            d["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("ValueError: bad record"),
            "{d}"
        );
        assert!(
            d["detail"].as_str().unwrap_or("").contains("Traceback"),
            "{d}"
        );
    }
}

#[test]
fn a_python_window_aggregate_matches_an_oracle_in_tumbling_and_session_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 2000u64;
    write_case(
        dir.path(),
        records,
        SPREAD_STEPS,
        "  spread: { runtime: python, module: my_udfs, function: spread, kind: window_aggregate }\n",
    );
    run_ok(dir.path());
    assert_eq!(committed_spreads(dir.path()), spread_oracle(records));

    // Sessions (gap 300 ms): a@0 and a@400 open two sessions; a@200 bridges them, so the
    // function merges their accumulators; b stays alone.
    use_session_windows(
        dir.path(),
        "{\"ts\":0,\"n\":5,\"k\":\"a\"}\n{\"ts\":400,\"n\":9,\"k\":\"a\"}\n{\"ts\":10,\"n\":7,\"k\":\"b\"}\n{\"ts\":200,\"n\":1,\"k\":\"a\"}\n{\"ts\":5000,\"n\":3,\"k\":\"a\"}\n",
    );
    run_ok(dir.path());
    let sessions = committed_sessions(dir.path());
    assert_eq!(
        sessions,
        vec![
            ("a".into(), 0, 700, 3, 8),
            ("a".into(), 5000, 5300, 1, 0),
            ("b".into(), 10, 310, 1, 0),
        ]
    );
}

#[test]
fn an_interpreter_without_the_sdk_is_named_with_a_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(dir.path(), 10, "  - udf: bare\n", "  bare: { runtime: python, module: my_udfs, function: enrich, python: /usr/bin/python3 }\n");
    if !Path::new("/usr/bin/python3").exists() {
        return; // no second interpreter on this machine to try
    }
    let out = headwater(dir.path())
        .args(["validate", "pipeline.yaml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("No module named 'headwater'"), "{stderr}");
    assert!(stderr.contains("pip install ./sdk-python"), "{stderr}");
}

#[test]
fn a_record_a_window_aggregate_fails_on_goes_alone_to_the_dlq() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        0,
        "  - key_by: k\n  - window: { type: tumbling, size: 1s, aggregates: { count: count(), spread: \"udf(spread)\" } }\n",
        "  spread: { runtime: python, module: my_udfs, function: spread, kind: window_aggregate }\n",
    );
    std::fs::write(
        dir.path().join("input.jsonl"),
        "{\"ts\":1,\"n\":4,\"k\":\"a\"}\n{\"ts\":2,\"n\":100,\"k\":\"a\",\"poison\":true}\n{\"ts\":3,\"n\":9,\"k\":\"a\"}\n",
    )
    .expect("input");
    run_ok(dir.path());
    let text = headwater::connectors::files::read_committed(&dir.path().join("out.jsonl"))
        .expect("output");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one window");
    assert_eq!(
        (v["count"].as_i64(), v["spread"].as_i64()),
        (Some(3), Some(5)),
        "{v}"
    );
    let dead = dlq(dir.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["raw"]
            .as_str()
            .unwrap_or("")
            .contains("\"poison\":true"),
        "{dead:?}"
    );
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("ValueError: poisoned record 100"),
        "{dead:?}"
    );
}

#[test]
fn a_worker_killed_while_starting_is_started_again() {
    // The module takes a while to import, so the worker can be killed before it is ready (an
    // OOM kill, an operator, a chaos test): the host starts it again instead of failing.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("slow_start.py"),
        "import time\nimport headwater as hw\n\ntime.sleep(1.5)\n\n\n@hw.map\ndef same(r):\n    return r\n",
    )
    .expect("module");
    let input: String = (0..100)
        .map(|n| format!("{{\"ts\":{n},\"n\":{n}}}\n"))
        .collect();
    std::fs::write(dir.path().join("input.jsonl"), input).expect("input");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "name: slowstart\nparallelism: 1\nsources:\n  in: { type: file, path: input.jsonl, event_time: { field: ts } }\n\
udfs:\n  same: { runtime: python, module: slow_start, function: same }\n\
steps:\n  - udf: same\nsinks:\n  out: { type: file, path: out.jsonl }\noutput: out\ntuning: { progress_interval: 0s }\n",
    )
    .expect("pipeline");
    let child = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // Kill the starting worker once it exists (it sleeps 1.5 s in its import).
    let started = std::time::Instant::now();
    let mut killed = false;
    while !killed && started.elapsed() < Duration::from_secs(10) {
        killed = kill_children_matching(child.id(), "headwater.worker") > 0;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(killed, "no starting worker to kill");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("killed while starting"), "{stderr}");
    let expected: BTreeMap<i64, usize> = (0..100).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
}

#[test]
fn a_record_that_crashes_its_worker_goes_alone_to_the_dlq_and_the_rest_go_through() {
    // Record 13 kills the worker every time. Before, the run failed after six restarts; now
    // the failing request is halved until the record is alone, which goes to the DLQ.
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        300,
        "  - udf: crash\n",
        "  crash: { runtime: python, module: my_udfs, function: crash_on_13 }\n",
    );
    run_for_stderr(dir.path(), &["run", "pipeline.yaml", "-q"]);
    let expected: BTreeMap<i64, usize> = (0..300).filter(|n| *n != 13).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
    let dead = dlq(dir.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["raw"].as_str().unwrap_or("").contains("\"n\":13"),
        "{}",
        dead[0]
    );
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("failed 6 times on this record alone"),
        "{}",
        dead[0]
    );
}

#[test]
fn records_near_the_message_limit_go_in_smaller_requests() {
    // 100 records of ~900 KB: one request of all of them would exceed gRPC's 64 MiB message
    // limit (before, the run failed: "the worker closed the stream", six restarts).
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        0,
        "  - udf: identity\n",
        "  identity: { runtime: python, module: my_udfs, function: identity }\n",
    );
    let pad = "x".repeat(900_000);
    let mut input = String::new();
    for n in 0..100 {
        input.push_str(&format!("{{\"ts\":{n},\"n\":{n},\"pad\":\"{pad}\"}}\n"));
    }
    std::fs::write(dir.path().join("input.jsonl"), input).expect("input");
    run_ok(dir.path());
    let expected: BTreeMap<i64, usize> = (0..100).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
}

#[test]
fn a_map_returning_none_or_nan_dead_letters_that_record_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        300,
        "  - udf: shapes\n",
        "  shapes: { runtime: python, module: shapes, function: shapes }\n",
    );
    std::fs::write(
        dir.path().join("shapes.py"),
        "import headwater as hw\n\n\n@hw.map\ndef shapes(r):\n    if r[\"n\"] % 10 == 3:\n        r[\"seen\"] = True\n        return None\n    if r[\"n\"] % 10 == 7:\n        return {**r, \"ratio\": float(\"nan\")}\n    return r\n",
    )
    .expect("module");
    run_ok(dir.path());
    let expected: BTreeMap<i64, usize> = (0..300)
        .filter(|n| n % 10 != 3 && n % 10 != 7)
        .map(|n| (n, 1))
        .collect();
    assert_eq!(
        output_ns(dir.path()),
        expected,
        "the other records go through"
    );
    let dlq = std::fs::read_to_string(dir.path().join(".headwater/py/dlq.jsonl")).expect("dlq");
    let mut errors: BTreeMap<i64, String> = BTreeMap::new();
    for line in dlq.lines() {
        let d: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(d["step"], "steps[0] udf shapes", "{d}");
        assert_eq!(d["error_class"], "permanent", "{d}");
        let raw: serde_json::Value =
            serde_json::from_str(d["raw"].as_str().expect("raw")).expect("raw json");
        let n = raw["n"].as_i64().expect("n");
        errors.insert(n, d["error"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        errors.len(),
        60,
        "one dead letter per bad record: {errors:?}"
    );
    for (n, error) in &errors {
        let want = if n % 10 == 3 {
            "map function `shapes` returned None; return a dict (the output record) or use filter/flat_map"
        } else {
            "result field `ratio` is NaN, which JSON cannot hold; use None or a string for it"
        };
        assert_eq!(error, want, "record {n}");
    }
}
