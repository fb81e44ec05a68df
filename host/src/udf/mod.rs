//! User-defined functions: one trait for every runtime.
//!
//! A runtime invokes a named function on a batch of records and returns, per record, either
//! its outputs or an error with a class ([`UdfRuntime`]). Each runtime (native Rust functions,
//! Python and Go worker processes, in-process Python, Wasm) is a plug-in of its own module,
//! listed in [`registry`]: the configuration and the planner know runtimes only through it.

pub mod go;
pub mod inproc;
pub mod native;
pub mod proto;
pub mod python;
pub mod registry;
pub mod wasm;
pub mod worker;

use crate::record::{EventTime, Record};
use crate::value::Value;
pub use headwater_sdk::{ErrorClass, FunctionError, FunctionKind};
pub use registry::{runtimes, RuntimePlugin};

/// What a runtime says about one function (the handshake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: String,
    pub kind: FunctionKind,
}

/// A failure of the runtime as a whole (not of one record).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown function `{name}` in the {runtime} runtime; available: {available}")]
    UnknownFunction {
        runtime: String,
        name: String,
        available: String,
    },
    #[error("udf `{udf}`: the {worker} did not start: {message}")]
    WorkerStart {
        /// What did not start (`Python worker`, `Go worker`).
        worker: String,
        udf: String,
        message: String,
    },
    #[error("udf `{udf}`: the {worker} failed {attempts} times in a row: {message}")]
    WorkerFailed {
        worker: String,
        udf: String,
        attempts: u32,
        message: String,
    },
    #[error(
        "the {runtime} runtime does not run {what} (function `{function}`); runtimes that do: {others}"
    )]
    Unsupported {
        runtime: String,
        function: String,
        what: &'static str,
        /// The runtimes that run this kind of function.
        others: String,
    },
    #[error("udf `{udf}` names the runtime `{runtime}`, which this host does not have; available: {available}")]
    UnknownRuntime {
        udf: String,
        runtime: String,
        available: String,
    },
    #[error("internal: the options of udf `{udf}` are not those of the {runtime} runtime")]
    WrongOptions { udf: String, runtime: String },
    #[error("function `{name}` is a {actual:?} function but the pipeline declares it as {declared:?}; fix `kind` in the `udfs` section")]
    KindMismatch {
        name: String,
        declared: FunctionKind,
        actual: FunctionKind,
    },
}

/// A runtime could not start a UDF: `worker` names the runtime (`Go worker`, `Wasm module`...).
pub(crate) fn start_error(worker: &str, udf: &str, message: String) -> RuntimeError {
    RuntimeError::WorkerStart {
        worker: worker.to_string(),
        udf: udf.to_string(),
        message,
    }
}

/// The outcome for one input record.
pub type RecordOutcome = Result<Vec<Value>, FunctionError>;

/// One call of a keyed process function: a record (or a fired timer) with its key's state.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedInput {
    pub key: Value,
    /// The record; `None` when a timer fired.
    pub value: Option<Value>,
    /// The record's event time, or the timer's.
    pub time: EventTime,
    /// The key's state as the function last stored it (`None`: no state yet).
    pub state: Option<Vec<u8>>,
    /// Set when this call is a timer firing.
    pub timer: Option<EventTime>,
}

/// What a keyed process function does to its key's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateUpdate {
    Keep,
    Set(Vec<u8>),
    Clear,
}

/// The result of one keyed call.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedResult {
    pub outputs: Vec<Value>,
    pub state: StateUpdate,
    /// Event-time timers to set for this key.
    pub timers: Vec<EventTime>,
}

/// The outcome for one keyed call.
pub type KeyedOutcome = Result<KeyedResult, FunctionError>;

/// What to do with a window aggregate's accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateOp {
    /// A fresh accumulator (`create()`).
    Create,
    /// Fold `values` into the accumulator (none: start from `create()`).
    Add,
    /// Merge the two accumulators.
    Merge,
    /// The final value of the accumulator.
    Result,
}

/// One window's part of an aggregate call.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateInput {
    /// The accumulators (JSON): none or one for ADD, two for MERGE, one for RESULT.
    pub accumulators: Vec<Vec<u8>>,
    /// ADD: the records to fold in, in order.
    pub values: Vec<Value>,
}

/// The new accumulator (ADD, MERGE) or the result (RESULT).
#[derive(Clone, Debug, PartialEq)]
pub enum AggregateOutput {
    Accumulator(Vec<u8>),
    Result(Value),
}

/// The outcome for one window's part of an aggregate call.
pub type AggregateOutcome = Result<AggregateOutput, FunctionError>;

/// A call started with [`UdfRuntime::submit`]: its outcomes, once the runtime has them.
pub trait PendingCall: Send {
    /// True once [`PendingCall::wait`] would return without waiting.
    fn is_ready(&self) -> bool;
    /// The call's outcomes, one per input in order (waits for them).
    fn wait(self: Box<Self>) -> Result<Vec<RecordOutcome>, RuntimeError>;
}

/// A call that was made at once: [`UdfRuntime::submit`] of runtimes that run in the caller's
/// thread.
pub struct Completed(pub Result<Vec<RecordOutcome>, RuntimeError>);

impl PendingCall for Completed {
    fn is_ready(&self) -> bool {
        true
    }
    fn wait(self: Box<Self>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        self.0
    }
}

/// One UDF runtime. Implementations are shared by all tasks of a run.
pub trait UdfRuntime: Send + Sync {
    /// The runtime's name as written in pipeline files (`native`, `python`, ...).
    fn name(&self) -> &str;
    /// The functions this runtime offers.
    fn functions(&self) -> Vec<FunctionInfo>;
    /// Calls `function` once per input, in order; returns one outcome per input.
    fn invoke(
        &self,
        function: &str,
        inputs: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError>;

    /// What identifies the code the calling task runs now, beyond the runtime's name (a Wasm
    /// UDF's module digest); dead letters carry it as their `udf_version`.
    fn code_version(&self) -> Option<String> {
        None
    }

    /// The runtime's name and code version as dead letters name the code that failed them
    /// (`udf_version`: `python:sha256:...`, or the name alone).
    fn udf_version(&self) -> String {
        match self.code_version() {
            Some(v) => format!("{}:{v}", self.name()),
            None => self.name().to_string(),
        }
    }

    /// True when functions run outside the caller's thread (worker processes), so that
    /// [`UdfRuntime::submit`] returns before the call is done and a caller gains by preparing
    /// its next call meanwhile.
    fn runs_elsewhere(&self) -> bool {
        false
    }

    /// True when the runtime sends records' source text where they have it
    /// ([`UdfRuntime::invoke_records`]), so sources should keep it for the records they read.
    fn reads_source_text(&self) -> bool {
        false
    }

    /// [`UdfRuntime::invoke`] on the values of `records`. Runtimes that send records out as
    /// JSON override it to send the records' source text where they still have it, instead of
    /// encoding their values again.
    fn invoke_records(
        &self,
        function: &str,
        records: &[Record],
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        self.invoke(
            function,
            records.iter().map(|r| r.value().clone()).collect(),
        )
    }

    /// Starts [`UdfRuntime::invoke_records`] and returns at once if the runtime
    /// [runs functions elsewhere](UdfRuntime::runs_elsewhere); otherwise makes the call.
    fn submit(&self, function: &str, records: &[Record]) -> Box<dyn PendingCall> {
        Box::new(Completed(self.invoke_records(function, records)))
    }

    /// Calls a keyed process function once per input, in order. Inputs never hold two calls
    /// for the same key (the caller sends a key's next call after storing the state the
    /// previous one returned).
    fn invoke_keyed(
        &self,
        function: &str,
        _inputs: Vec<KeyedInput>,
    ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
        Err(unsupported(
            self.name(),
            function,
            FunctionKind::KeyedProcess,
        ))
    }

    /// Calls a window aggregate function, once per input, in order.
    fn invoke_aggregate(
        &self,
        function: &str,
        _op: AggregateOp,
        _inputs: Vec<AggregateInput>,
    ) -> Result<Vec<AggregateOutcome>, RuntimeError> {
        Err(unsupported(
            self.name(),
            function,
            FunctionKind::WindowAggregate,
        ))
    }
}

/// Decodes a function's JSON outputs; bad JSON fails the record, not the run.
pub fn outputs_from_json<B: AsRef<[u8]>>(outputs: &[B]) -> RecordOutcome {
    outputs
        .iter()
        .map(|bytes| {
            Value::from_json(bytes.as_ref()).map_err(|e| {
                FunctionError::permanent(format!("the function returned invalid JSON: {e}"))
            })
        })
        .collect()
}

/// Checks that `name` exists in `runtime` with the declared kind.
pub fn check_function(
    runtime: &dyn UdfRuntime,
    name: &str,
    declared: FunctionKind,
) -> Result<(), RuntimeError> {
    let functions = runtime.functions();
    match functions.iter().find(|f| f.name == name) {
        Some(f) if f.kind == declared => Ok(()),
        Some(f) => Err(RuntimeError::KindMismatch {
            name: name.to_string(),
            declared,
            actual: f.kind,
        }),
        None => Err(RuntimeError::UnknownFunction {
            runtime: runtime.name().to_string(),
            name: name.to_string(),
            available: functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `runtime` cannot call `function`, a function of `kind`.
fn unsupported(runtime: &str, function: &str, kind: FunctionKind) -> RuntimeError {
    RuntimeError::Unsupported {
        runtime: runtime.to_string(),
        function: function.to_string(),
        what: match kind {
            FunctionKind::KeyedProcess => "keyed process functions",
            FunctionKind::WindowAggregate => "window aggregate functions",
            FunctionKind::Map | FunctionKind::Filter | FunctionKind::FlatMap => "such functions",
        },
        others: runtimes().running(kind).join(", "),
    }
}
