//! User-defined functions: one trait for every runtime.
//!
//! A runtime invokes a named function on a batch of records and returns, per record, either
//! its outputs or an error with a class. The native runtime (Rust functions compiled into the
//! host, written with the `headwater-sdk` crate) implements it now; the Python and Go sidecar
//! runtimes and the Wasm runtime plug into the same trait.

pub mod go;
pub mod inproc;
pub mod native;
pub mod proto;
pub mod python;
pub mod wasm;
pub mod worker;

use std::sync::Arc;

use crate::config::spec::{UdfRuntimeKind, UdfSpec};
use crate::record::EventTime;
use crate::value::Value;
pub use headwater_sdk::{ErrorClass, FunctionError, FunctionKind};

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
        "the {runtime} runtime does not run {what} (function `{function}`); write it in Python or Go"
    )]
    Unsupported {
        runtime: String,
        function: String,
        what: &'static str,
    },
    #[error("function `{name}` is a {actual:?} function but the pipeline declares it as {declared:?}; fix `kind` in the `udfs` section")]
    KindMismatch {
        name: String,
        declared: FunctionKind,
        actual: FunctionKind,
    },
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

    /// Calls a keyed process function once per input, in order. Inputs never hold two calls
    /// for the same key (the caller sends a key's next call after storing the state the
    /// previous one returned).
    fn invoke_keyed(
        &self,
        function: &str,
        _inputs: Vec<KeyedInput>,
    ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: self.name().to_string(),
            function: function.to_string(),
            what: "keyed process functions",
        })
    }

    /// Calls a window aggregate function, once per input, in order.
    fn invoke_aggregate(
        &self,
        function: &str,
        _op: AggregateOp,
        _inputs: Vec<AggregateInput>,
    ) -> Result<Vec<AggregateOutcome>, RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: self.name().to_string(),
            function: function.to_string(),
            what: "window aggregate functions",
        })
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

/// Starts the runtime a declared UDF names: the one place that knows every runtime (adding a
/// runtime is a module of its own plus an arm here and its options in `config/`).
pub fn start(
    udf: &UdfSpec,
    native: &Arc<dyn UdfRuntime>,
) -> Result<Arc<dyn UdfRuntime>, RuntimeError> {
    start_with_handle(udf, native).map(|(rt, _)| rt)
}

/// A started runtime, and the typed handle of a Wasm one.
pub type Started = (Arc<dyn UdfRuntime>, Option<Arc<wasm::WasmRuntime>>);

/// [`start`], also returning the typed handle of a Wasm runtime (its module can be replaced
/// while the pipeline runs).
pub fn start_with_handle(
    udf: &UdfSpec,
    native: &Arc<dyn UdfRuntime>,
) -> Result<Started, RuntimeError> {
    Ok(match &udf.runtime {
        UdfRuntimeKind::Native => (native.clone(), None),
        UdfRuntimeKind::Python(py) => (Arc::new(python::start(&udf.name, py)?), None),
        UdfRuntimeKind::PythonInproc(py) => {
            (Arc::new(inproc::InprocRuntime::start(&udf.name, py)?), None)
        }
        UdfRuntimeKind::Go(go) => (Arc::new(go::start(&udf.name, go)?), None),
        UdfRuntimeKind::Wasm(w) => {
            let rt = Arc::new(wasm::WasmRuntime::start(&udf.name, w)?);
            (rt.clone(), Some(rt))
        }
    })
}
