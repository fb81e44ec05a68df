//! Starting a worker process: what each runtime contributes (its [`Launcher`]) and what every
//! worker gets the same way (the socket, the host's pid, stderr forwarded to the host's log).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a worker runtime (Python, Go, ...) adds to the generic worker client: how to start a
/// worker, and what to tell the user when that goes wrong. Everything else (handshake,
/// supervision, restarts, batching, resending) is the same for every language.
///
/// The launch contract every worker follows (`docs/worker-protocol.md`): it is started with
/// `--socket PATH` and serves the protocol there, `HEADWATER_HOST_PID` names the host (the
/// worker exits when that process is gone), stdout is ignored, stderr goes to the host's log,
/// and exit code 3 means the user's code could not be loaded.
pub trait Launcher: Send + Sync + 'static {
    /// The runtime's name as written in pipeline files (`python`, `go`).
    fn runtime(&self) -> &'static str;
    /// The worker's name in messages (`Python worker`).
    fn noun(&self) -> &'static str;
    /// The command that starts one worker listening on the Unix socket `socket`.
    fn command(&self, socket: &Path) -> Command;
    /// What to try when the command cannot be started at all.
    fn spawn_hint(&self) -> String;
    /// Something to add to the message of a worker that exited before it was ready, given the
    /// last lines it wrote to stderr.
    fn exit_hint(&self, _stderr: &str) -> Option<String> {
        None
    }
    /// What to do when the worker speaks another protocol version.
    fn upgrade_hint(&self) -> String;
}

/// The last lines a worker wrote to stderr.
pub(super) type StderrTail = Arc<Mutex<Vec<String>>>;

/// Starts one worker on `socket`, forwarding its stderr (prints, warnings, tracebacks) with a
/// `[udf NAME]` prefix and keeping the last lines for error messages.
pub(super) fn spawn_process(
    udf: &str,
    launcher: &dyn Launcher,
    socket: &Path,
) -> Result<(Child, StderrTail), String> {
    let _ = std::fs::remove_file(socket);
    let mut command = launcher.command(socket);
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        // The worker exits when this process is gone, even if it dies before the worker
        // got as far as looking at its parent.
        .env("HEADWATER_HOST_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}; {}", launcher.spawn_hint()))?;
    let tail: StderrTail = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let keep = tail.clone();
        let name = udf.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[udf {name}] {line}");
                if let Ok(mut t) = keep.lock() {
                    t.push(line);
                    if t.len() > 40 {
                        t.remove(0);
                    }
                }
            }
        });
    }
    Ok((child, tail))
}

/// A Unix socket path for worker `index` of `udf`, unique in this process.
pub(super) fn socket_path(udf: &str, index: usize) -> PathBuf {
    let safe: String = udf
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    // A process-wide counter keeps names that sanitize alike (`my-udf`, `my_udf`) apart.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "headwater-{}-{safe}-{index}-{unique}.sock",
        std::process::id()
    ))
}
