//! The control API: a small HTTP server on loopback while a pipeline runs.
//!
//! - `GET /status`: the run as JSON (pipeline, state, uptime, parallelism, counters,
//!   watermark and lag).
//! - `GET /metrics`: the same counters in Prometheus text format, for scraping.
//! - `POST /savepoint?to=PATH`: takes a checkpoint now, copies it to `PATH` (a new folder or
//!   `s3://` prefix) as a self-contained savepoint, and answers with JSON once it is written.
//! - `/udfs/<udf>/...`: upload, list, activate and roll back Wasm modules
//!   ([`super::control_udfs`]).
//!
//! Plain HTTP/1.1, one request per connection: enough for `curl` and Prometheus, with no
//! dependency and no async runtime. It binds loopback addresses only unless told otherwise.
//! Reading is open; every other request (the savepoint) goes through
//! [`ControlAuth::authorize`]: a bearer token when the run has one, loopback only when not
//! (see [`super::control_auth`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::control_auth::{AuthError, ControlAuth, ControlToken, Credentials};
use super::control_udfs::{UdfControl, UdfRequest, MAX_UPLOAD};
use crate::metrics::Metrics;
use crate::record::{WATERMARK_END, WATERMARK_START};

/// A failure to start the control API.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the control API on {address}: {source}; pick a free port with --control 127.0.0.1:PORT")]
pub struct ControlError {
    address: SocketAddr,
    source: std::io::Error,
}

/// What the control API reports besides the counters.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub pipeline: String,
    pub parallelism: usize,
}

/// Where savepoint requests go (None: checkpoints are off).
pub type SavepointSender = Option<crossbeam_channel::Sender<crate::checkpoint::SavepointRequest>>;

/// How long `POST /savepoint` waits for the savepoint before answering 504.
const SAVEPOINT_WAIT: Duration = Duration::from_secs(3600);

/// The running server; stops when dropped.
pub struct ControlServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `address` (port 0 picks a free one) and serves until dropped. Requests that
    /// change the run need `token` when given (see [`ControlAuth`]).
    pub fn start(
        address: SocketAddr,
        info: RunInfo,
        metrics: Arc<Metrics>,
        savepoints: SavepointSender,
        token: Option<ControlToken>,
    ) -> Result<ControlServer, ControlError> {
        Self::start_with_udfs(address, info, metrics, savepoints, token, None)
    }

    /// [`Self::start`], also serving the Wasm module routes (`/udfs/...`).
    pub fn start_with_udfs(
        address: SocketAddr,
        info: RunInfo,
        metrics: Arc<Metrics>,
        savepoints: SavepointSender,
        token: Option<ControlToken>,
        udfs: Option<Arc<UdfControl>>,
    ) -> Result<ControlServer, ControlError> {
        let listener =
            TcpListener::bind(address).map_err(|source| ControlError { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ControlError { address, source })?;
        let auth = ControlAuth::new(token, bound);
        if auth.locked_out() {
            tracing::warn!(
                "the control API listens on {bound}, beyond loopback, without a token: anyone who \
reaches it can read /status and /metrics, and POST /savepoint is refused until the run has a \
token (--control-token-file PATH or {})",
                super::control_auth::TOKEN_ENV
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("control-api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        let server = Server {
                            info: &info,
                            metrics: &metrics,
                            started,
                            savepoints: &savepoints,
                            auth: &auth,
                            udfs: &udfs,
                        };
                        if let Err(e) = handle(stream, &server) {
                            tracing::debug!(error = %e, "control API request failed");
                        }
                    }
                }
            })
            .map_err(|source| ControlError { address, source })?;
        Ok(ControlServer {
            address: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The head of a request: what the routes and [`ControlAuth::authorize`] look at.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    authorization: Option<String>,
    /// `Content-Length`, when sent.
    pub content_length: Option<u64>,
    /// `X-Headwater-User`: who uploads or activates, for the record.
    pub user: Option<String>,
}

impl Credentials for Request {
    fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }
}

/// Longest request line or header accepted, and most headers.
const MAX_LINE: u64 = 8 << 10;
const MAX_HEADERS: usize = 100;

impl Request {
    /// Reads the request line and headers (the requests have no body we care about).
    fn read<R: BufRead>(mut reader: R) -> std::io::Result<Request> {
        let mut line = String::new();
        std::io::Read::take(&mut reader, MAX_LINE).read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut request = Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            authorization: None,
            content_length: None,
            user: None,
        };
        for _ in 0..MAX_HEADERS {
            line.clear();
            if std::io::Read::take(&mut reader, MAX_LINE).read_line(&mut line)? <= 2 {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case("authorization") {
                    request.authorization = Some(value.to_string());
                } else if name.eq_ignore_ascii_case("content-length") {
                    request.content_length = value.parse().ok();
                } else if name.eq_ignore_ascii_case("x-headwater-user") && !value.is_empty() {
                    request.user = Some(value.chars().take(200).collect());
                }
            }
        }
        Ok(request)
    }
}

/// What requests are served with.
struct Server<'a> {
    info: &'a RunInfo,
    metrics: &'a Metrics,
    started: Instant,
    savepoints: &'a SavepointSender,
    auth: &'a ControlAuth,
    udfs: &'a Option<Arc<UdfControl>>,
}

fn handle(stream: TcpStream, server: &Server<'_>) -> std::io::Result<()> {
    let Server {
        info,
        metrics,
        started,
        savepoints,
        auth,
        udfs,
    } = *server;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let request = Request::read(&mut reader)?;
    // Reading is open; anything else may change the run.
    if request.method != "GET" && request.method != "HEAD" {
        if let Err(e) = auth.authorize(&request) {
            tracing::warn!(method = %request.method, path = %request.path, "control API request refused: {e}");
            // Read a small body first: closing on unread data would reset the connection
            // before the client reads why.
            let unread = request.content_length.unwrap_or(0).min(1 << 20);
            let _ = std::io::copy(
                &mut std::io::Read::take(&mut reader, unread),
                &mut std::io::sink(),
            );
            return refuse(stream, &e);
        }
    }
    if request.path.starts_with("/udfs/") {
        let Some(udfs) = udfs.clone() else {
            let body = serde_json::json!({ "error": "this run has no Wasm UDFs to manage" });
            return respond(
                stream,
                "404 Not Found",
                "application/json",
                &format!("{body}\n"),
            );
        };
        // Uploads and activations take a while: answered on their own thread.
        std::thread::Builder::new()
            .name("control-udfs".into())
            .spawn(move || {
                let (status, body) = match read_body(&mut reader, &request) {
                    Ok(body) => udfs.handle(UdfRequest {
                        method: &request.method,
                        rest: request.path.trim_start_matches("/udfs/"),
                        query: &request.query,
                        user: request.user.as_deref(),
                        body,
                    }),
                    Err(refused) => refused,
                };
                respond(stream, status, "application/json", &body)
            })?;
        return Ok(());
    }
    let (method, path, query) = (
        request.method.as_str(),
        request.path.as_str(),
        request.query.as_str(),
    );
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let mut text = super::control_prometheus::prometheus(&info.pipeline, metrics, started);
            if let Some(udfs) = udfs {
                let p = info.pipeline.replace('\\', "\\\\").replace('"', "\\\"");
                text.push_str(&udfs.prometheus(&p));
            }
            ("200 OK", "text/plain; version=0.0.4", text)
        }
        ("GET", "/status") => {
            let mut body = status(info, metrics, started);
            if let Some(udfs) = udfs {
                if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&body) {
                    v["wasm_udfs"] = udfs.status();
                    body = format!("{v}\n");
                }
            }
            ("200 OK", "application/json", body)
        }
        ("POST", "/savepoint") => {
            let to = query_param(query, "to");
            let savepoints = savepoints.clone();
            // A savepoint takes a while: answered on its own thread, so /status and /metrics
            // keep being served.
            std::thread::Builder::new()
                .name("control-savepoint".into())
                .spawn(move || {
                    let (status, body) = savepoint(to, savepoints);
                    respond(stream, status, "application/json", &body)
                })?;
            return Ok(());
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /status or /metrics (or POST /savepoint?to=PATH)\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /status, GET /metrics or POST /savepoint?to=PATH\n".to_string(),
        ),
    };
    respond(stream, status, content_type, &body)
}

fn respond(out: TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    respond_with(out, status, content_type, "", body)
}

fn respond_with(
    mut out: TcpStream,
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// Answers a refused request: 401 (with the scheme to use) or 403, and why, as JSON.
fn refuse(out: TcpStream, e: &AuthError) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": e.to_string() }).to_string() + "\n";
    let challenge = match e {
        AuthError::NoToken { .. } => "",
        _ => "WWW-Authenticate: Bearer realm=\"headwater\"\r\n",
    };
    respond_with(out, e.status(), "application/json", challenge, &body)
}

/// Reads the body of a POST (uploads): up to [`MAX_UPLOAD`] bytes, as long as it says.
fn read_body<R: std::io::Read>(
    reader: &mut R,
    request: &Request,
) -> Result<Vec<u8>, (&'static str, String)> {
    let error = |status, message: String| {
        (
            status,
            serde_json::json!({ "error": message }).to_string() + "\n",
        )
    };
    let len = match (request.method.as_str(), request.content_length) {
        ("POST", Some(n)) => n,
        ("POST", None) if request.path.ends_with("/versions") => {
            return Err(error(
                "411 Length Required",
                "send the module with a Content-Length".into(),
            ))
        }
        _ => 0,
    };
    if len > MAX_UPLOAD {
        return Err(error(
            "413 Payload Too Large",
            format!(
                "the module is {len} bytes, more than the {} MiB a Wasm UDF module may be",
                MAX_UPLOAD >> 20
            ),
        ));
    }
    let mut body = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(reader, len), &mut body)
        .map_err(|e| error("400 Bad Request", format!("cannot read the body: {e}")))?;
    if (body.len() as u64) < len {
        return Err(error(
            "400 Bad Request",
            format!("the body ended after {} of {len} bytes", body.len()),
        ));
    }
    Ok(body)
}

/// Asks the coordinator for a savepoint and waits for it: (HTTP status, JSON body).
fn savepoint(to: Option<String>, savepoints: SavepointSender) -> (&'static str, String) {
    let error = |message: &str| serde_json::json!({ "error": message }).to_string() + "\n";
    let Some(to) = to.filter(|t| !t.is_empty()) else {
        return (
            "400 Bad Request",
            error("say where: POST /savepoint?to=PATH (a new folder, or an s3:// prefix)"),
        );
    };
    let Some(savepoints) = savepoints else {
        return (
            "409 Conflict",
            error("checkpoints are off in this run, so it cannot take a savepoint"),
        );
    };
    let (reply, answer) = crossbeam_channel::bounded(1);
    if savepoints
        .send(crate::checkpoint::SavepointRequest { to, reply })
        .is_err()
    {
        return (
            "503 Service Unavailable",
            error("the run is ending; no more checkpoints"),
        );
    }
    match answer.recv_timeout(SAVEPOINT_WAIT) {
        Ok(Ok(info)) => (
            "200 OK",
            serde_json::json!({
                "checkpoint": info.from,
                "location": info.location,
                "files": info.files,
                "bytes": info.bytes,
            })
            .to_string()
                + "\n",
        ),
        Ok(Err(message)) => ("500 Internal Server Error", error(&message)),
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => (
            "504 Gateway Timeout",
            error("no checkpoint completed in time; see the run's log"),
        ),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => (
            "503 Service Unavailable",
            error("the run ended before the savepoint was taken"),
        ),
    }
}

/// The value of `name` in a URL query, percent-decoded.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn watermark_json(wm: i64) -> serde_json::Value {
    match wm {
        WATERMARK_START => serde_json::Value::Null,
        WATERMARK_END => serde_json::json!("+inf"),
        w => serde_json::json!(w),
    }
}

/// Where the records went (`Accounting`): the terms of the equation and what is in flight.
fn accounting_json(a: &crate::metrics::Accounting) -> serde_json::Value {
    serde_json::json!({
        "read": a.read,
        "replayed": a.replayed,
        "restored": a.restored,
        "made": a.made,
        "out": a.out,
        "filtered": a.filtered,
        "into_state": a.into_state,
        "dead": a.dead,
        "late": a.late,
        "dropped": a.dropped,
        "in_flight": a.in_flight(),
    })
}

fn status(info: &RunInfo, metrics: &Metrics, started: Instant) -> String {
    let t = metrics.snapshot();
    let c = metrics.checkpoint_stats();
    let body = serde_json::json!({
        "pipeline": info.pipeline,
        "state": if t.watermark == WATERMARK_END { "finishing" } else { "running" },
        "uptime_seconds": started.elapsed().as_secs_f64(),
        "parallelism": info.parallelism,
        "records_in": t.records_in,
        "records_out": t.records_out,
        "late": t.late,
        "dead_letters": t.dead_letters,
        "remediated": t.remediated,
        "remediation_dropped": t.remediation_dropped,
        "accounting": accounting_json(&t.accounting()),
        "watermark_ms": watermark_json(t.watermark),
        "watermark_lag_ms": t.lag().map(|l| l.as_millis() as u64),
        "backpressure_seconds": metrics.backpressure_seconds(),
        "checkpoints": {
            "completed": c.completed,
            "failed": c.failed,
            "last_id": c.last_id,
            "last_duration_ms": c.last_duration_ms,
            "last_state_bytes": c.last_state_bytes,
            "last_uploaded_bytes": c.last_uploaded_bytes,
            "last_files": c.last_files,
            "restored_from": c.restored_from,
        },
        "circuit_breakers": metrics.breakers.lock().map(|b| b.iter().map(|(udf, s)| (udf.clone(), serde_json::json!({
            "open": s.open.load(Ordering::Relaxed),
            "openings": s.openings.load(Ordering::Relaxed),
            "held_records": s.held.load(Ordering::Relaxed),
        }))).collect::<serde_json::Map<_, _>>()).unwrap_or_default(),
        "dead_letter_causes": metrics.causes().iter().map(|c| serde_json::json!({
            "fingerprint": c.fingerprint,
            "step": c.step,
            "error_type": c.error_type,
            "count": c.count,
            "first_failed_at": rfc3339_ms(c.first_ms),
            "last_failed_at": rfc3339_ms(c.last_ms),
        })).collect::<Vec<_>>(),
    });
    format!("{body}\n")
}

fn rfc3339_ms(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn serves_status_and_prometheus_metrics_and_stops_when_dropped() {
        let metrics = Arc::new(Metrics::new(1));
        metrics.records_in.store(42, Ordering::Relaxed);
        metrics.note_dead_letters("steps[0] udf \"f\"", 3);
        metrics.note_cause("9f2c", "decode", "decode", 1_700_000_001_000);
        metrics.note_cause("9f2c", "decode", "decode", 1_700_000_000_000);
        metrics.note_cause("77aa", "steps[0] udf f", "ValueError", 1_700_000_002_000);
        metrics.set_task_watermark(0, 1_000);
        metrics.max_event_time.store(3_500, Ordering::Relaxed);
        metrics.update_checkpoints(|c| {
            c.completed = 4;
            c.last_id = Some(4);
            c.last_duration_ms = 250;
            c.last_uploaded_bytes = 1024;
        });
        let server = ControlServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            RunInfo {
                pipeline: "p".into(),
                parallelism: 2,
            },
            metrics,
            None,
            None,
        )
        .expect("start");
        let addr = server.address();
        let status = get(addr, "/status");
        assert!(status.starts_with("HTTP/1.1 200 OK"), "{status}");
        let body = status.split("\r\n\r\n").nth(1).expect("body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["records_in"], 42);
        assert_eq!(v["dead_letters"], 3);
        // Nothing counted as ended yet: the 42 records read are all in flight.
        assert_eq!(v["accounting"]["read"], 42);
        assert_eq!(v["accounting"]["in_flight"], 42, "{v}");
        assert_eq!(v["watermark_ms"], 1000);
        assert_eq!(v["watermark_lag_ms"], 2500);
        assert_eq!(v["checkpoints"]["completed"], 4);
        assert_eq!(v["checkpoints"]["last_id"], 4);
        let causes = &v["dead_letter_causes"];
        assert_eq!(causes[0]["fingerprint"], "9f2c", "{v}");
        assert_eq!(causes[0]["count"], 2);
        assert_eq!(causes[0]["first_failed_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(causes[0]["last_failed_at"], "2023-11-14T22:13:21.000Z");
        assert_eq!(causes[1]["error_type"], "ValueError");
        let metrics = get(addr, "/metrics");
        assert!(metrics.contains("# TYPE headwater_records_in_total counter\nheadwater_records_in_total{pipeline=\"p\"} 42\n"), "{metrics}");
        assert!(
            metrics.contains("headwater_records_in_flight{pipeline=\"p\"} 42\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("headwater_watermark_lag_seconds{pipeline=\"p\"} 2.5\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("step=\"steps[0] udf \\\"f\\\"\"} 3"),
            "label values are escaped: {metrics}"
        );
        assert!(
            metrics.contains("headwater_dead_letters_by_cause_total{pipeline=\"p\",fingerprint=\"9f2c\",step=\"decode\",error_type=\"decode\"} 2\n")
                && metrics.contains("headwater_dead_letter_cause_first_failure_timestamp_seconds{pipeline=\"p\",fingerprint=\"9f2c\",step=\"decode\",error_type=\"decode\"} 1700000000\n")
                && metrics.contains("headwater_dead_letter_cause_last_failure_timestamp_seconds{pipeline=\"p\",fingerprint=\"77aa\",step=\"steps[0] udf f\",error_type=\"ValueError\"} 1700000002\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("headwater_checkpoints_completed_total{pipeline=\"p\"} 4\n")
                && metrics
                    .contains("headwater_checkpoint_last_duration_seconds{pipeline=\"p\"} 0.25\n")
                && metrics
                    .contains("headwater_checkpoint_last_uploaded_bytes{pipeline=\"p\"} 1024\n"),
            "{metrics}"
        );
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        drop(server);
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
            "the port is released"
        );
    }

    fn request(addr: SocketAddr, head: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "{head}\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn with_a_token_only_reading_is_open() {
        let token = ControlToken::new("t0ken", "test").expect("token");
        let info = RunInfo {
            pipeline: "p".into(),
            parallelism: 1,
        };
        let metrics = Arc::new(Metrics::new(1));
        let server = ControlServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            info,
            metrics,
            None,
            Some(token),
        )
        .expect("start");
        let addr = server.address();
        assert!(get(addr, "/status").starts_with("HTTP/1.1 200 OK"));
        let refused = request(addr, "POST /savepoint?to=x HTTP/1.1");
        assert!(
            refused.starts_with("HTTP/1.1 401 Unauthorized"),
            "{refused}"
        );
        assert!(refused.contains("WWW-Authenticate: Bearer"), "{refused}");
        assert!(
            refused.contains(r#"{"error":"this request needs `Authorization: Bearer <token>`"#),
            "{refused}"
        );
        let wrong = request(
            addr,
            "POST /savepoint?to=x HTTP/1.1\r\nAuthorization: Bearer t0kem",
        );
        assert!(
            wrong.contains("401") && wrong.contains("the bearer token is wrong"),
            "{wrong}"
        );
        // The right token gets through to the route (checkpoints are off here).
        let through = request(
            addr,
            "POST /savepoint?to=x HTTP/1.1\r\nauthorization: Bearer t0ken",
        );
        assert!(through.starts_with("HTTP/1.1 409"), "{through}");
        // Unknown mutating routes are checked too, before routing.
        let other = request(addr, "DELETE /anything HTTP/1.1");
        assert!(other.starts_with("HTTP/1.1 401"), "{other}");
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            query_param("x=1&to=%2Fbackups%2Fsave%20points+a", "to").as_deref(),
            Some("/backups/save points a")
        );
        assert_eq!(
            query_param("to=s3://bucket/p%zz%4", "to").as_deref(),
            Some("s3://bucket/p%zz%4")
        );
        assert_eq!(query_param("other=1", "to"), None);
    }
}
