//! The `headwater` command line, run as a user would: help, validate, stdin input, the
//! progress line and Ctrl-C on an unbounded source, exit codes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::control::{bearer, control_address, http, stderr_lines};
use common::{interrupt, rss_kb, wait_for_line};

fn headwater() -> Command {
    let mut c = common::headwater();
    // The quickstart has a Python UDF: use the SDK's environment (./dev test sets it up).
    if let Some(python) = common::find_python() {
        c.env("HEADWATER_PYTHON", python);
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
    let lines = stderr_lines(&mut child);
    let (control, _) = wait_for_line(
        &lines,
        "the control API address",
        Duration::from_secs(30),
        control_address,
    );
    let (progress, _) = wait_for_line(
        &lines,
        "a progress line with records in",
        Duration::from_secs(30),
        |line| {
            (line.starts_with("[live]") && line.contains("in ") && !line.contains(" in 0 "))
                .then(|| line.to_string())
        },
    );
    assert!(
        progress.contains("/s") && progress.contains("watermark"),
        "{progress}"
    );
    // The control API serves live counters while the run goes on.
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
    let body: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(body["pipeline"], "live");
    assert_eq!(body["parallelism"], 2);
    // No checkpoints, no savepoint: a clear refusal.
    let (status, body) = http_request(&control, "POST", "/savepoint?to=sp");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("checkpoints are off"), "{body}");
    interrupt(&child);
    let rest: Vec<String> = lines.iter().collect();
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

/// `GET path` from the control API, which must answer 200: the body.
fn http_get(address: &str, path: &str) -> String {
    let (code, body) = http(address, "GET", path, &[], b"");
    assert_eq!(code, 200, "{body}");
    body
}

/// Sends `method path` to the control API with the token: (status code, body).
fn http_request(address: &str, method: &str, path: &str) -> (u16, String) {
    http(address, method, path, &[bearer(CONTROL_TOKEN)], b"")
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
    let lines = stderr_lines(&mut child);
    let (control, _) = wait_for_line(
        &lines,
        "the control API address",
        Duration::from_secs(60),
        control_address,
    );
    // Once records flow, the savepoint has state to hold.
    wait_for_line(
        &lines,
        "a progress line with records in",
        Duration::from_secs(60),
        |line| (line.starts_with("[sp]") && !line.contains(" in 0 ")).then_some(()),
    );
    let (status, body) = http_request(&control, "POST", "/savepoint");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("?to=PATH"), "{body}");

    let target = dir.path().join("save points/first");
    let encoded = target.display().to_string().replace(' ', "%20");
    let (status, body) = http_request(&control, "POST", &format!("/savepoint?to={encoded}"));
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json answer");
    assert!(answer["checkpoint"].as_u64().is_some(), "{body}");
    assert!(answer["files"].as_u64().expect("files") > 0, "{body}");
    assert!(target.join("manifest.json").exists());
    let rest: Vec<String> = lines.iter().collect();
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

/// True when a thread of process `pid` waits to write to a full pipe (its kernel wait channel
/// is `pipe_write`, or `anon_pipe_write` on newer kernels).
fn blocked_on_a_pipe(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("wchan"))
                .is_ok_and(|w| w.ends_with("pipe_write"))
        })
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
    // Ready: a thread of the run waits to write to the full stdout pipe.
    common::wait_for_running(
        &mut child,
        "the run to block on its full stdout pipe",
        Duration::from_secs(60),
        || blocked_on_a_pipe(pid),
    );
    // Then the bounded channels behind the sink fill; memory is measured 1.5 s apart.
    std::thread::sleep(Duration::from_millis(1500));
    let first = rss_kb(pid);
    std::thread::sleep(Duration::from_millis(1500));
    let second = rss_kb(pid);
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

/// Runs `headwater ARGS` in `dir` to completion.
fn headwater_in(dir: &Path, args: &[&str]) -> std::process::Output {
    headwater()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run headwater")
}

#[test]
fn dlq_inspect_groups_dead_letters_by_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 30 good records; 5 truncated lines (decode) and 2 without `ts` (event time), in
    // between; the truncations differ in their data (length, column) but share a cause.
    let mut input = String::new();
    for n in 0..30 {
        input.push_str(&format!("{{\"ts\":{n},\"n\":{n}}}\n"));
        if n % 6 == 1 {
            input.push_str(&format!("{{\"ts\":{n},\"n\":{}\n", "1".repeat(n + 1)));
        }
        if n % 15 == 2 {
            input.push_str(&format!("{{\"n\":{n}}}\n"));
        }
    }
    std::fs::write(dir.path().join("in.jsonl"), input).expect("input");
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: p\nsources:\n  in: { type: file, path: in.jsonl, event_time: { field: ts } }\n\
sinks:\n  out: { type: file, path: out.jsonl }\noutput: out\n",
    )
    .expect("pipeline");
    let before = headwater_in(dir.path(), &["dlq", "inspect", "p.yaml"]);
    assert!(before.status.success());
    assert!(
        String::from_utf8_lossy(&before.stdout).starts_with("no dead letters:"),
        "{}",
        String::from_utf8_lossy(&before.stdout)
    );
    let run = headwater_in(dir.path(), &["run", "p.yaml", "-q"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = headwater_in(dir.path(), &["dlq", "inspect", "p.yaml", "--samples", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("7 dead letters in 2 groups"), "{text}");
    assert!(
        text.contains("#1  5 × decode  decode (permanent)"),
        "{text}"
    );
    assert!(
        text.contains("#2  2 × event_time  event_time (permanent)"),
        "{text}"
    );
    assert!(text.contains("sample:  in in.jsonl:"), "{text}");
    let json = headwater_in(dir.path(), &["dlq", "inspect", "p.yaml", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json report");
    assert_eq!(report["dead_letters"], 7);
    let groups = report["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["count"], 5);
    assert_eq!(groups[0]["samples"].as_array().map(Vec::len), Some(3));
    // Every envelope in the file carries its group's fingerprint.
    let dlq = std::fs::read_to_string(dir.path().join(".headwater/p/dlq.jsonl")).expect("dlq");
    let decode_print = groups[0]["fingerprint"].as_str().expect("fingerprint");
    let with_print = dlq
        .lines()
        .filter(|l| l.contains(&format!("\"fingerprint\":\"{decode_print}\"")))
        .count();
    assert_eq!(with_print, 5, "{dlq}");
}

#[test]
fn dlq_inspect_reads_a_file_sink_dlq_and_explains_one_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = |dead: &str| {
        format!(
            "name: p\nsources:\n  in: {{ type: stdin, event_time: {{ field: ts }} }}\n\
sinks:\n  out: {{ type: stdout }}\n  dead: {dead}\noutput: out\ndlq: {{ sink: dead }}\n"
        )
    };
    std::fs::write(
        dir.path().join("p.yaml"),
        pipeline("{ type: file, path: dead.jsonl }"),
    )
    .expect("pipeline");
    let mut run = headwater();
    run.current_dir(dir.path())
        .args(["run", "p.yaml", "-q"])
        .stdin(std::process::Stdio::piped());
    let mut child = run.spawn().expect("run");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"{\"ts\":1}\n{oops\n{\"nots\":2}\n")
            .expect("write");
    }
    assert!(child.wait().expect("wait").success());
    let out = headwater_in(dir.path(), &["dlq", "inspect", "p.yaml", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["dead_letters"], 2, "{report}");

    std::fs::write(dir.path().join("p.yaml"), pipeline("{ type: stdout }")).expect("pipeline");
    let out = headwater_in(dir.path(), &["dlq", "inspect", "p.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sends its dead letters to the sink `dead`")
            && err.contains("read its output"),
        "{err}"
    );
}
