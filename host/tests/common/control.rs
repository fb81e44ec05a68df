//! Runs with a control API: starting one and finding its address in its log, and a minimal
//! HTTP/1.1 client for the API.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::bin::interrupt;
use super::wait::wait_for_line;

/// Sends each line of `child`'s (piped) stderr, as it comes, to the receiver; the channel
/// disconnects when the process closes its stderr.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The address in a `control API on http://ADDRESS/` log line.
pub fn control_address(line: &str) -> Option<String> {
    let rest = line.strip_prefix("control API on http://")?;
    Some(rest.split('/').next().unwrap_or_default().to_string())
}

/// A run in the background: its control API address (as printed, and one to connect to),
/// and its stderr lines (those before the address, and the rest as they come).
pub struct ControlRun {
    pub child: Child,
    pub printed: String,
    pub address: String,
    pub before: Vec<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl ControlRun {
    /// Starts `cmd` (a `headwater run` given `--control`) and waits for its API's address.
    pub fn start(cmd: &mut Command) -> ControlRun {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn headwater");
        let stderr = stderr_lines(&mut child);
        let (printed, before) = wait_for_line(
            &stderr,
            "the control API address",
            Duration::from_secs(60),
            control_address,
        );
        let port = printed.rsplit(':').next().unwrap_or_default();
        ControlRun {
            child,
            address: format!("127.0.0.1:{port}"),
            printed,
            before,
            stderr,
        }
    }

    /// Stops the run with Ctrl-C and returns its whole stderr; it must exit successfully.
    pub fn finish(mut self) -> String {
        interrupt(&self.child);
        let exit = self.child.wait().expect("wait");
        let mut all = self.before;
        // The reader thread ends with the process's stderr.
        all.extend(self.stderr.iter());
        assert!(exit.success(), "exit {exit:?}: {all:?}");
        all.join("\n")
    }

    /// Kills the run (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

/// One request to `address`, with extra header lines (`Name: value`) and a body:
/// (status code, body), or the I/O error (e.g. the API is not up yet).
pub fn try_http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(address)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let bad = || std::io::Error::other(format!("not an HTTP response: {out:?}"));
    let (head, body) = out.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_string()))
}

/// [`try_http`] to a control API that must answer.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> (u16, String) {
    try_http(address, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to the control API at {address}: {e}"))
}

/// The `Authorization` header line for bearer token `token`.
pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}
