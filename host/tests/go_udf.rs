//! Go UDFs end to end: the real `headwater` binary builds the Go worker in `tests/go-worker/`
//! (a main package using this checkout's `sdk-go`) and starts real worker processes; the same
//! cases as the Python runtime's tests (`python_udf.rs`), plus what is Go's own (panics, the
//! compiler's errors, built binaries).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
        let out = Command::new(env!("CARGO_BIN_EXE_headwater"))
            .current_dir(work.path())
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
    let mut c = Command::new(env!("CARGO_BIN_EXE_headwater"));
    c.current_dir(dir)
        .env("HEADWATER_GO", go())
        .env("HEADWATER_CACHE", cache());
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
    let out = headwater(dir)
        .args(["run", "pipeline.yaml", "-q", "--fresh"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn output_ns(dir: &Path) -> BTreeMap<i64, usize> {
    let text =
        headwater::connectors::files::read_committed(&dir.join("out.jsonl")).expect("output");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        *counts.entry(v["n"].as_i64().expect("n")).or_default() += 1;
    }
    counts
}

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let dlq = std::fs::read_to_string(dir.join(".headwater/go/dlq.jsonl")).unwrap_or_default();
    dlq.lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// The pids of the Go workers the host `host` started (its children serving a socket).
fn worker_pids(host: u32) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-P", &host.to_string(), "-f", "worker --socket"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The Go workers of host `host` by their socket's name (`headwater-PID-...`), which they keep
/// after the host is gone.
fn workers_of(host: u32) -> String {
    let found = Command::new("pgrep")
        .args(["-f", &format!("socket .*headwater-{host}-")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

/// Waits up to 10 s for every worker of the (killed) hosts `hosts` to exit by itself.
fn assert_workers_exit(hosts: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = hosts
            .iter()
            .map(|&pid| (pid, workers_of(pid)))
            .filter(|(_, pids)| !pids.is_empty())
            .map(|(pid, pids)| format!("host {pid}: {pids}"))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers outlived their killed host: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
    for d in &dead {
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

/// The records in and out of a progress line (`[name]  1.0s  in 1,234 (..)  out 1,000  ..`).
fn progress_counts(line: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.replace(',', "").parse().ok()
    };
    Some((after("in")?, after("out")?))
}

/// Follows the stderr of run `child` of pipeline `name` (with progress lines on): sends the
/// records in and out of each progress line; the thread returns all of stderr once it closes
/// (the channel then disconnects).
fn follow_progress(
    child: &mut std::process::Child,
    name: &str,
) -> (
    std::sync::mpsc::Receiver<(u64, u64)>,
    std::thread::JoinHandle<String>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    let prefix = format!("[{name}]");
    let all = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(counts) = line.strip_prefix(&prefix).and_then(progress_counts) {
                let _ = tx.send(counts);
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, all)
}

/// The next progress counts, or None once the run has ended; the deadline only bounds a
/// broken run.
fn next_progress(rx: &std::sync::mpsc::Receiver<(u64, u64)>) -> Option<(u64, u64)> {
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(counts) => Some(counts),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("no progress line for 180 s: the run hangs")
        }
    }
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
        for pid in &pids {
            if Command::new("kill")
                .args(["-9", pid])
                .status()
                .is_ok_and(|s| s.success())
            {
                kills += 1;
            }
        }
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

/// The resident memory of process `pid`, in kB (0 when it cannot be read).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
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
    let serving = !worker_pids(host_pid).is_empty() && !workers_of(host_pid).is_empty();
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

/// Per (user, 100-ms bucket end): the sum and count of n, for `n` in `0..records` (ts == n).
fn bucket_oracle(records: u64) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut expected: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for n in 0..records as i64 {
        let e = expected.entry((n % 7, n / 100 * 100 + 99)).or_default();
        e.0 += n;
        e.1 += 1;
    }
    expected
}

/// The committed output as `(key fields) -> (value fields)`, all integers; a key emitted
/// twice fails the test.
fn committed_pairs(
    dir: &Path,
    key: [&str; 2],
    value: [&str; 2],
) -> BTreeMap<(i64, i64), (i64, i64)> {
    let text =
        headwater::connectors::files::read_committed(&dir.join("out.jsonl")).expect("output");
    let int =
        |v: &serde_json::Value, f: &str| v[f].as_i64().unwrap_or_else(|| panic!("{f} in {v}"));
    let mut got = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let k = (int(&v, key[0]), int(&v, key[1]));
        let prev = got.insert(k, (int(&v, value[0]), int(&v, value[1])));
        assert!(prev.is_none(), "{k:?} emitted twice");
    }
    got
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
    let got = committed_pairs(dir.path(), ["user", "bucket_end"], ["total", "count"]);
    assert_eq!(got, bucket_oracle(records));
    assert!(dead_letters(dir.path()).is_empty());
}

/// The id of the newest checkpoint of pipeline `name` in `dir` (0: none yet).
fn newest_checkpoint(dir: &Path, name: &str) -> u64 {
    let manifests = dir.join(format!(".headwater/{name}/checkpoints/manifests"));
    std::fs::read_dir(manifests)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json")?.parse().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
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
        let before = newest_checkpoint(dir.path(), "go");
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
        let deadline = Instant::now() + Duration::from_secs(180);
        while newest_checkpoint(dir.path(), "go") <= before
            && child.try_wait().expect("wait").is_none()
        {
            assert!(Instant::now() < deadline, "no checkpoint for 180 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(attempt * 37 % 150));
        if child.try_wait().expect("wait").is_some() {
            break; // the input is done
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        crashed.push(child.id());
        kills += 1;
    }
    let out = headwater(dir.path())
        .args(["run", "pipeline.yaml", "-q"])
        .output()
        .expect("final run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let got = committed_pairs(dir.path(), ["user", "bucket_end"], ["total", "count"]);
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
        "  - map: { compute: { user: \"n % 5\" } }\n  - key_by: user\n  - window: { type: tumbling, size: 100ms, aggregates: { count: count(), spread: \"udf(spread)\" } }\n",
        &udf("spread", "spread", ", kind: window_aggregate"),
    );
    run_ok(dir.path());
    // Oracle: per (user, 100-ms window), the count and max - min of n (ts == n).
    let mut expected: BTreeMap<(i64, i64), (i64, i64, i64)> = BTreeMap::new();
    for n in 0..records as i64 {
        let e = expected
            .entry((n % 5, n / 100 * 100))
            .or_insert((0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 = e.1.min(n);
        e.2 = e.2.max(n);
    }
    let expected: BTreeMap<(i64, i64), (i64, i64)> = expected
        .into_iter()
        .map(|(k, (c, lo, hi))| (k, (c, hi - lo)))
        .collect();
    let got = committed_pairs(dir.path(), ["user", "window_start"], ["count", "spread"]);
    assert_eq!(got, expected);

    // Sessions (gap 300 ms): a@0 and a@400 open two sessions; a@200 bridges them, so the
    // function merges their accumulators; b stays alone. A poisoned record fails alone.
    std::fs::write(
        dir.path().join("input.jsonl"),
        "{\"ts\":0,\"n\":5,\"k\":\"a\"}\n{\"ts\":400,\"n\":9,\"k\":\"a\"}\n{\"ts\":10,\"n\":7,\"k\":\"b\"}\n{\"ts\":200,\"n\":1,\"k\":\"a\"}\n{\"ts\":5000,\"n\":3,\"k\":\"a\"}\n{\"ts\":5001,\"n\":100,\"k\":\"a\",\"poison\":true}\n",
    )
    .expect("input");
    let pipeline = std::fs::read_to_string(dir.path().join("pipeline.yaml")).expect("read");
    let start = pipeline.find("steps:\n").expect("steps");
    let end = pipeline.find("sinks:\n").expect("sinks");
    let pipeline = format!(
        "{}steps:\n  - key_by: k\n  - window: {{ type: session, gap: 300ms, aggregates: {{ count: count(), spread: \"udf(spread)\" }} }}\n{}",
        &pipeline[..start],
        &pipeline[end..]
    )
    .replace("event_time: { field: ts }", "event_time: { field: ts, max_out_of_orderness: 10s }");
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline).expect("write");
    run_ok(dir.path());
    let text = headwater::connectors::files::read_committed(&dir.path().join("out.jsonl"))
        .expect("output");
    let mut sessions: Vec<(String, i64, i64, i64, i64)> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            (
                v["k"].as_str().expect("k").to_string(),
                v["window_start"].as_i64().expect("start"),
                v["window_end"].as_i64().expect("end"),
                v["count"].as_i64().expect("count"),
                v["spread"].as_i64().expect("spread"),
            )
        })
        .collect();
    sessions.sort();
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
