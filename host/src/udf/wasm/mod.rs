//! The Wasm runtime (`runtime: wasm`): functions compiled to WebAssembly, run inside the host
//! by Wasmtime, sandboxed.
//!
//! A module is checked and compiled once (the compiled code is cached on disk, [`engine`]);
//! each task calling it gets an instance of its own from a pool, and a batch is **one guest
//! call**: the records go into the instance's linear memory as length-prefixed JSON, the
//! results come back the same way, one per record, with an error class and message for a
//! record that failed ([`codec`], docs/wasm-abi.md). An instance is bounded in memory and
//! interrupted at its call's deadline; when a call traps or times out, the instance is thrown
//! away and the batch is cut in halves that run again in fresh instances, until the records
//! that fail alone are found: they fail with the trap's message (a timeout is transient, so
//! the operator retries it; a trap is permanent), and the rest of the batch goes through.
//!
//! The module can be replaced while the pipeline runs ([`WasmRuntime::replace_module`]): a
//! batch runs entirely on one version, and instances of the old version are dropped as they
//! come back to the pool.

mod cache_limit;
mod codec;
mod engine;
mod instance;
mod plugin;
mod shadow;
pub mod store;
pub mod versions;
mod wasi;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::{
    start_error, FunctionError, FunctionInfo, FunctionKind, KeyedInput, KeyedOutcome,
    RecordOutcome, RuntimeError, UdfRuntime,
};
use crate::record::Record;
use crate::value::Value;
use codec::{Malformed, RecordInput};
use instance::{Failure, Instance, Limits, Loaded};

/// How start-up errors name this runtime.
const WORKER: &str = "Wasm module";

pub use engine::{cache_dir, sha256_hex};
pub use instance::{ABI_VERSION, MAX_MODULE_BYTES};
pub use plugin::{Wasm, WasmSpec};
pub use shadow::{Difference, ShadowReport};

/// Records failing alone in a row (trap or timeout), with no success between them, after
/// which the rest of the batch is not run this time (they fail as transient, so the operator
/// tries them again): a module that fails every record costs a few calls, not one per record.
const POISON_LIMIT: u32 = 3;
/// Most bytes of records in one guest call (and at most a quarter of the memory limit).
const MAX_CALL_BYTES: usize = 16 << 20;

thread_local! {
    /// The newest checkpoint barrier the task on this thread has passed (0: none).
    static PASSED_BARRIER: Cell<u64> = const { Cell::new(0) };
}

/// Tells the Wasm runtimes that the task on this thread passed checkpoint `id`'s barrier:
/// the records it processes from now on belong to the next checkpoint, and run on the
/// version armed for it, if any ([`WasmRuntime::arm`]). Tasks call it once the records held
/// back for the barrier went out.
pub fn passed_barrier(id: u64) {
    PASSED_BARRIER.with(|p| p.set(id));
}

/// A checked and compiled module version, not running yet.
pub struct Staged {
    version: Arc<Version>,
    first: Mutex<Option<Instance>>,
}

impl Staged {
    /// The module's SHA-256.
    pub fn digest(&self) -> &str {
        &self.version.loaded.digest
    }
}

/// One version of the module: what was loaded, numbered.
struct Version {
    generation: u64,
    loaded: Loaded,
}

/// An idle instance and the version it belongs to.
struct Idle {
    generation: u64,
    instance: Instance,
}

/// A UDF runtime running the functions of one Wasm module.
pub struct WasmRuntime {
    udf: Arc<str>,
    spec: WasmSpec,
    /// The versions in use, each with the checkpoint barrier after which it runs (0: from
    /// the start), oldest first: a task runs the newest one whose barrier it has passed
    /// ([`passed_barrier`]), so each checkpoint's output comes from one version.
    versions: RwLock<Vec<(u64, Arc<Version>)>>,
    /// A candidate version run beside the active one, its results compared, not emitted.
    shadow: RwLock<Option<Arc<shadow::Shadow>>>,
    idle: Mutex<Vec<Idle>>,
    next_generation: AtomicU64,
    /// Instances thrown away after a failed call.
    replaced: AtomicU64,
    /// Instances checked out now, and the most ever at once: the pool keeps no more idle
    /// instances than that (retries after a failure make instances of their own).
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

/// Mutable per-invocation bookkeeping of the poison limit.
struct Run {
    failed_in_a_row: u32,
    last_failure: Option<FunctionError>,
}

impl WasmRuntime {
    /// Loads the module the UDF names.
    pub fn start(udf: &str, spec: &WasmSpec) -> Result<WasmRuntime, RuntimeError> {
        let bytes = read_module(udf, spec)?;
        Self::from_bytes(udf, &bytes, spec)
    }

    /// Loads a module from its bytes (`spec.module` only names it in messages).
    pub fn from_bytes(
        udf: &str,
        bytes: &[u8],
        spec: &WasmSpec,
    ) -> Result<WasmRuntime, RuntimeError> {
        let name: Arc<str> = Arc::from(udf);
        let (loaded, first) = Loaded::load(&name, bytes, limits(spec))
            .map_err(|m| start_error(WORKER, udf, format!("{}: {m}", spec.module.display())))?;
        tracing::info!(udf, module = %spec.module.display(), digest = %loaded.digest, sdk = %loaded.sdk,
            functions = loaded.functions.len(), "Wasm module loaded");
        Ok(WasmRuntime {
            udf: name,
            spec: spec.clone(),
            versions: RwLock::new(vec![(
                0,
                Arc::new(Version {
                    generation: 1,
                    loaded,
                }),
            )]),
            shadow: RwLock::new(None),
            idle: Mutex::new(vec![Idle {
                generation: 1,
                instance: first,
            }]),
            next_generation: AtomicU64::new(2),
            replaced: AtomicU64::new(0),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(1),
        })
    }

    /// Replaces the module with `bytes` for every batch that starts from now on, after
    /// checking it like at start and that it offers each of `uses` with the same kind. Batches
    /// already running finish on the old version. Returns the new module's SHA-256.
    ///
    /// For a run with checkpoints, [`Self::stage`] and [`Self::arm`] swap at a checkpoint
    /// boundary instead, so each checkpoint's output comes from one version.
    pub fn replace_module(
        &self,
        bytes: &[u8],
        uses: &[FunctionInfo],
    ) -> Result<String, RuntimeError> {
        let staged = self.stage(bytes, uses)?;
        let digest = staged.digest().to_string();
        self.install(staged)?;
        Ok(digest)
    }

    /// Checks and compiles a new version of the module (like at start, and that it offers
    /// each of `uses` with the same kind) without running it yet.
    pub fn stage(&self, bytes: &[u8], uses: &[FunctionInfo]) -> Result<Staged, RuntimeError> {
        let (loaded, first) = Loaded::load(&self.udf, bytes, limits(&self.spec))
            .map_err(|m| start_error(WORKER, &self.udf, format!("the new module: {m}")))?;
        for used in uses {
            super::check_function(&Described(&loaded.functions), &used.name, used.kind)?;
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        Ok(Staged {
            version: Arc::new(Version { generation, loaded }),
            first: Mutex::new(Some(first)),
        })
    }

    /// Runs `staged` for every batch from now on, on every thread (the versions before it
    /// are dropped).
    pub fn install(&self, staged: Staged) -> Result<(), RuntimeError> {
        let digest = staged.digest().to_string();
        let old = {
            let mut versions = self.versions.write().map_err(|_| self.poisoned())?;
            std::mem::replace(&mut *versions, vec![(0, staged.version.clone())])
        };
        self.pool_first(&staged)?;
        let from = old.last().map(|(_, v)| v.loaded.digest.clone());
        tracing::info!(udf = %self.udf, from = from.as_deref().unwrap_or(""), to = %digest, "Wasm module replaced");
        Ok(())
    }

    /// Runs `staged` for the records a task processes after it passed checkpoint `barrier`'s
    /// barrier (no task may have passed it yet: the coordinator arms versions just before it
    /// asks for the barrier).
    pub fn arm(&self, staged: Staged, barrier: u64) -> Result<(), RuntimeError> {
        {
            let mut versions = self.versions.write().map_err(|_| self.poisoned())?;
            versions.retain(|(after, _)| *after < barrier);
            versions.push((barrier, staged.version.clone()));
        }
        self.pool_first(&staged)?;
        tracing::info!(udf = %self.udf, to = %staged.digest(), after_checkpoint = barrier, "Wasm module version armed");
        Ok(())
    }

    /// Runs `staged` beside the active version on the same records (map, filter and flat_map
    /// calls), comparing results without emitting them; `None` stops the shadow run.
    pub fn set_shadow(&self, staged: Option<Staged>) -> Result<(), RuntimeError> {
        let shadow = staged.map(|s| Arc::new(shadow::Shadow::new(s.version)));
        if let Some(s) = &shadow {
            tracing::info!(udf = %self.udf, candidate = %s.version.loaded.digest, "Wasm shadow run started");
        }
        *self.shadow.write().map_err(|_| self.poisoned())? = shadow;
        Ok(())
    }

    /// The shadow run's counts so far, if one runs.
    pub fn shadow_report(&self) -> Option<ShadowReport> {
        self.shadow
            .read()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.report()))
    }

    /// True while a shadow run is on.
    fn shadowing(&self) -> bool {
        self.shadow.read().ok().is_some_and(|s| s.is_some())
    }

    /// Runs the shadow version, if any, on a copy of `inputs`, after the active one.
    fn shadow_call<I: Clone + shadow::Shown, T: shadow::Shown + shadow::Same>(
        &self,
        function: &str,
        inputs: Vec<I>,
        active: &[Result<T, FunctionError>],
        codec: &Codec<I, T>,
        keyed: bool,
    ) {
        let Some(shadow) = self.shadow.read().ok().and_then(|s| s.clone()) else {
            return;
        };
        let candidate = self
            .index(&shadow.version, function, keyed)
            .ok()
            .and_then(|(index, _)| {
                let mut run = Run {
                    failed_in_a_row: 0,
                    last_failure: None,
                };
                self.run(
                    &shadow.version,
                    index,
                    inputs.clone(),
                    codec,
                    &mut run,
                    false,
                )
                .ok()
            });
        shadow.compare(function, &inputs, active, candidate);
    }

    /// Every task passed checkpoint `barrier`'s barrier: versions no task runs any more go.
    pub fn prune(&self, barrier: u64) {
        if let Ok(mut versions) = self.versions.write() {
            let current = versions
                .iter()
                .rposition(|(after, _)| *after <= barrier)
                .unwrap_or(0);
            versions.drain(..current);
        }
    }

    /// The SHA-256 of the module tasks run after checkpoint `barrier`'s barrier.
    pub fn digest_after(&self, barrier: u64) -> String {
        self.versions
            .read()
            .ok()
            .and_then(|v| {
                v.iter()
                    .rev()
                    .find(|(after, _)| *after <= barrier)
                    .map(|(_, v)| v.loaded.digest.clone())
            })
            .unwrap_or_default()
    }

    fn pool_first(&self, staged: &Staged) -> Result<(), RuntimeError> {
        let live: Vec<u64> = self
            .versions
            .read()
            .map_err(|_| self.poisoned())?
            .iter()
            .map(|(_, v)| v.generation)
            .collect();
        let stale = {
            let mut idle = self.idle.lock().map_err(|_| self.poisoned())?;
            let (keep, stale): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| live.contains(&i.generation));
            *idle = keep;
            if let Some(instance) = staged.first.lock().ok().and_then(|mut f| f.take()) {
                idle.push(Idle {
                    generation: staged.version.generation,
                    instance,
                });
            }
            stale
        };
        drop(stale);
        Ok(())
    }

    /// The SHA-256 of the newest version (the one in use, or armed to be at the next
    /// checkpoint).
    pub fn module_digest(&self) -> String {
        self.versions
            .read()
            .ok()
            .and_then(|v| v.last().map(|(_, v)| v.loaded.digest.clone()))
            .unwrap_or_default()
    }

    /// The SHA-256 of the version this thread runs now.
    #[cfg(test)]
    pub(crate) fn running_digest(&self) -> String {
        self.version()
            .map(|v| v.loaded.digest.clone())
            .unwrap_or_default()
    }

    /// Instances thrown away after a trap or a timeout so far.
    pub fn instances_replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Idle instances in the pool.
    #[cfg(test)]
    fn idle_instances(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    fn poisoned(&self) -> RuntimeError {
        RuntimeError::WorkerFailed {
            worker: "Wasm runtime".into(),
            udf: self.udf.to_string(),
            attempts: 1,
            message: "a thread panicked while holding the runtime's lock".into(),
        }
    }

    /// The version this thread runs: the newest whose barrier it has passed.
    fn version(&self) -> Result<Arc<Version>, RuntimeError> {
        let passed = PASSED_BARRIER.with(Cell::get);
        let versions = self.versions.read().map_err(|_| self.poisoned())?;
        versions
            .iter()
            .rev()
            .find(|(after, _)| *after <= passed)
            .or_else(|| versions.first())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.poisoned())
    }

    /// An idle instance of `version`, or a new one (always, when `fresh`). Give it back with
    /// [`Self::release`].
    fn checkout(&self, version: &Version, fresh: bool) -> Result<Instance, RuntimeError> {
        let now = self.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        if !fresh {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        let instance = self.take_or_start(version, fresh);
        if instance.is_err() {
            self.in_use.fetch_sub(1, Ordering::Relaxed);
        }
        instance
    }

    fn take_or_start(&self, version: &Version, fresh: bool) -> Result<Instance, RuntimeError> {
        let found = if fresh {
            None
        } else {
            let mut idle = self.idle.lock().map_err(|_| self.poisoned())?;
            idle.iter()
                .rposition(|i| i.generation == version.generation)
                .map(|at| idle.swap_remove(at))
        };
        if let Some(i) = found {
            return Ok(i.instance);
        }
        let engine = engine::engine().map_err(|m| start_error(WORKER, &self.udf, m))?;
        version
            .loaded
            .instantiate(engine)
            .map_err(|f| RuntimeError::WorkerFailed {
                worker: "Wasm module".into(),
                udf: self.udf.to_string(),
                attempts: 1,
                message: match f {
                    Failure::Timeout(t) => format!("a new instance did not start within {t:?}"),
                    Failure::Trap { message, .. } => {
                        format!("a new instance did not start: {message}")
                    }
                },
            })
    }

    /// Returns a checked-out instance: to the pool (`Some`, unless the pool is full), or
    /// thrown away (`None`: it failed).
    fn release(&self, version: &Version, instance: Option<Instance>) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        let Some(instance) = instance else {
            self.replaced.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let surplus = match self.idle.lock() {
            Ok(mut idle) if idle.len() < self.peak.load(Ordering::Relaxed) => {
                idle.push(Idle {
                    generation: version.generation,
                    instance,
                });
                None
            }
            _ => Some(instance),
        };
        drop(surplus);
    }

    /// Function `name`'s index in the module, checking that its kind fits the call (keyed or not).
    fn index(
        &self,
        version: &Version,
        name: &str,
        keyed: bool,
    ) -> Result<(u32, FunctionKind), RuntimeError> {
        let functions = &version.loaded.functions;
        let (i, f) = functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
            .ok_or_else(|| RuntimeError::UnknownFunction {
                runtime: "wasm".into(),
                name: name.into(),
                available: functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if (f.kind == FunctionKind::KeyedProcess) != keyed {
            return Err(RuntimeError::KindMismatch {
                name: name.into(),
                declared: if keyed {
                    FunctionKind::KeyedProcess
                } else {
                    FunctionKind::Map
                },
                actual: f.kind,
            });
        }
        Ok((i as u32, f.kind))
    }

    /// Runs `inputs` through function `index`: one guest call, or several when the batch is
    /// too big for one or a call fails (see the module docs). Retries after a failure run in
    /// `fresh` instances, so a record fails alone only in a new instance, never in one that
    /// earlier batches may have left in a bad state.
    fn run<I, X>(
        &self,
        version: &Version,
        index: u32,
        mut inputs: Vec<I>,
        codec: &Codec<I, X>,
        run: &mut Run,
        fresh: bool,
    ) -> Result<Vec<Result<X, FunctionError>>, RuntimeError> {
        let n = inputs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if run.failed_in_a_row >= POISON_LIMIT {
            return Ok((0..n).map(|_| Err(not_run(run))).collect());
        }
        let mut instance = self.checkout(version, fresh)?;
        let mut batch = std::mem::take(&mut instance.scratch);
        batch.clear();
        (codec.encode)(&inputs, &mut batch);
        let max_bytes = MAX_CALL_BYTES.min(self.spec.memory / 4);
        if batch.len() > max_bytes && n > 1 {
            self.release(version, Some(instance));
            return self.split(version, index, inputs, codec, run, fresh);
        }
        let called = instance.call(index, &batch, self.spec.timeout, |bytes| {
            (codec.decode)(bytes, &mut inputs)
        });
        if batch.capacity() <= MAX_CALL_BYTES {
            instance.scratch = batch;
        }
        match called {
            Ok(Ok(outcomes)) => {
                self.release(version, Some(instance));
                run.failed_in_a_row = 0;
                Ok(outcomes)
            }
            Ok(Err(Malformed(message))) => {
                self.release(version, None);
                tracing::error!(udf = %self.udf, %message, "the Wasm module returned malformed results");
                let e = FunctionError::permanent(format!(
                    "the module returned malformed results: {message}"
                ));
                Ok((0..n).map(|_| Err(e.clone())).collect())
            }
            Err((failure, output)) => {
                self.release(version, None);
                if n > 1 {
                    tracing::debug!(udf = %self.udf, records = n, ?failure, "a Wasm call failed; retrying the batch in halves");
                    return self.split(version, index, inputs, codec, run, true);
                }
                let err = record_error(failure, &output);
                tracing::warn!(udf = %self.udf, error = %err.message, "a record failed its Wasm instance");
                run.failed_in_a_row += 1;
                run.last_failure = Some(err.clone());
                Ok(vec![Err(err)])
            }
        }
    }

    fn split<I, X>(
        &self,
        version: &Version,
        index: u32,
        mut inputs: Vec<I>,
        codec: &Codec<I, X>,
        run: &mut Run,
        fresh: bool,
    ) -> Result<Vec<Result<X, FunctionError>>, RuntimeError> {
        let right = inputs.split_off(inputs.len() / 2);
        let mut out = self.run(version, index, inputs, codec, run, fresh)?;
        out.extend(self.run(version, index, right, codec, run, fresh)?);
        Ok(out)
    }
}

/// One outcome per input, or results that do not follow the encoding.
type Decoded<X> = Result<Vec<Result<X, FunctionError>>, Malformed>;

/// How one kind of input is sent and its results read.
struct Codec<I, X> {
    encode: fn(&[I], &mut Vec<u8>),
    decode: fn(&[u8], &mut [I]) -> Decoded<X>,
}

fn not_run(run: &Run) -> FunctionError {
    let last = run
        .last_failure
        .as_ref()
        .map(|e| e.message.as_str())
        .unwrap_or("");
    FunctionError::transient(format!(
        "not run: the module failed on {POISON_LIMIT} records in a row just before this one (last: {last})"
    ))
}

/// The error of a record that failed its instance alone: the failure, and what the module
/// wrote during the call (a panic message, say).
fn record_error(failure: Failure, output: &str) -> FunctionError {
    let wrote: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with"))
        .collect();
    let said = if wrote.is_empty() {
        String::new()
    } else {
        let last = &wrote[wrote.len().saturating_sub(3)..];
        format!("; it wrote: {}", last.join(" | "))
    };
    let (mut err, backtrace) = match failure {
        Failure::Timeout(t) => (
            FunctionError::transient(format!(
                "the Wasm function did not finish within its {} timeout and was interrupted{said}",
                humantime::format_duration(t)
            )),
            String::new(),
        ),
        Failure::Trap { message, detail } => {
            (FunctionError::permanent(format!("{message}{said}")), detail)
        }
    };
    let detail = [output.trim_end(), backtrace.trim_end()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if !detail.is_empty() {
        err.detail = Some(detail);
    }
    err
}

/// Adapts a function list to [`super::check_function`].
struct Described<'a>(&'a [FunctionInfo]);

impl UdfRuntime for Described<'_> {
    fn name(&self) -> &str {
        "wasm"
    }
    fn functions(&self) -> Vec<FunctionInfo> {
        self.0.to_vec()
    }
    fn invoke(&self, _: &str, _: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Ok(Vec::new())
    }
}

fn limits(spec: &WasmSpec) -> Limits {
    Limits {
        memory: spec.memory,
        allow_clock: spec.allow_clock,
        allow_random: spec.allow_random,
    }
}

fn read_module(udf: &str, spec: &WasmSpec) -> Result<Vec<u8>, RuntimeError> {
    let path = &spec.module;
    let meta = std::fs::metadata(path).map_err(|e| {
        start_error(
            WORKER,
            udf,
            format!(
                "cannot read `module: {}`: {e}; build it first (docs/wasm.md: `cargo build --release --target wasm32-wasip1`, or `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`)",
                path.display()
            ),
        )
    })?;
    if meta.len() > MAX_MODULE_BYTES as u64 {
        return Err(start_error(
            WORKER,
            udf,
            format!(
                "{}: the module is {} bytes, more than the {} MiB a Wasm UDF module may be",
                path.display(),
                meta.len(),
                MAX_MODULE_BYTES >> 20
            ),
        ));
    }
    std::fs::read(path)
        .map_err(|e| start_error(WORKER, udf, format!("cannot read {}: {e}", path.display())))
}

impl WasmRuntime {
    /// A map, filter or flat-map call: records in, their outcomes out.
    fn call_records(
        &self,
        function: &str,
        inputs: Vec<RecordInput>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        let version = self.version()?;
        let (index, kind) = self.index(&version, function, false)?;
        let codec = Codec {
            encode: codec::encode_records,
            decode: match kind {
                FunctionKind::Filter => |b: &[u8], i: &mut [RecordInput]| {
                    codec::decode_records(b, FunctionKind::Filter, i)
                },
                FunctionKind::FlatMap => |b: &[u8], i: &mut [RecordInput]| {
                    codec::decode_records(b, FunctionKind::FlatMap, i)
                },
                _ => {
                    |b: &[u8], i: &mut [RecordInput]| codec::decode_records(b, FunctionKind::Map, i)
                }
            },
        };
        let shadowed = self.shadowing().then(|| inputs.clone());
        let outcomes = self.run(
            &version,
            index,
            inputs,
            &codec,
            &mut Run {
                failed_in_a_row: 0,
                last_failure: None,
            },
            false,
        )?;
        if let Some(copy) = shadowed {
            self.shadow_call(function, copy, &outcomes, &codec, false);
        }
        Ok(outcomes)
    }
}

impl UdfRuntime for WasmRuntime {
    fn name(&self) -> &str {
        "wasm"
    }

    fn functions(&self) -> Vec<FunctionInfo> {
        self.version()
            .map(|v| v.loaded.functions.clone())
            .unwrap_or_default()
    }

    fn invoke(
        &self,
        function: &str,
        inputs: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        self.call_records(
            function,
            inputs.into_iter().map(RecordInput::from).collect(),
        )
    }

    fn reads_source_text(&self) -> bool {
        true
    }

    fn invoke_records(
        &self,
        function: &str,
        records: &[Record],
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        self.call_records(function, records.iter().map(RecordInput::from).collect())
    }

    fn code_version(&self) -> Option<String> {
        self.version()
            .ok()
            .map(|v| format!("sha256:{}", v.loaded.digest))
    }

    fn invoke_keyed(
        &self,
        function: &str,
        inputs: Vec<KeyedInput>,
    ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
        let version = self.version()?;
        let (index, _) = self.index(&version, function, true)?;
        let codec = Codec {
            encode: codec::encode_keyed,
            decode: codec::decode_keyed,
        };
        // The candidate gets each key's state as the active version left it: its own updates
        // are compared and thrown away with its outputs.
        let shadowed = self.shadowing().then(|| inputs.clone());
        let outcomes = self.run(
            &version,
            index,
            inputs,
            &codec,
            &mut Run {
                failed_in_a_row: 0,
                last_failure: None,
            },
            false,
        )?;
        if let Some(copy) = shadowed {
            self.shadow_call(function, copy, &outcomes, &codec, true);
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests;
