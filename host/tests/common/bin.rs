//! Starting the `headwater` binary and the processes around it: one way to build its command,
//! run it to success or refusal, signal it, and find the workers it started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The binary under test (for the few tests that start it through a shell).
pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_headwater")
}

/// The `headwater` command every test starts. Variables that would change a run from outside
/// (a crash point, a control token) are removed; a test that wants them sets them. Every run
/// checks that each record ended exactly once (the summary's accounting balances).
pub fn headwater() -> Command {
    let mut c = Command::new(bin_path());
    c.env_remove("HEADWATER_CRASH_AT")
        .env_remove("HEADWATER_CONTROL_TOKEN")
        .env("HEADWATER_CHECK_ACCOUNTING", "1");
    c
}

/// [`headwater`] run in folder `dir`.
pub fn headwater_in(dir: &Path) -> Command {
    let mut c = headwater();
    c.current_dir(dir);
    c
}

/// The Python with the SDK installed: `$HEADWATER_PYTHON`, else the virtual environment
/// `./dev test` makes, when it exists.
pub fn find_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEADWATER_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
        .join(".cache/headwater/venv/bin/python");
    venv.exists().then_some(venv)
}

/// [`find_python`], for tests that cannot run without it.
pub fn python() -> PathBuf {
    find_python().unwrap_or_else(|| {
        panic!(
            "these tests need Python with the SDK installed: run them through ./dev test, or set HEADWATER_PYTHON"
        )
    })
}

/// A process's stderr as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` to its end and fails the test with its stderr unless it succeeded; returns
/// its stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run headwater");
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Runs `cmd` to its end, which must be a refusal with exit code 2; returns its stderr.
pub fn run_refused(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run headwater");
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// Lets `child` run for `after` at most, then kills it (SIGKILL) if it is still running.
/// Returns whether the kill landed (false: the child ended by itself before).
pub fn kill_after(child: &mut Child, after: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < after {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if child.try_wait().expect("wait").is_some() {
        return false;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    true
}

/// Sends `signal` (`-INT`, `-9`, ...) to process `pid`; true when it was delivered.
pub fn signal(pid: &str, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, pid])
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops `child` as Ctrl-C would (SIGINT).
pub fn interrupt(child: &Child) {
    assert!(
        signal(&child.id().to_string(), "-INT"),
        "kill -INT {}",
        child.id()
    );
}

/// The pids of the children of process `parent` whose command line matches `pattern`.
pub fn children_matching(parent: u32, pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string(), "-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Kills (SIGKILL) every child of `parent` matching `pattern`; returns how many kills landed.
pub fn kill_children_matching(parent: u32, pattern: &str) -> usize {
    children_matching(parent, pattern)
        .iter()
        .filter(|pid| signal(pid, "-9"))
        .count()
}

/// The pids (one line each) of the processes whose command line matches `pattern`.
pub fn processes_matching(pattern: &str) -> String {
    let found = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&found.stdout).trim().to_string()
}

/// The resident memory of process `pid`, in kB (0 when it cannot be read).
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}
