//! Go UDFs end to end: the real `headwater` binary builds the Go worker in `tests/go-worker/`
//! (a main package using this checkout's `sdk-go`) and starts real worker processes; the same
//! cases as the Python runtime's tests (`python_udf.rs`), plus what is Go's own (panics, the
//! compiler's errors, built binaries).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::udf::*;
use common::{follow_progress, next_progress, rss_kb, wait_while_running};

/// The Go main package the tests run.
const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-worker");
const SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk-go");

#[path = "go_udf/start.rs"]
mod start;

/// The `go` command: `$HEADWATER_GO`, else `go` on the PATH (what the host uses too).
fn go() -> &'static Path {
    static GO: OnceLock<PathBuf> = OnceLock::new();
    GO.get_or_init(|| {
        let go = std::env::var_os("HEADWATER_GO").map_or_else(|| PathBuf::from("go"), PathBuf::from);
        let runs = Command::new(&go)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            runs,
            "these tests need Go 1.24 or newer: `{}` does not run. Run them through ./dev test (which installs Go), or put go on PATH, or set HEADWATER_GO",
            go.display()
        );
        go
    })
}

/// The folder where the host keeps the Go workers it builds: one per test process, so a
/// change to `sdk-go` (which the host's cache key does not cover: it is outside the worker's
/// module, reached through a `replace`) is always built. Folders of finished runs are removed.
/// The first call builds the worker (through the host, as every test does), so tests that
/// run at the same time do not all build it at once.
fn cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("go_udf-cache-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!("go_udf-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cache dir");
        let work = tempfile::tempdir().expect("tempdir");
        write_case(work.path(), 1, "  - udf: enrich\n", "");
        let started = Instant::now();
        let out = common::headwater_in(work.path())
            .env("HEADWATER_GO", go())
            .env("HEADWATER_CACHE", &dir)
            .args(["validate", "pipeline.yaml"])
            .output()
            .expect("validate");
        assert!(
            out.status.success(),
            "building and starting the test worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("Go test worker built in {:.1?}", started.elapsed());
        dir
    })
}

fn headwater(dir: &Path) -> Command {
    let mut c = common::headwater_in(dir);
    c.env("HEADWATER_GO", go()).env("HEADWATER_CACHE", cache());
    c
}

fn write_case(dir: &Path, records: u64, steps: &str, extra_udf: &str) {
    let mut input = String::new();
    for n in 0..records {
        input.push_str(&format!("{{\"ts\":{n},\"n\":{n}}}\n"));
    }
    std::fs::write(dir.join("input.jsonl"), input).expect("input");
    let pipeline = format!(
        "name: go\nparallelism: 2\nsources:\n  in: {{ type: file, path: input.jsonl, event_time: {{ field: ts }} }}\n\
udfs:\n  enrich: {{ runtime: go, package: '{PACKAGE}', function: enrich }}\n  even: {{ runtime: go, package: '{PACKAGE}', function: even, kind: filter }}\n  twice: {{ runtime: go, package: '{PACKAGE}', function: twice, kind: flat_map }}\n  slow: {{ runtime: go, package: '{PACKAGE}', function: slow, workers: 2 }}\n{extra_udf}\
steps:\n{steps}sinks:\n  out: {{ type: file, path: out.jsonl }}\noutput: out\ntuning: {{ batch_size: 256, progress_interval: 0s }}\n"
    );
    std::fs::write(dir.join("pipeline.yaml"), pipeline).expect("pipeline");
}

/// A `udfs:` entry for function `function` of the test package, with `extra` options.
fn udf(name: &str, function: &str, extra: &str) -> String {
    format!("  {name}: {{ runtime: go, package: '{PACKAGE}', function: {function}{extra} }}\n")
}

/// Runs `pipeline.yaml` in `dir` quietly from scratch and fails the test with the host's
/// stderr if the run fails.
fn run_ok(dir: &Path) -> String {
    common::run_ok(headwater(dir).args(["run", "pipeline.yaml", "-q", "--fresh"]))
}

/// The dead letters of pipeline `go`.
fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    common::udf::dead_letters(dir, "go")
}

/// The pids of the Go workers the host `host` started (its children serving a socket).
fn worker_pids(host: u32) -> Vec<String> {
    common::children_matching(host, "worker --socket")
}

/// The pattern of the Go workers of host `host` by their socket's name (`headwater-PID-...`),
/// which they keep after the host is gone.
fn workers_of(host: u32) -> String {
    format!("socket .*headwater-{host}-")
}

/// Waits up to 10 s for every worker of the (killed) hosts `hosts` to exit by itself.
fn assert_workers_exit(hosts: &[u32]) {
    assert_gone(&hosts.iter().map(|&h| workers_of(h)).collect::<Vec<_>>());
}

#[test]
fn map_filter_flat_map_and_failures_go_where_they_should() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        1000,
        "  - udf: enrich\n  - udf: even\n  - udf: twice\n",
        "",
    );
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The summary names the failing step and shows the first failure's message and detail.
    assert!(
        stderr.contains("steps[0] udf enrich\n                  first: bad record 13"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error chain: *errors.errorString"),
        "{stderr}"
    );
    let failing: Vec<i64> = (0..1000).filter(|n| n % 97 == 13).collect();
    let expected: BTreeMap<i64, usize> = (0..1000)
        .filter(|n| n % 2 == 0 && !failing.contains(n))
        .map(|n| (n, 2))
        .collect();
    assert_eq!(output_ns(dir.path()), expected);
    let dead = dead_letters(dir.path());
    let mut dead_ns: Vec<i64> = dead
        .iter()
        .map(|d| {
            let raw: serde_json::Value =
                serde_json::from_str(d["raw"].as_str().expect("raw")).expect("raw json");
            raw["n"].as_i64().expect("n")
        })
        .collect();
    dead_ns.sort_unstable();
    assert_eq!(
        dead_ns, failing,
        "exactly the failing records are dead-lettered"
    );
    // The code version the worker reported: a digest of its executable, one for the run.
    let version = dead[0]["udf_version"].as_str().unwrap_or("");
    let digest = version.strip_prefix("go:sha256:").unwrap_or("");
    assert!(
        digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "udf_version {version:?}"
    );
    for d in &dead {
        assert_eq!(d["udf_version"], version);
        assert_eq!(d["step"], "steps[0] udf enrich");
        assert_eq!(d["error_class"], "permanent");
        let error = d["error"].as_str().unwrap_or("");
        assert!(error.starts_with("bad record "), "{d}");
        let detail = d["detail"].as_str().unwrap_or("");
        assert_eq!(
            detail,
            format!("{error}\n\nerror chain: *errors.errorString"),
            "the detail holds the error and its chain of types: {d}"
        );
    }
}

#[test]
fn a_panic_goes_to_the_dlq_with_its_stack_and_the_rest_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        2000,
        "  - udf: explode\n",
        &udf("explode", "explode", ""),
    );
    let stderr = run_ok(dir.path());
    let panicking: Vec<i64> = (0..2000).filter(|n| n % 89 == 7).collect();
    let expected: BTreeMap<i64, usize> = (0..2000)
        .filter(|n| !panicking.contains(n))
        .map(|n| (n, 1))
        .collect();
    assert_eq!(output_ns(dir.path()), expected);
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), panicking.len(), "{dead:?}");
    for d in &dead {
        assert_eq!(d["step"], "steps[0] udf explode");
        assert_eq!(d["error_class"], "permanent");
        assert_eq!(
            d["error"], "panic: runtime error: index out of range [7] with length 7",
            "{d}"
        );
        // The goroutine's stack, from the panic through the user's function and its line.
        let stack = d["detail"].as_str().unwrap_or("");
        assert!(stack.contains("goroutine "), "stack kept: {stack}");
        assert!(stack.contains("main.explode("), "stack kept: {stack}");
        assert!(stack.contains("go-worker/main.go:"), "stack kept: {stack}");
    }
    // A panic fails its record, not the worker.
    assert!(!stderr.contains("restarting Go worker"), "{stderr}");
}

#[test]
fn killing_a_worker_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `slow` sleeps 200 µs a record, which Go's timers make about 1 ms: with two requests at
    // a time, a run of ~10 s.
    let records = 20_000;
    write_case(dir.path(), records, "  - udf: slow\n", "");
    let pipeline = dir.path().join("pipeline.yaml");
    let text = std::fs::read_to_string(&pipeline).expect("read");
    let text = text.replace("progress_interval: 0s", "progress_interval: 100ms");
    std::fs::write(&pipeline, text).expect("write");
    cache(); // built before the run starts
    let mut child = headwater(dir.path())
        .args(["run", "pipeline.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let (progress, stderr) = follow_progress(&mut child, "go");
    // Kill -9 every worker of this run three times, each once results flow from the workers
    // (re)started since the last kill: 1,000 more records out (more than the requests in
    // flight hold) and workers up.
    let (mut out_at_kill, mut kills, mut rounds) = (0, 0, 0);
    while rounds < 3 {
        let Some((_, out)) = next_progress(&progress) else {
            break; // the input is done
        };
        if out < out_at_kill + 1000 {
            continue;
        }
        let pids = worker_pids(child.id());
        kills += pids.iter().filter(|pid| common::signal(pid, "-9")).count();
        if !pids.is_empty() {
            out_at_kill = out;
            rounds += 1;
        }
    }
    let status = child.wait().expect("wait");
    let stderr = stderr.join().expect("stderr");
    eprintln!("{kills} workers killed in {rounds} rounds");
    assert!(status.success(), "{stderr}");
    assert!(
        rounds == 3 && kills >= 3,
        "the test killed {kills} worker(s) in {rounds} round(s); the run finished too fast"
    );
    assert!(stderr.contains("restarting Go worker"), "{stderr}");
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
        &udf("hang", "hang_once", ", timeout: 1s"),
    );
    let out = headwater(dir.path())
        .env("HANG_MARKER", dir.path().join("hung"))
        .args(["run", "pipeline.yaml", "-q"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(dir.path().join("hung").exists(), "the worker did hang once");
    assert!(stderr.contains("no answer within 1s"), "{stderr}");
    assert!(stderr.contains("restarting Go worker"), "{stderr}");
    let expected: BTreeMap<i64, usize> = (0..500).map(|n| (n, 1)).collect();
    assert_eq!(output_ns(dir.path()), expected);
}

#[test]
fn a_slow_udf_applies_backpressure_with_bounded_memory() {
    // An unbounded generator (1M records/s offered) feeding a UDF that takes 2 ms per record:
    // the source must slow down to the UDF's pace instead of queueing records in memory. The
    // progress lines count records read and written: while 2,000 records go through the UDF,
    // the source may only be ahead by what the bounded channels hold, and memory stays flat.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!("name: bp\nparallelism: 1\nsources:\n  g: {{ type: nexmark, rate: 1000000, only: bid }}\n\
udfs:\n{}steps:\n  - udf: sleepy\nsinks:\n  x: {{ type: blackhole }}\noutput: x\ntuning: {{ progress_interval: 200ms }}\n",
            udf("sleepy", "sleepy", "")),
    )
    .expect("pipeline");
    cache(); // built before the run starts
    let mut child = headwater(dir.path())
        .args(["run", "pipeline.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let host_pid = child.id();
    let (progress, _stderr) = follow_progress(&mut child, "bp");
    let next = || next_progress(&progress).expect("the unbounded run ended by itself");
    // Ready: the worker serves (some records came out).
    let (_, first_out) = std::iter::repeat_with(next)
        .find(|&(_, out)| out >= 200)
        .expect("progress");
    let early = rss_kb(host_pid);
    // Its worker, found both as its child and by its socket's name (as orphans are below).
    let serving = !worker_pids(host_pid).is_empty()
        && !common::processes_matching(&workers_of(host_pid)).is_empty();
    // Measured while this many more records go through the UDF (~4 s).
    const THROUGH: u64 = 2000;
    let (mut max_ahead, mut lines) = (0, 0);
    loop {
        let (read, written) = next();
        lines += 1;
        max_ahead = max_ahead.max(read.saturating_sub(written));
        if written >= first_out + THROUGH {
            break;
        }
    }
    let late = rss_kb(host_pid);
    // Kill the host outright: its workers must notice and exit by themselves.
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{THROUGH} records through the UDF: the source at most {max_ahead} ahead; RSS {early} -> {late} kB"
    );
    assert!(serving, "no Go worker was found serving the run");
    assert!(
        early > 0 && late > 0,
        "could not read the host's memory use"
    );
    // What the source may be ahead: the batches (1,024 records each) the bounded channels and
    // operators hold, a few thousand records (~1k measured); an unbounded queue at 1M records/s
    // offered would be ahead by millions after the seconds 2,000 records take.
    assert!(
        max_ahead < 100_000,
        "the source got {max_ahead} records ahead of the output ({lines} progress lines)"
    );
    // Bounded channels keep memory growth to a few batches.
    assert!(
        late < early + 64 * 1024,
        "memory grew from {early} kB to {late} kB under backpressure"
    );
    assert_workers_exit(&[host_pid]);
}

fn write_bucket_case(dir: &Path, records: u64) {
    write_case(
        dir,
        records,
        "  - map: { compute: { user: \"n % 7\" } }\n  - key_by: user\n  - udf: buckets\n",
        &udf(
            "buckets",
            "bucket_totals",
            ", kind: keyed_process, workers: 2",
        ),
    );
}

#[test]
fn keyed_process_state_and_timers_match_an_oracle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 3000u64;
    write_bucket_case(dir.path(), records);
    run_ok(dir.path());
    let got = committed_buckets(dir.path());
    assert_eq!(got, bucket_oracle(records));
    assert!(dead_letters(dir.path()).is_empty());
}

#[test]
fn keyed_go_state_is_exactly_once_across_host_sigkills() {
    // The keyed-process function keeps per-key state and timers in the host (RocksDB); the
    // host is killed with SIGKILL mid-run several times (its workers are left to notice) and
    // made to abort inside a checkpoint's commit twice, each time restarted from its
    // checkpoints: every bucket must come out once, with the oracle's sums.
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 60_000u64;
    write_bucket_case(dir.path(), records);
    let pipeline = dir.path().join("pipeline.yaml");
    let mut text = std::fs::read_to_string(&pipeline).expect("read");
    text.push_str("checkpoint: { interval: 100ms }\n");
    std::fs::write(&pipeline, text).expect("write");
    cache(); // built before the first run
    let mut crashed = Vec::new(); // hosts killed or aborted
    let mut kills = 0;
    for attempt in 0..8u64 {
        // Attempts 1 and 3 abort after a checkpoint's manifest is written but before the sinks
        // commit, and after one sink part of two is committed; the others are killed.
        let crash_at = match attempt {
            1 => Some("manifest-written:2"),
            3 => Some("committed-one:2"),
            _ => None,
        };
        let mut cmd = headwater(dir.path());
        cmd.args(["run", "pipeline.yaml", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(point) = crash_at {
            cmd.env("HEADWATER_CRASH_AT", point);
        }
        let before = common::newest_checkpoint(dir.path(), "go");
        let mut child = cmd.spawn().expect("run");
        if let Some(point) = crash_at {
            let pid = child.id();
            let out = child.wait_with_output().expect("wait");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                break; // the input ran out before that checkpoint
            }
            assert!(
                stderr.contains("aborting on purpose"),
                "the run should have aborted at `{point}`: {stderr}"
            );
            crashed.push(pid);
            continue;
        }
        // Kill it once it has completed a checkpoint of its own (it made progress), at a
        // different moment of the next interval each time.
        wait_while_running(
            &mut child,
            "a checkpoint of this run's own",
            Duration::from_secs(180),
            || common::newest_checkpoint(dir.path(), "go") > before,
        );
        std::thread::sleep(Duration::from_millis(attempt * 37 % 150));
        if child.try_wait().expect("wait").is_some() {
            break; // the input is done
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        crashed.push(child.id());
        kills += 1;
    }
    common::run_ok(headwater(dir.path()).args(["run", "pipeline.yaml", "-q"]));
    // Workers of killed hosts exit on their own (they watch the host's pid), even those
    // started just before the kill.
    assert_workers_exit(&crashed);
    eprintln!("host killed {kills} times, crashed {} times", crashed.len());
    assert!(
        kills >= 3 && crashed.len() >= kills + 2,
        "only {kills} kills and {} aborts landed before the input ran out",
        crashed.len() - kills
    );
    let expected = bucket_oracle(records);
    let got = committed_buckets(dir.path());
    assert_eq!(got.len(), expected.len(), "buckets: none lost");
    assert_eq!(got, expected);
    assert!(dead_letters(dir.path()).is_empty());
}

#[test]
fn a_go_window_aggregate_matches_an_oracle_in_tumbling_and_session_windows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 2000u64;
    write_case(
        dir.path(),
        records,
        SPREAD_STEPS,
        &udf("spread", "spread", ", kind: window_aggregate"),
    );
    run_ok(dir.path());
    assert_eq!(committed_spreads(dir.path()), spread_oracle(records));

    // Sessions (gap 300 ms): a@0 and a@400 open two sessions; a@200 bridges them, so the
    // function merges their accumulators; b stays alone. A poisoned record fails alone.
    use_session_windows(
        dir.path(),
        "{\"ts\":0,\"n\":5,\"k\":\"a\"}\n{\"ts\":400,\"n\":9,\"k\":\"a\"}\n{\"ts\":10,\"n\":7,\"k\":\"b\"}\n{\"ts\":200,\"n\":1,\"k\":\"a\"}\n{\"ts\":5000,\"n\":3,\"k\":\"a\"}\n{\"ts\":5001,\"n\":100,\"k\":\"a\",\"poison\":true}\n",
    );
    run_ok(dir.path());
    let sessions = committed_sessions(dir.path());
    assert_eq!(
        sessions,
        vec![
            ("a".into(), 0, 700, 3, 8),
            ("a".into(), 5000, 5301, 2, 0),
            ("b".into(), 10, 310, 1, 0),
        ]
    );
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["raw"]
            .as_str()
            .unwrap_or("")
            .contains("\"poison\":true"),
        "{dead:?}"
    );
    assert_eq!(
        dead[0]["error"], "aggregate `spread`: poisoned record 100",
        "{dead:?}"
    );
}
