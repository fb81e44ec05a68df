//! User-defined functions: one trait for every runtime.
//!
//! A runtime invokes a named function on a batch of records and returns, per record, either
//! its outputs or an error with a class. The native runtime (Rust functions compiled into the
//! host, written with the `headwater-sdk` crate) implements it now; the Python and Go sidecar
//! runtimes and the Wasm runtime plug into the same trait.

pub mod native;

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
    #[error("function `{name}` is a {actual:?} function but the pipeline declares it as {declared:?}; fix `kind` in the `udfs` section")]
    KindMismatch {
        name: String,
        declared: FunctionKind,
        actual: FunctionKind,
    },
}

/// The outcome for one input record.
pub type RecordOutcome = Result<Vec<Value>, FunctionError>;

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
