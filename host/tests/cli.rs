//! The `headwater` command line, run as a user would: help, validate, stdin input, the
//! progress line and Ctrl-C on an unbounded source, exit codes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn headwater() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_headwater"));
    // The quickstart has a Python UDF: use the SDK's environment (./dev test sets it up).
    if std::env::var_os("HEADWATER_PYTHON").is_none() {
        let venv = Path::new(&std::env::var("HOME").unwrap_or_default())
            .join(".cache/headwater/venv/bin/python");
        if venv.exists() {
            c.env("HEADWATER_PYTHON", venv);
        }
    }
    // Runs with a control API take their token from here; `http_request` sends it.
    c.env("HEADWATER_CONTROL_TOKEN", CONTROL_TOKEN);
    c
}

const CONTROL_TOKEN: &str = "cli-test-token";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
}

#[test]
fn help_teaches_the_first_steps() {
    let out = headwater().arg("--help").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("headwater run examples/quickstart/pipeline.yaml"),
        "{text}"
    );
    assert!(text.contains("Exit codes"), "{text}");
    let out = headwater().args(["run", "--help"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--parallelism"));
}

#[test]
fn validate_accepts_the_quickstart_and_rejects_a_broken_file() {
    let quickstart = repo().join("examples/quickstart/pipeline.yaml");
    let out = headwater()
        .arg("validate")
        .arg(&quickstart)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok — pipeline `quickstart`"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nsources: {}\nsinks:\n  o: { type: stdout }\noutput: o\nparalelism: 2\n",
    )
    .expect("write");
    let out = headwater()
        .arg("validate")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:6:1: error: unknown key `paralelism`"),
        "{err}"
    );
    assert!(err.contains("did you mean `parallelism`?"), "{err}");
    assert!(err.contains("declare at least one source"), "{err}");
}

#[test]
fn a_missing_pipeline_file_exits_with_2() {
    let out = headwater()
        .args(["run", "/no/such/pipeline.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the pipeline file"));
}

#[test]
fn a_source_that_cannot_be_opened_is_reported_by_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.yaml");
    std::fs::write(&p, "name: x\nsources:\n  s: { type: file, path: 'nothing/*.jsonl', event_time: { field: ts } }\nsinks:\n  o: { type: stdout }\noutput: o\n").expect("write");
    let out = headwater().arg("validate").arg(&p).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no files match"));
}

#[test]
fn stdin_records_flow_through_to_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        "name: s\nparallelism: 2\nsources:\n  in: { type: stdin, event_time: { field: t } }\nsteps:\n  - key_by: k\n  - window: { type: tumbling, size: 10ms, aggregates: { n: count(), total: sum(v) } }\nsinks:\n  o: { type: stdout }\noutput: o\n",
    )
    .expect("write");
    let mut child = headwater()
        .arg("run")
        .arg(&p)
        .arg("--quiet")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for (t, k, v) in [
            (1, "a", 1),
            (2, "b", 2),
            (5, "a", 3),
            (12, "a", 4),
            (3, "b", 5),
        ] {
            writeln!(stdin, r#"{{"t":{t},"k":"{k}","v":{v}}}"#).expect("write");
        }
        writeln!(stdin, "not json").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":4}"#,
            r#"{"k":"a","window_start":10,"window_end":20,"n":1,"total":4}"#,
            r#"{"k":"b","window_start":0,"window_end":10,"n":2,"total":7}"#,
        ]
    );
    let dlq = std::fs::read_to_string(dir.path().join(".headwater/s/dlq.jsonl")).expect("dlq");
    assert_eq!(dlq.lines().count(), 1);
    assert!(dlq.contains(r#""raw":"not json""#), "{dlq}");
}

#[test]
fn an_unbounded_run_shows_progress_and_drains_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        "name: live\nparallelism: 2\nsources:\n  bids: { type: nexmark, rate: 20000, partitions: 2, only: bid }\nsteps:\n  - key_by: auction\n  - window: { type: tumbling, size: 1s, aggregates: { n: count() } }\nsinks:\n  o: { type: file, path: out/r.jsonl }\noutput: o\ntuning: { progress_interval: 200ms }\ncheckpoint: { enabled: false }\n",
    )
    .expect("write");
    let mut child = headwater()
        .arg("run")
        .arg(&p)
        .args(["--control", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let started = Instant::now();
    let mut progress = None;
    let mut control = None;
    for line in lines.by_ref() {
        let line = line.expect("utf8");
        if let Some(rest) = line.strip_prefix("control API on http://") {
            control = rest.split('/').next().map(str::to_string);
        }
        if line.starts_with("[live]") && line.contains("in ") && !line.contains(" in 0 ") {
            progress = Some(line);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no progress line"
        );
    }
    let progress = progress.expect("a progress line");
    assert!(
        progress.contains("/s") && progress.contains("watermark"),
        "{progress}"
    );
    // The control API serves live counters while the run goes on.
    let control = control.expect("the control API address is printed");
    let metrics = http_get(&control, "/metrics");
    let read_so_far: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("headwater_records_in_total{pipeline=\"live\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no records_in_total in {metrics}"));
    assert!(read_so_far > 0.0, "{metrics}");
    assert!(
        metrics.contains("# TYPE headwater_backpressure_seconds_total counter"),
        "{metrics}"
    );
    let status = http_get(&control, "/status");
    let body: serde_json::Value =
        serde_json::from_str(status.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["pipeline"], "live");
    assert_eq!(body["parallelism"], 2);
    // No checkpoints, no savepoint: a clear refusal.
    let (status, body) = http_request(&control, "POST", "/savepoint?to=sp");
    assert!(status.contains("409"), "{status} {body}");
    assert!(body.contains("checkpoints are off"), "{body}");
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit {exit:?}; stderr: {rest:?}");
    let text = rest.join("\n");
    assert!(text.contains("stopping: draining"), "{text}");
    assert!(text.contains("pipeline `live` stopped"), "{text}");
    // draining fired the open windows: every bid read is counted in some window
    let out = std::fs::read_to_string(dir.path().join("out/r.jsonl")).expect("output");
    let counted: i64 = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["n"]
                .as_i64()
                .expect("n")
        })
        .sum();
    let read: i64 = text
        .lines()
        .find(|l| l.contains("records in"))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(|n| n.replace(',', "").parse().expect("count"))
        .expect("records in line");
    assert_eq!(
        counted, read,
        "every record read ended up in a window result"
    );
}

fn http_get(address: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(address).expect("connect to the control API");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// Sends `method path` to the control API: (status line, body).
fn http_request(address: &str, method: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(address).expect("connect to the control API");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {CONTROL_TOKEN}\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The total of the `n` column over a file sink's committed parts.
fn committed_count(out: &Path) -> i64 {
    let mut total = 0;
    for entry in std::fs::read_dir(out).expect("output folder").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // pending parts
        }
        for line in std::fs::read_to_string(entry.path()).expect("part").lines() {
            total += serde_json::from_str::<serde_json::Value>(line).expect("json")["n"]
                .as_i64()
                .expect("n");
        }
    }
    total
}

#[test]
fn a_savepoint_taken_through_the_control_api_restores_at_another_parallelism() {
    // A checkpoint interval far longer than the run: the savepoint takes its own checkpoint.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        "name: sp\nparallelism: 2\nsources:\n  bids: { type: nexmark, events: 60000, rate: 20000, partitions: 2, only: bid }\nsteps:\n  - key_by: auction\n  - window: { type: tumbling, size: 1s, aggregates: { n: count() } }\nsinks:\n  o: { type: file, path: out/r.jsonl }\noutput: o\ncheckpoint: { interval: 1h }\ntuning: { progress_interval: 200ms }\n",
    )
    .expect("write");
    let mut child = headwater()
        .arg("run")
        .arg(&p)
        .args(["--control", "127.0.0.1:0", "--fresh"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut control = None;
    for line in lines.by_ref() {
        let line = line.expect("utf8");
        if let Some(rest) = line.strip_prefix("control API on http://") {
            control = rest.split('/').next().map(str::to_string);
        }
        // Once records flow, the savepoint has state to hold.
        if control.is_some() && line.starts_with("[sp]") && !line.contains(" in 0 ") {
            break;
        }
    }
    let control = control.expect("the control API address is printed");
    let (status, body) = http_request(&control, "POST", "/savepoint");
    assert!(status.contains("400"), "{status} {body}");
    assert!(body.contains("?to=PATH"), "{body}");

    let target = dir.path().join("save points/first");
    let encoded = target.display().to_string().replace(' ', "%20");
    let (status, body) = http_request(&control, "POST", &format!("/savepoint?to={encoded}"));
    assert!(status.contains("200"), "{status} {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json answer");
    assert!(answer["checkpoint"].as_u64().is_some(), "{body}");
    assert!(answer["files"].as_u64().expect("files") > 0, "{body}");
    assert!(target.join("manifest.json").exists());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().expect("wait").success(), "{rest:?}");
    let whole_run = committed_count(&dir.path().join("out"));
    assert!(whole_run > 0);

    // From the savepoint, with one task: the output is the same as the uninterrupted run's.
    let out = headwater()
        .arg("run")
        .arg(&p)
        .args(["-q", "-p", "1", "--from"])
        .arg(&target)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        committed_count(&dir.path().join("out")),
        whole_run,
        "{stderr}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_sink_that_stops_reading_pauses_the_source_with_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.yaml");
    // An unbounded generator at full speed into stdout, which this test does not read.
    std::fs::write(
        &p,
        "name: bp\nparallelism: 2\nsources:\n  bids: { type: nexmark, partitions: 2, only: bid }\nsinks:\n  o: { type: stdout }\noutput: o\ntuning: { progress_interval: 0s }\n",
    )
    .expect("write");
    let mut child = headwater()
        .arg("run")
        .arg(&p)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1500));
    let first = rss_kib(pid);
    std::thread::sleep(Duration::from_millis(1500));
    let second = rss_kib(pid);
    // The pipe (64 KiB) and the bounded channels fill, then the generator waits: memory stays
    // flat instead of growing with the ~millions of events/s it could produce.
    assert!(first > 0, "process is running");
    assert!(
        second < 200 * 1024,
        "RSS {second} KiB: memory grew without bound"
    );
    assert!(
        second <= first + 16 * 1024,
        "RSS grew from {first} to {second} KiB while the sink was blocked"
    );
    // Reading a little lets it continue: the pipeline was paused, not dead.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert!(line.contains("\"event_type\":\"bid\""), "{line}");
    child.kill().expect("kill");
    let _ = child.wait();
}
