//! Polling waits: each has a deadline and, when it passes, fails the test naming what it
//! waited for (never a fixed sleep standing in for "ready").

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `done` holds; fails the test after `timeout`, naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    wait_for_value(what, timeout, || done().then_some(()));
}

/// Waits until `found` returns a value and returns it; fails the test after `timeout`.
pub fn wait_for_value<T>(what: &str, timeout: Duration, mut found: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = found() {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until `done` holds while `child` runs: `None` once it holds, `Some(status)` if the
/// child ended first. Fails the test after `timeout`, naming `what`.
pub fn wait_while_running(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<ExitStatus> {
    wait_for_value(what, timeout, || {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(Some(status));
        }
        done().then_some(None)
    })
}

/// Like [`wait_while_running`], for a child that must still run: its ending fails the test.
pub fn wait_for_running(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    done: impl FnMut() -> bool,
) {
    if let Some(status) = wait_while_running(child, what, timeout, done) {
        panic!("the run ended ({status}) while waiting for {what}");
    }
}

/// Waits for `child` to end by itself; fails the test after `timeout`.
pub fn wait_for_exit(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    wait_for_value(what, timeout, || child.try_wait().expect("wait"))
}

/// The next line from `lines` for which `pick` returns a value; the lines passed over are
/// kept in the failure message. Fails the test after `timeout` or when the lines end.
pub fn wait_for_line<T>(
    lines: &Receiver<String>,
    what: &str,
    timeout: Duration,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> (T, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(v) = pick(&line) {
                    return (v, seen);
                }
                seen.push(line);
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("timed out after {timeout:?} waiting for {what}; lines so far: {seen:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the output ended before {what}; lines: {seen:?}")
            }
        }
    }
}

/// Waits until file `path` exists and is not empty.
pub fn wait_for_file(path: &Path, timeout: Duration) {
    wait_for(&format!("{}", path.display()), timeout, || {
        std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
    });
}

/// The records in and out of a progress line (`[name]  1.0s  in 1,234 (..)  out 1,000  ..`).
pub fn progress_counts(line: &str) -> Option<(u64, u64)> {
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
pub fn follow_progress(
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
pub fn next_progress(rx: &std::sync::mpsc::Receiver<(u64, u64)>) -> Option<(u64, u64)> {
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(counts) => Some(counts),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("no progress line for 180 s: the run hangs")
        }
    }
}
