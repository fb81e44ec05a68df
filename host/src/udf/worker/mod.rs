//! The worker runtime: user functions served by worker processes over gRPC (the protocol in
//! `proto/`), whatever language they are written in. The host starts and supervises the
//! workers itself (each language's [`Launcher`] says how to start one), or connects to workers
//! that already run elsewhere (a sidecar container) at a given endpoint.
//!
//! Each worker gets one long-lived `Process` stream; requests from all tasks share it (several
//! in flight), matched to their callers by `batch_id`. A task's batch is split into requests of
//! at most `batch_size` records, sent concurrently (round-robin over the workers) and put back
//! together in order, so per-key order is kept. A request that fails because the worker died,
//! hung past its timeout or closed the stream is resent to a restarted worker (with exponential
//! backoff and jitter), so a crash loses nothing; UDFs are expected to be deterministic and
//! their side effects are at-least-once. A supervisor task health-checks idle workers and
//! restarts the ones that exited or stopped answering.

mod codec;
mod connection;
mod options;
mod process;
mod requests;

use std::process::Child;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::proto;
use super::{
    start_error, AggregateInput, AggregateOp, AggregateOutcome, Completed, FunctionInfo,
    KeyedInput, KeyedOutcome, PendingCall, RecordOutcome, RuntimeError, UdfRuntime,
};
use crate::record::Record;
use crate::value::Value;
use codec::{
    accumulator_outcome, encode_aggregate, encode_keyed, encode_record, encode_value,
    keyed_outcome, outcome, result_outcome,
};
use connection::{handshake, open_stream, Address, Connection};
use headwater_sdk::{FunctionError, FunctionKind};
pub use options::{batching, SidecarSpec, WorkerOptions};
pub use process::Launcher;
use process::{socket_path, spawn_process};
use requests::{send_requests, InFlight};

pub(super) const PROTOCOL_VERSION: u32 = 1;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a worker killed by a signal while starting is started again before the UDF fails.
const STARTUP_RESPAWNS: u32 = 3;
/// Longest one connect-and-handshake attempt may take during start-up.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests a worker holds at once: one computing and one queued behind it, so a request's
/// timeout measures the worker, not a queue of other tasks' requests.
const IN_FLIGHT_PER_WORKER: usize = 2;
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request before the run fails (each failed attempt restarts the worker).
const MAX_ATTEMPTS: u32 = 6;
pub(super) const MAX_MESSAGE: usize = 64 << 20;
/// Most bytes of records in one request: well under [`MAX_MESSAGE`], so answers a few times
/// bigger than their records still fit.
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// The largest record sent at all (it goes alone in its request).
const MAX_RECORD_BYTES: usize = MAX_MESSAGE - (1 << 20);
/// Records failing their worker alone, one after another with no success between them, after
/// which the worker (not the records) is taken to be broken and the run fails.
const POISON_LIMIT: u32 = 3;

struct Worker {
    child: Option<Child>,
    connection: Connection,
    /// Bumped on every restart, so concurrent callers restart a broken worker only once.
    generation: u64,
    address: Address,
    /// What the worker said identifies its functions' code (empty if it did not say).
    code_version: String,
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
    spec: SidecarSpec,
    launcher: Arc<dyn Launcher>,
    workers: Vec<tokio::sync::Mutex<Worker>>,
    /// Per worker: permits for requests in flight.
    slots: Vec<tokio::sync::Semaphore>,
    next_worker: AtomicUsize,
    next_batch: AtomicU64,
    restarts: AtomicU64,
    /// Records dead-lettered for failing their worker alone, since the last success.
    poisoned_in_a_row: std::sync::atomic::AtomicU32,
    /// The code version the last started worker reported: a restart after a deploy runs the
    /// new code, and dead letters from then on name it.
    code_version: Mutex<String>,
}

/// A UDF runtime backed by worker processes (Python, Go, ...) speaking the worker protocol.
pub struct WorkerRuntime {
    shared: Arc<Shared>,
    functions: Vec<FunctionInfo>,
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
}

impl WorkerRuntime {
    /// Starts (or connects to) `spec.workers` workers, performs the handshake with each and
    /// starts their supervisor.
    pub fn start(
        udf: &str,
        spec: &SidecarSpec,
        launcher: Arc<dyn Launcher>,
    ) -> Result<WorkerRuntime, RuntimeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("udf-{}", launcher.runtime()))
            .enable_all()
            .build()
            .map_err(|e| {
                start_error(
                    launcher.noun(),
                    udf,
                    format!("cannot start the async runtime: {e}"),
                )
            })?;
        let mut workers = Vec::with_capacity(spec.workers);
        let mut functions = Vec::new();
        let mut code_version = String::new();
        for i in 0..spec.workers.max(1) {
            let address = match &spec.endpoint {
                Some(endpoint) => Address::Endpoint(endpoint.clone()),
                None => Address::Spawned(socket_path(udf, i)),
            };
            match rt.block_on(spawn_worker(udf, launcher.as_ref(), address, 0)) {
                Ok((worker, fns)) => {
                    functions = fns;
                    code_version.clone_from(&worker.code_version);
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
            launcher: launcher.clone(),
            slots,
            workers,
            next_worker: AtomicUsize::new(0),
            next_batch: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
            poisoned_in_a_row: std::sync::atomic::AtomicU32::new(0),
            code_version: Mutex::new(code_version),
        });
        rt.spawn(supervise(Arc::downgrade(&shared)));
        Ok(WorkerRuntime {
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

impl Drop for WorkerRuntime {
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

/// One record's outcome.
type Outcome<X> = Result<X, FunctionError>;

impl Shared {
    /// Sends one request, restarting the worker and resending until it succeeds.
    ///
    /// A request that fails is resent with the worker to itself; failing again it is cut in
    /// two halves sent one after the other: one record
    /// that crashes the worker (or whose answer is too big to send) then ends up alone, and
    /// after [`MAX_ATTEMPTS`] failures it fails by itself (to the DLQ) while the others go
    /// through. Three such records in a row with no success between them mean the worker is
    /// broken, not the records: the run fails.
    fn call<'a, X: Send + 'a>(
        &'a self,
        function: &'a str,
        op: i32,
        records: Vec<proto::Record>,
        decode: fn(proto::RecordResult) -> Outcome<X>,
    ) -> futures_util::future::BoxFuture<'a, Result<Vec<Outcome<X>>, RuntimeError>> {
        Box::pin(async move {
            let n = records.len();
            let mut request = proto::BatchRequest {
                batch_id: 0,
                function: function.to_string(),
                records,
                aggregate_op: op,
            };
            let index =
                self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len().max(1);
            let mut last_error = String::new();
            let mut restart_failed = false;
            for attempt in 0..MAX_ATTEMPTS {
                // Waiting for a slot is not counted against the timeout. A retry has the
                // worker to itself (every slot): when it fails, this request is the cause, not
                // another one in flight beside it (a record that crashes the worker must not
                // take innocent requests down with it into the bisection and the DLQ).
                let permits = if attempt == 0 {
                    1
                } else {
                    IN_FLIGHT_PER_WORKER as u32
                };
                let slot = self.slots[index].acquire_many(permits).await.map_err(|_| {
                    start_error(
                        self.launcher.noun(),
                        &self.udf,
                        "the runtime is shutting down".into(),
                    )
                })?;
                let (connection, generation) = {
                    let w = self.workers[index].lock().await;
                    (w.connection.clone(), w.generation)
                };
                request.batch_id = self.next_batch.fetch_add(1, Ordering::Relaxed);
                match connection.call(request.clone(), self.spec.timeout).await {
                    Ok(resp) if resp.results.len() == n => {
                        // The worker is done with it: the next request may go while this
                        // answer is decoded.
                        drop(slot);
                        self.poisoned_in_a_row.store(0, Ordering::Relaxed);
                        return Ok(resp.results.into_iter().map(decode).collect());
                    }
                    Ok(resp) => {
                        last_error = format!(
                            "the worker answered {} results for {n} records",
                            resp.results.len()
                        );
                    }
                    Err(e) => last_error = e,
                }
                drop(slot);
                tracing::warn!(udf = %self.udf, worker = index, attempt, records = n, error = %last_error,
                    "request failed; restarting the worker and resending");
                // A worker that fails to come back (killed again while starting, say) is
                // retried on the next attempt; only a run of failures gives up.
                restart_failed = false;
                if let Err(e) = self.restart(index, generation, attempt).await {
                    tracing::warn!(udf = %self.udf, worker = index, attempt, error = %e, "restart failed");
                    last_error = e.to_string();
                    restart_failed = true;
                }
                if attempt >= 1 && n > 1 && !restart_failed {
                    // One half after the other: sent together, a half that crashes the worker
                    // would fail the other half's request too.
                    let right = request.records.split_off(n / 2);
                    let left = std::mem::take(&mut request.records);
                    let mut out = self.call(function, op, left, decode).await?;
                    out.extend(self.call(function, op, right, decode).await?);
                    return Ok(out);
                }
            }
            let poisoned = self.poisoned_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 && !restart_failed && poisoned < POISON_LIMIT {
                tracing::warn!(udf = %self.udf, error = %last_error,
                    "a record failed its worker {MAX_ATTEMPTS} times; it goes to the dead-letter queue");
                return Ok(vec![Err(FunctionError::permanent(format!(
                    "the {} failed {MAX_ATTEMPTS} times on this record alone (crashed, hung or could not answer): {last_error}",
                    self.launcher.noun()
                )))]);
            }
            Err(RuntimeError::WorkerFailed {
                worker: self.launcher.noun().to_string(),
                udf: self.udf.clone(),
                attempts: MAX_ATTEMPTS,
                message: last_error,
            })
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
        tracing::warn!(udf = %self.udf, worker = index, attempt, "restarting {}", self.launcher.noun());
        let (fresh, _) = spawn_worker(
            &self.udf,
            self.launcher.as_ref(),
            worker.address.clone(),
            worker.generation + 1,
        )
        .await?;
        if let Ok(mut version) = self.code_version.lock() {
            version.clone_from(&fresh.code_version);
        }
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
                tracing::warn!(udf = %shared.udf, worker = index, %problem, "unhealthy worker");
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
    launcher: &dyn Launcher,
    address: Address,
    generation: u64,
) -> Result<(Worker, Vec<FunctionInfo>), RuntimeError> {
    let (mut child, mut stderr_tail) = match &address {
        Address::Spawned(socket) => {
            let (child, tail) = spawn_process(udf, launcher, socket)
                .map_err(|m| start_error(launcher.noun(), udf, m))?;
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
                            "the worker was killed while starting; starting it again"
                        );
                        tokio::time::sleep(restart_backoff(respawns, generation)).await;
                        let (fresh, tail) = spawn_process(udf, launcher, socket)
                            .map_err(|m| start_error(launcher.noun(), udf, m))?;
                        child = Some(fresh);
                        stderr_tail = tail;
                        started = Instant::now();
                        continue;
                    }
                }
                // Give the stderr thread a moment to collect the error text.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let tail = stderr_tail.lock().map(|t| t.join("\n")).unwrap_or_default();
                let hint = launcher
                    .exit_hint(&tail)
                    .map(|h| format!("\n{h}"))
                    .unwrap_or_default();
                return Err(start_error(
                    launcher.noun(),
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
                launcher.noun(),
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
        Err(start_error(launcher.noun(), udf, message))
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return fail(
            &mut child,
            format!(
                "the worker ({}) speaks protocol version {}, the host {PROTOCOL_VERSION}; {}",
                hello.worker,
                hello.protocol_version,
                launcher.upgrade_hint()
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
            code_version: hello.code_version.clone(),
        },
        functions,
    ))
}

impl UdfRuntime for WorkerRuntime {
    fn name(&self) -> &str {
        self.shared.launcher.runtime()
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

    fn runs_elsewhere(&self) -> bool {
        true
    }

    fn reads_source_text(&self) -> bool {
        true
    }

    fn code_version(&self) -> Option<String> {
        let version = self.shared.code_version.lock().ok()?;
        (!version.is_empty()).then(|| version.clone())
    }

    fn invoke_records(
        &self,
        function: &str,
        records: &[Record],
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        self.send(function, 0, records, encode_record, outcome)
    }

    fn submit(&self, function: &str, inputs: &[Record]) -> Box<dyn PendingCall> {
        let Some(rt) = &self.rt else {
            return Box::new(Completed(Err(self.shut_down())));
        };
        // Encoded here, in the caller's thread: no copy of the values is needed, and records
        // that still have their source text send it as it is.
        let records = inputs.iter().map(encode_record).collect();
        let shared = self.shared.clone();
        let name = function.to_string();
        let task =
            rt.spawn(async move { send_requests(&shared, &name, 0, records, outcome).await });
        Box::new(InFlight {
            task,
            rt: rt.handle().clone(),
            noun: self.shared.launcher.noun(),
            udf: self.shared.udf.clone(),
        })
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

impl WorkerRuntime {
    /// Sends `inputs` in requests (see [`send_requests`]) and waits for their outcomes.
    fn send<I, X: Send>(
        &self,
        function: &str,
        op: i32,
        inputs: &[I],
        encode: fn(&I) -> proto::Record,
        decode: fn(proto::RecordResult) -> Outcome<X>,
    ) -> Result<Vec<Outcome<X>>, RuntimeError> {
        let Some(rt) = &self.rt else {
            return Err(self.shut_down());
        };
        let records = inputs.iter().map(encode).collect();
        rt.block_on(send_requests(&self.shared, function, op, records, decode))
    }

    fn shut_down(&self) -> RuntimeError {
        start_error(
            self.shared.launcher.noun(),
            &self.shared.udf,
            "the runtime is shut down".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::requests::{plan_requests, RequestPlan};
    use super::*;

    #[test]
    fn requests_are_cut_by_records_and_bytes_and_oversized_records_are_not_sent() {
        // 4 records per request, 100 bytes per request, 150 bytes for one record.
        let plan = plan_requests(&[10, 10, 10, 10, 10, 60, 50, 200, 120, 10], 4, 100, 150);
        assert_eq!(
            plan,
            RequestPlan {
                requests: vec![0..4, 4..6, 6..7, 8..9, 9..10],
                too_large: vec![7],
            }
        );
        assert_eq!(
            plan_requests(&[], 4, 100, 150),
            RequestPlan {
                requests: vec![],
                too_large: vec![]
            }
        );
    }

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
