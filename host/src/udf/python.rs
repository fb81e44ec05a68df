//! The Python runtime: functions served by `python -m headwater.worker` sidecar processes
//! that the host starts and supervises, over gRPC on a Unix domain socket, or by workers that
//! already run elsewhere (a sidecar container) at a given endpoint.
//!
//! Each worker gets one long-lived `Process` stream; requests from all tasks share it (several
//! in flight), matched to their callers by `batch_id`. A task's batch is split into requests of
//! at most `batch_size` records, sent concurrently (round-robin over the workers) and put back
//! together in order, so per-key order is kept. A request that fails because the worker died,
//! hung past its timeout or closed the stream is resent to a restarted worker (with exponential
//! backoff and jitter), so a crash loses nothing; UDFs are expected to be deterministic and
//! their side effects are at-least-once. A supervisor task health-checks idle workers and
//! restarts the ones that exited or stopped answering.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use super::proto::{self, worker_client::WorkerClient};
use super::{
    outputs_from_json, AggregateInput, AggregateOp, AggregateOutcome, AggregateOutput,
    FunctionInfo, KeyedInput, KeyedOutcome, KeyedResult, RecordOutcome, RuntimeError, StateUpdate,
    UdfRuntime,
};
use crate::config::spec::PythonSpec;
use crate::value::Value;
use headwater_sdk::{ErrorClass, FunctionError, FunctionKind};

const PROTOCOL_VERSION: u32 = 1;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a worker killed by a signal while starting is started again before the UDF fails.
const STARTUP_RESPAWNS: u32 = 3;
/// Longest one connect-and-handshake attempt may take during start-up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests a worker holds at once: one computing and one queued behind it, so a request's
/// timeout measures the worker, not a queue of other tasks' requests.
const IN_FLIGHT_PER_WORKER: usize = 2;
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request before the run fails (each failed attempt restarts the worker).
const MAX_ATTEMPTS: u32 = 6;
const MAX_MESSAGE: usize = 64 << 20;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<proto::BatchResponse>>>>;

/// One live connection: the request side of the stream and the callers awaiting responses.
#[derive(Clone)]
struct Connection {
    tx: mpsc::Sender<proto::BatchRequest>,
    pending: Pending,
    client: WorkerClient<Channel>,
}

/// Where a worker listens.
#[derive(Clone, Debug)]
enum Address {
    /// A process this host started, on this Unix socket.
    Spawned(PathBuf),
    /// A worker someone else runs (`unix:/path` or `http://host:port`).
    Endpoint(String),
}

struct Worker {
    child: Option<Child>,
    connection: Connection,
    /// Bumped on every restart, so concurrent callers restart a broken worker only once.
    generation: u64,
    address: Address,
}

impl Worker {
    fn stop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Address::Spawned(socket) = &self.address {
            let _ = std::fs::remove_file(socket);
        }
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

/// What the runtime's tasks share with the supervisor.
struct Shared {
    udf: String,
    spec: PythonSpec,
    workers: Vec<tokio::sync::Mutex<Worker>>,
    /// Per worker: permits for requests in flight.
    slots: Vec<tokio::sync::Semaphore>,
    next_worker: AtomicUsize,
    next_batch: AtomicU64,
    restarts: AtomicU64,
}

/// A UDF runtime backed by Python worker processes.
pub struct PythonRuntime {
    shared: Arc<Shared>,
    functions: Vec<FunctionInfo>,
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
}

impl PythonRuntime {
    /// Starts (or connects to) `spec.workers` workers, performs the handshake with each and
    /// starts their supervisor.
    pub fn start(udf: &str, spec: &PythonSpec) -> Result<PythonRuntime, RuntimeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("udf-python")
            .enable_all()
            .build()
            .map_err(|e| start_error(udf, format!("cannot start the async runtime: {e}")))?;
        let mut workers = Vec::with_capacity(spec.workers);
        let mut functions = Vec::new();
        for i in 0..spec.workers.max(1) {
            let address = match &spec.endpoint {
                Some(endpoint) => Address::Endpoint(endpoint.clone()),
                None => Address::Spawned(socket_path(udf, i)),
            };
            match rt.block_on(spawn_worker(udf, spec, address, 0)) {
                Ok((worker, fns)) => {
                    functions = fns;
                    workers.push(tokio::sync::Mutex::new(worker));
                }
                Err(e) => {
                    for w in &mut workers {
                        w.get_mut().stop();
                    }
                    return Err(e);
                }
            }
        }
        let slots = workers
            .iter()
            .map(|_| tokio::sync::Semaphore::new(IN_FLIGHT_PER_WORKER))
            .collect();
        let shared = Arc::new(Shared {
            udf: udf.to_string(),
            spec: spec.clone(),
            slots,
            workers,
            next_worker: AtomicUsize::new(0),
            next_batch: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
        });
        rt.spawn(supervise(Arc::downgrade(&shared)));
        Ok(PythonRuntime {
            shared,
            functions,
            rt: Some(rt),
        })
    }

    /// Worker restarts so far.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }
}

impl Drop for PythonRuntime {
    fn drop(&mut self) {
        // Stop the supervisor and the stream tasks first, so no lock is held below.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        for w in &self.shared.workers {
            if let Ok(mut w) = w.try_lock() {
                w.stop();
            }
        }
    }
}

fn socket_path(udf: &str, index: usize) -> PathBuf {
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

fn start_error(udf: &str, message: String) -> RuntimeError {
    RuntimeError::WorkerStart {
        udf: udf.to_string(),
        message,
    }
}

impl Shared {
    /// Sends one request, restarting the worker and resending until it succeeds.
    ///
    /// Encoding and decoding happen inside this future, so with several requests in flight
    /// the host prepares the next request and reads the last answer while workers compute.
    async fn call<I, T>(
        &self,
        function: &str,
        op: i32,
        chunk: &[I],
        encode: fn(&I) -> proto::Record,
        decode: fn(proto::RecordResult) -> T,
    ) -> Result<Vec<T>, RuntimeError> {
        let records: Vec<proto::Record> = chunk.iter().map(encode).collect();
        let n = records.len();
        let mut request = proto::BatchRequest {
            batch_id: 0,
            function: function.to_string(),
            records,
            aggregate_op: op,
        };
        let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1);
        let mut last_error = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            // Waiting for a slot is not counted against the timeout.
            let _slot = self.slots[index]
                .acquire()
                .await
                .map_err(|_| start_error(&self.udf, "the runtime is shutting down".into()))?;
            let (connection, generation) = {
                let w = self.workers[index].lock().await;
                (w.connection.clone(), w.generation)
            };
            request.batch_id = self.next_batch.fetch_add(1, Ordering::Relaxed);
            match connection.call(request.clone(), self.spec.timeout).await {
                Ok(resp) if resp.results.len() == n => {
                    return Ok(resp.results.into_iter().map(decode).collect())
                }
                Ok(resp) => {
                    last_error = format!(
                        "the worker answered {} results for {n} records",
                        resp.results.len()
                    );
                }
                Err(e) => last_error = e,
            }
            tracing::warn!(udf = %self.udf, worker = index, attempt, error = %last_error,
                "request failed; restarting the Python worker and resending");
            // A worker that fails to come back (killed again while starting, say) is retried
            // on the next attempt; only a run of failures gives up.
            if let Err(e) = self.restart(index, generation, attempt).await {
                tracing::warn!(udf = %self.udf, worker = index, attempt, error = %e, "restart failed");
                last_error = e.to_string();
            }
        }
        Err(RuntimeError::WorkerFailed {
            udf: self.udf.clone(),
            attempts: MAX_ATTEMPTS,
            message: last_error,
        })
    }

    /// Replaces worker `index` unless someone already did since `seen_generation`.
    async fn restart(
        &self,
        index: usize,
        seen_generation: u64,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let Some(slot) = self.workers.get(index) else {
            return Ok(());
        };
        let mut worker = slot.lock().await;
        if worker.generation != seen_generation {
            return Ok(()); // another caller already restarted it
        }
        worker.stop();
        tokio::time::sleep(restart_backoff(attempt, seen_generation)).await;
        tracing::warn!(udf = %self.udf, worker = index, attempt, "restarting Python worker");
        let (fresh, _) = spawn_worker(
            &self.udf,
            &self.spec,
            worker.address.clone(),
            worker.generation + 1,
        )
        .await?;
        *worker = fresh;
        self.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Exponential backoff (50 ms doubling, capped at 3.2 s) with jitter in [50%, 100%].
fn restart_backoff(attempt: u32, seed: u64) -> Duration {
    let base = 50u64 << attempt.min(6);
    let mut x = (seed ^ u64::from(attempt)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 29;
    Duration::from_millis(base / 2 + x % (base / 2 + 1))
}

/// Restarts workers whose process exited or that stop answering health checks, so a crash
/// between batches is repaired before the next batch needs the worker.
async fn supervise(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for index in 0..shared.workers.len() {
            let (generation, exited, mut client) = {
                let mut w = shared.workers[index].lock().await;
                (w.generation, w.exited(), w.connection.client.clone())
            };
            let problem = if exited {
                Some("the worker process exited".to_string())
            } else {
                match tokio::time::timeout(HEALTH_TIMEOUT, client.health(proto::HealthRequest {}))
                    .await
                {
                    Ok(Ok(resp)) if resp.get_ref().serving => None,
                    Ok(Ok(_)) => Some("the worker reports it is not serving".into()),
                    Ok(Err(status)) => Some(format!("health check failed: {}", status.message())),
                    Err(_) => Some(format!("no health answer within {HEALTH_TIMEOUT:?}")),
                }
            };
            if let Some(problem) = problem {
                tracing::warn!(udf = %shared.udf, worker = index, %problem, "unhealthy Python worker");
                if let Err(e) = shared.restart(index, generation, 0).await {
                    tracing::error!(udf = %shared.udf, worker = index, error = %e, "restart failed");
                }
            }
        }
    }
}

/// Starts (or reaches) one worker, waits until it answers the handshake, opens its stream.
async fn spawn_worker(
    udf: &str,
    spec: &PythonSpec,
    address: Address,
    generation: u64,
) -> Result<(Worker, Vec<FunctionInfo>), RuntimeError> {
    let (mut child, mut stderr_tail) = match &address {
        Address::Spawned(socket) => {
            let (child, tail) = spawn_process(udf, spec, socket)?;
            (Some(child), tail)
        }
        Address::Endpoint(_) => (None, Arc::new(Mutex::new(Vec::new()))),
    };
    let mut started = Instant::now();
    let mut last_error = String::from("no answer yet");
    let mut respawns = 0;
    let (client, hello) = loop {
        if let Some(c) = &mut child {
            if let Ok(Some(status)) = c.try_wait() {
                // Killed by a signal while starting (the OOM killer, an operator, a chaos test):
                // not a problem of the code or the environment, so start it again, a few times.
                if let (Some(signal), Address::Spawned(socket)) = (
                    std::os::unix::process::ExitStatusExt::signal(&status),
                    &address,
                ) {
                    if respawns < STARTUP_RESPAWNS {
                        respawns += 1;
                        tracing::warn!(
                            udf,
                            signal,
                            attempt = respawns,
                            "the Python worker was killed while starting; starting it again"
                        );
                        tokio::time::sleep(restart_backoff(respawns, generation)).await;
                        let (fresh, tail) = spawn_process(udf, spec, socket)?;
                        child = Some(fresh);
                        stderr_tail = tail;
                        started = Instant::now();
                        continue;
                    }
                }
                // Give the stderr thread a moment to collect the error text.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let tail = stderr_tail.lock().map(|t| t.join("\n")).unwrap_or_default();
                let hint = if tail.contains("No module named 'headwater'") {
                    "\nthe interpreter lacks the Headwater SDK: `pip install ./sdk-python` into it, \
                     or point the udf's `python:` (or HEADWATER_PYTHON) at an environment that has it"
                } else {
                    ""
                };
                return Err(start_error(
                    udf,
                    format!("the worker exited ({status}) before it was ready:\n{tail}{hint}"),
                ));
            }
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            if let Some(c) = &mut child {
                let _ = c.kill();
                let _ = c.wait();
            }
            let at = match &address {
                Address::Spawned(s) => s.display().to_string(),
                Address::Endpoint(e) => e.clone(),
            };
            return Err(start_error(
                udf,
                format!("no worker answered on {at} within {STARTUP_TIMEOUT:?} ({last_error})"),
            ));
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, handshake(&address)).await {
            Ok(Ok(done)) => break done,
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = format!("no handshake answer within {ATTEMPT_TIMEOUT:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let fail = |child: &mut Option<Child>, message: String| {
        if let Some(c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        Err(start_error(udf, message))
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return fail(
            &mut child,
            format!(
                "the worker ({}) speaks protocol version {}, the host {PROTOCOL_VERSION}; \
                 install the SDK that matches this host (`pip install ./sdk-python`)",
                hello.worker, hello.protocol_version
            ),
        );
    }
    let functions = hello
        .functions
        .iter()
        .filter_map(|f| {
            let kind = match proto::FunctionKind::try_from(f.kind).ok()? {
                proto::FunctionKind::Map => FunctionKind::Map,
                proto::FunctionKind::Filter => FunctionKind::Filter,
                proto::FunctionKind::FlatMap => FunctionKind::FlatMap,
                proto::FunctionKind::KeyedProcess => FunctionKind::KeyedProcess,
                proto::FunctionKind::WindowAggregate => FunctionKind::WindowAggregate,
                _ => return None,
            };
            Some(FunctionInfo {
                name: f.name.clone(),
                kind,
            })
        })
        .collect();
    let connection = match open_stream(client).await {
        Ok(c) => c,
        Err(e) => return fail(&mut child, e),
    };
    Ok((
        Worker {
            child,
            connection,
            generation,
            address,
        },
        functions,
    ))
}

type StderrTail = Arc<Mutex<Vec<String>>>;

/// Starts `python -m headwater.worker`, forwarding its stderr (prints, warnings, tracebacks)
/// with a `[udf NAME]` prefix and keeping the last lines for error messages.
fn spawn_process(
    udf: &str,
    spec: &PythonSpec,
    socket: &std::path::Path,
) -> Result<(Child, StderrTail), RuntimeError> {
    let interpreter = spec
        .interpreter
        .clone()
        .or_else(|| std::env::var_os("HEADWATER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let _ = std::fs::remove_file(socket);
    let mut child = Command::new(&interpreter)
        .args([
            "-m",
            "headwater.worker",
            "--module",
            &spec.module,
            "--socket",
        ])
        .arg(socket)
        .arg("--path")
        .arg(&spec.path)
        // The worker exits when this process is gone, even if it dies before the worker
        // got as far as looking at its parent.
        .env("HEADWATER_HOST_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            start_error(
                udf,
                format!(
                    "cannot start `{}`: {e}; set `python:` in the udf, or HEADWATER_PYTHON, to \
                     an interpreter where `pip install ./sdk-python` was run",
                    interpreter.display()
                ),
            )
        })?;
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

/// Connects and performs the handshake.
async fn handshake(
    address: &Address,
) -> Result<(WorkerClient<Channel>, proto::HandshakeResponse), String> {
    let channel = match address {
        Address::Spawned(socket) => {
            if !socket.exists() {
                return Err("the socket does not exist yet".into());
            }
            connect_unix(socket.clone()).await
        }
        Address::Endpoint(e) => match e.strip_prefix("unix:") {
            Some(path) => connect_unix(PathBuf::from(path)).await,
            None => match Endpoint::try_from(e.clone()) {
                Ok(ep) => ep.connect_timeout(ATTEMPT_TIMEOUT).connect().await,
                Err(err) => return Err(format!("bad endpoint `{e}`: {err}")),
            },
        },
    }
    .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = WorkerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let request = proto::HandshakeRequest {
        protocol_version: PROTOCOL_VERSION,
        host_version: env!("CARGO_PKG_VERSION").into(),
    };
    let hello = client
        .handshake(request)
        .await
        .map_err(|e| format!("handshake failed: {}", e.message()))?;
    Ok((client, hello.into_inner()))
}

async fn connect_unix(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// Opens the `Process` stream and a task that routes responses to their callers. When the
/// stream ends, every waiting caller's sender is dropped, which they see as a failure.
///
/// The stream is opened inside the task: a gRPC server may send its response headers only
/// with its first response, so waiting for them before sending a request would deadlock.
async fn open_stream(client: WorkerClient<Channel>) -> Result<Connection, String> {
    let (tx, rx) = mpsc::channel::<proto::BatchRequest>(64);
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let routes = pending.clone();
    let mut streaming = client.clone();
    tokio::spawn(async move {
        match streaming
            .process(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(response) => {
                let mut inbound = response.into_inner();
                while let Ok(Some(resp)) = inbound.message().await {
                    let waiter = routes
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&resp.batch_id));
                    if let Some(w) = waiter {
                        let _ = w.send(resp);
                    }
                }
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), "the Process stream could not be opened");
            }
        }
        if let Ok(mut p) = routes.lock() {
            p.clear();
        }
    });
    Ok(Connection {
        tx,
        pending,
        client,
    })
}

impl Connection {
    async fn call(
        &self,
        request: proto::BatchRequest,
        timeout: Duration,
    ) -> Result<proto::BatchResponse, String> {
        let (done, wait) = oneshot::channel();
        let id = request.batch_id;
        self.pending
            .lock()
            .map_err(|_| "lock poisoned".to_string())?
            .insert(id, done);
        let sent = tokio::time::timeout(timeout, self.tx.send(request)).await;
        let result = match sent {
            Ok(Ok(())) => match tokio::time::timeout(timeout, wait).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(_)) => Err("the worker closed the stream (it crashed or was killed)".into()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            },
            Ok(Err(_)) => Err("the worker's stream is closed".into()),
            Err(_) => Err(format!("could not send within {timeout:?}")),
        };
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        result
    }
}

fn outcome(result: proto::RecordResult) -> RecordOutcome {
    if let Some(err) = result.error {
        let class = match proto::ErrorClass::try_from(err.class) {
            Ok(proto::ErrorClass::Transient) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        let mut e = FunctionError::permanent(err.message);
        e.class = class;
        if !err.traceback.is_empty() {
            e.detail = Some(err.traceback);
        }
        return Err(e);
    }
    outputs_from_json(&result.outputs)
}

impl UdfRuntime for PythonRuntime {
    fn name(&self) -> &str {
        "python"
    }

    fn functions(&self) -> Vec<FunctionInfo> {
        self.functions.clone()
    }

    fn invoke(
        &self,
        function: &str,
        inputs: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        self.send(function, 0, &inputs, encode_value, outcome)
    }

    fn invoke_keyed(
        &self,
        function: &str,
        inputs: Vec<KeyedInput>,
    ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
        self.send(function, 0, &inputs, encode_keyed, keyed_outcome)
    }

    fn invoke_aggregate(
        &self,
        function: &str,
        op: AggregateOp,
        inputs: Vec<AggregateInput>,
    ) -> Result<Vec<AggregateOutcome>, RuntimeError> {
        let (code, decode): (
            proto::AggregateOp,
            fn(proto::RecordResult) -> AggregateOutcome,
        ) = match op {
            AggregateOp::Create => (proto::AggregateOp::Create, accumulator_outcome),
            AggregateOp::Add => (proto::AggregateOp::Add, accumulator_outcome),
            AggregateOp::Merge => (proto::AggregateOp::Merge, accumulator_outcome),
            AggregateOp::Result => (proto::AggregateOp::Result, result_outcome),
        };
        self.send(function, code as i32, &inputs, encode_aggregate, decode)
    }
}

fn encode_aggregate(i: &AggregateInput) -> proto::Record {
    proto::Record {
        accumulators: i.accumulators.clone(),
        values: i.values.iter().map(json_bytes).collect(),
        ..Default::default()
    }
}

fn accumulator_outcome(result: proto::RecordResult) -> AggregateOutcome {
    let accumulator = result.accumulator.clone();
    outcome(result)?;
    Ok(AggregateOutput::Accumulator(accumulator))
}

fn result_outcome(result: proto::RecordResult) -> AggregateOutcome {
    let mut values = outcome(result)?;
    match values.pop() {
        Some(v) if values.is_empty() => Ok(AggregateOutput::Result(v)),
        _ => Err(FunctionError::permanent(
            "a window aggregate's result must be exactly one value",
        )),
    }
}

fn encode_value(v: &Value) -> proto::Record {
    proto::Record {
        value: json_bytes(v),
        ..Default::default()
    }
}

fn encode_keyed(i: &KeyedInput) -> proto::Record {
    proto::Record {
        value: i.value.as_ref().map(json_bytes).unwrap_or_default(),
        key: json_bytes(&i.key),
        event_time: i.time,
        state: i.state.clone(),
        timer: i.timer,
        ..Default::default()
    }
}

fn json_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    v.write_json(&mut out);
    out
}

fn keyed_outcome(result: proto::RecordResult) -> KeyedOutcome {
    let state = if result.clear_state {
        StateUpdate::Clear
    } else {
        match &result.new_state {
            Some(bytes) => StateUpdate::Set(bytes.clone()),
            None => StateUpdate::Keep,
        }
    };
    let timers = result.timers.clone();
    let outputs = outcome(result)?;
    Ok(KeyedResult {
        outputs,
        state,
        timers,
    })
}

impl PythonRuntime {
    /// Sends `inputs` in requests of at most `batch_size`, concurrently over the workers,
    /// and returns the results in input order.
    fn send<I, T>(
        &self,
        function: &str,
        op: i32,
        inputs: &[I],
        encode: fn(&I) -> proto::Record,
        decode: fn(proto::RecordResult) -> T,
    ) -> Result<Vec<T>, RuntimeError> {
        let Some(rt) = &self.rt else {
            return Err(start_error(
                &self.shared.udf,
                "the runtime is shut down".into(),
            ));
        };
        let shared = &self.shared;
        let size = shared.spec.batch_size.max(1);
        let results = rt.block_on(futures_util::future::join_all(
            inputs
                .chunks(size)
                .map(|chunk| shared.call(function, op, chunk, encode, decode)),
        ));
        let mut out = Vec::with_capacity(inputs.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_grows_and_stays_jittered_within_bounds() {
        for attempt in 0..10 {
            let base = 50u64 << attempt.min(6);
            for seed in 0..20 {
                let d = restart_backoff(attempt, seed).as_millis() as u64;
                assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d} ms");
            }
        }
        let distinct: std::collections::HashSet<_> =
            (0..20).map(|s| restart_backoff(3, s)).collect();
        assert!(distinct.len() > 5, "jitter spreads restarts: {distinct:?}");
    }

    #[test]
    fn socket_paths_are_safe_and_distinct() {
        let a = socket_path("my udf/../x", 0);
        let b = socket_path("my udf/../x", 1);
        assert_ne!(a, b);
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(!name.contains('/') && !name.contains(' '), "{name}");
    }
}
