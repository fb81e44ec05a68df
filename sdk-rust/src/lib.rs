//! Headwater's Rust SDK: write user-defined functions that the host calls natively.
//!
//! A function receives one record (a [`Value`], usually an object) and returns its outputs:
//! exactly one for a `map`, the input or nothing for a `filter`, any number for a `flat_map`.
//! Errors carry a class: [`ErrorClass::Transient`] failures are retried with backoff,
//! [`ErrorClass::Permanent`] ones send the record to the dead-letter queue at once.
//!
//! ```
//! use headwater_sdk::{Function, FunctionError, FunctionKind, Value};
//!
//! struct Double;
//! impl Function for Double {
//!     fn kind(&self) -> FunctionKind { FunctionKind::Map }
//!     fn call(&self, mut record: Value) -> Result<Vec<Value>, FunctionError> {
//!         let n = record.get_path(&["n".into()]).and_then(Value::as_f64)
//!             .ok_or_else(|| FunctionError::permanent("field `n` must be a number"))?;
//!         if let Value::Object(o) = &mut record { o.insert("n", Value::Float(n * 2.0)); }
//!         Ok(vec![record])
//!     }
//! }
//! let out = Double.call(Value::from_json(br#"{"n":2}"#).unwrap()).unwrap();
//! assert_eq!(out[0].to_json_string(), r#"{"n":4.0}"#);
//! ```

/// The record value model (the `headwater-value` crate), re-exported so UDF code names it
/// through the SDK.
pub use headwater_value as value;

pub use value::{Object, Str, Value};

/// What shape of function this is; decides how the host treats its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionKind {
    /// One output per input.
    Map,
    /// The input itself, or nothing.
    Filter,
    /// Zero or more outputs per input.
    FlatMap,
    /// Keyed process function (Stateful Functions model): gets the key's state with each
    /// record, returns outputs, the new state and timers. Served by sidecar runtimes.
    KeyedProcess,
    /// Window aggregate (create / add / merge / result over accumulators the host stores).
    /// Served by sidecar runtimes.
    WindowAggregate,
}

/// Whether retrying the same record can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// May succeed on retry (a timeout, an unavailable dependency).
    Transient,
    /// Will fail again: the record goes to the dead-letter queue.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A failure of one record; never fails the batch it came in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FunctionError {
    pub class: ErrorClass,
    pub message: String,
    /// Extra detail for the dead-letter envelope (a backtrace, the offending value).
    pub detail: Option<String>,
}

impl FunctionError {
    pub fn permanent(message: impl Into<String>) -> Self {
        FunctionError {
            class: ErrorClass::Permanent,
            message: message.into(),
            detail: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        FunctionError {
            class: ErrorClass::Transient,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A user-defined function the host calls in-process.
pub trait Function: Send + Sync {
    fn kind(&self) -> FunctionKind;
    /// Processes one record.
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError>;
}
