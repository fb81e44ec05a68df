//! Line-based sources (files and stdin) with input a user would not expect to be a problem:
//! a line far longer than any record, a stdin that sends one line and then waits, event times
//! with a zone offset.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::headwater;
use common::udf::dead_letters as dlq_lines;

#[test]
fn a_line_longer_than_max_line_bytes_is_dead_lettered_and_the_rest_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("input")).expect("mkdir");
    // A 3 MiB line between two records, in a source capped at 1 MiB: the run must not buffer it
    // whole, nor stop; the records on either side go through.
    let long = format!(r#"{{"ts":2,"pad":"{}"}}"#, "x".repeat(3 << 20));
    std::fs::write(
        dir.path().join("input/a.jsonl"),
        format!("{{\"ts\":1,\"v\":1}}\n{long}\n{{\"ts\":3,\"v\":3}}\n"),
    )
    .expect("write input");
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: long\nsources:\n  in: { type: file, path: input/*.jsonl, max_line_bytes: 1MiB, event_time: { field: ts } }\n\
         sinks:\n  out: { type: file, path: out/o.jsonl }\noutput: out\n",
    )
    .expect("write pipeline");
    common::run_ok(
        headwater()
            .current_dir(dir.path())
            .args(["run", "p.yaml", "--quiet"]),
    );
    let mut committed = String::new();
    for e in std::fs::read_dir(dir.path().join("out")).expect("out") {
        committed.push_str(&std::fs::read_to_string(e.expect("entry").path()).expect("read"));
    }
    let mut vs: Vec<i64> = committed
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["v"]
                .as_i64()
                .expect("v")
        })
        .collect();
    vs.sort();
    assert_eq!(vs, [1, 3], "the records around the long line: {committed}");
    let dlq = dlq_lines(dir.path(), "long");
    assert_eq!(dlq.len(), 1, "one dead letter: {dlq:?}");
    let error = dlq[0]["error"].as_str().expect("error");
    assert!(
        error.contains("max_line_bytes") && error.contains("3145"),
        "the error names the limit and the line's size: {error}"
    );
    assert_eq!(dlq[0]["offset"], 2, "the line number: {}", dlq[0]);
    let raw = dlq[0]["raw"].as_str().expect("raw");
    assert!(
        raw.starts_with(r#"{"ts":2,"pad":"xxx"#) && raw.len() <= 64 << 10,
        "the line's start is kept, not all of it: {} bytes",
        raw.len()
    );
}

#[test]
fn a_bad_max_line_bytes_is_named_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: bad\nsources:\n  in: { type: stdin, max_line_bytes: lots, event_time: { field: ts } }\n\
         sinks:\n  out: { type: stdout }\noutput: out\n",
    )
    .expect("write pipeline");
    let out = headwater()
        .current_dir(dir.path())
        .args(["validate", "p.yaml"])
        .output()
        .expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("max_line_bytes")
            && stderr.contains("p.yaml:3")
            && stderr.contains("16MiB"),
        "{stderr}"
    );
}

#[test]
fn one_line_on_an_open_stdin_comes_out_without_waiting_for_more_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.yaml"),
        "name: echo\nsources:\n  in: { type: stdin, event_time: { field: ts } }\n\
         steps:\n  - map: { compute: { v: \"v * 2\" } }\nsinks:\n  out: { type: stdout }\noutput: out\n",
    )
    .expect("write pipeline");
    let mut child = headwater()
        .current_dir(dir.path())
        .args(["run", "p.yaml", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    // An offset time, too: it used to be dead-lettered as "not an RFC 3339 time".
    writeln!(stdin, r#"{{"ts":"2026-01-01T12:00:03+02:00","v":21}}"#).expect("write");
    stdin.flush().expect("flush");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("line")).is_err() {
                break;
            }
        }
    });
    // stdin stays open: the line must not wait for a second one, or for the end of input.
    let got = rx.recv_timeout(Duration::from_secs(60));
    drop(stdin);
    let status = child.wait().expect("wait");
    let line = got.expect("the record came out while stdin was still open");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(v["v"], 42, "{line}");
    assert!(status.success(), "{status}");
    assert!(dlq_lines(dir.path(), "echo").is_empty());
}
