//! The second tier of failure handling: a `udf` step's remediation function (`remediate:` on
//! the step) gets each record the step would dead-letter, with its error, and repairs it (the
//! repaired record goes through the step's function once more), drops it (a `flat_map` that
//! returns nothing) or gives up (an error: the record goes on to the DLQ). The remediation is
//! never asked twice about a record, so its own failures cannot loop.

use std::sync::Arc;

use crate::dlq::fingerprint::{error_type, fingerprint};
use crate::record::Record;
use crate::udf::{FunctionError, FunctionKind, UdfRuntime};
use crate::value::{Object, Value};

/// A step's remediation function.
#[derive(Clone)]
pub struct Remedy {
    /// Its name in `udfs`.
    pub udf: String,
    pub runtime: Arc<dyn UdfRuntime>,
    pub function: String,
    /// `Map` (repair or give up) or `FlatMap` (also: drop, with no output).
    pub kind: FunctionKind,
}

/// A record its step gave up on.
pub(super) struct Failed {
    /// Its place in the batch.
    pub index: usize,
    pub record: Record,
    pub error: FunctionError,
    pub attempts: u32,
    /// When its first attempt's failure was seen (ms since the epoch).
    pub first_failed_ms: i64,
}

impl Failed {
    pub(super) fn new(
        index: usize,
        record: Record,
        error: FunctionError,
        attempts: u32,
        first_failed_ms: i64,
    ) -> Self {
        Failed {
            index,
            record,
            error,
            attempts,
            first_failed_ms,
        }
    }
}

/// What the remediation made of one failure.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Send this record through the step's function again.
    Repaired(Value),
    /// Drop the record (counted).
    Dropped,
    /// Dead-letter the record; the text says why the remediation did not help.
    GaveUp(String),
}

impl Remedy {
    /// Asks the remediation function about every failure in one call; a call that fails as a
    /// whole gives up on all of them.
    pub(super) fn judge(&self, step: &str, failed: &[Failed]) -> Vec<Verdict> {
        let inputs: Vec<Value> = failed.iter().map(|f| request(step, f)).collect();
        let all = |why: String| {
            failed
                .iter()
                .map(|_| Verdict::GaveUp(why.clone()))
                .collect()
        };
        let outcomes = match self.runtime.invoke(&self.function, inputs) {
            Ok(o) if o.len() == failed.len() => o,
            Ok(o) => {
                return all(format!(
                    "the remediation udf `{}` answered {} results for {} records",
                    self.udf,
                    o.len(),
                    failed.len()
                ))
            }
            Err(e) => {
                return all(format!(
                    "the remediation udf `{}` could not be called: {e}",
                    self.udf
                ))
            }
        };
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(mut values) if values.len() == 1 => match values.pop() {
                    Some(v) => Verdict::Repaired(v),
                    None => Verdict::Dropped,
                },
                Ok(values) if values.is_empty() && self.kind == FunctionKind::FlatMap => {
                    Verdict::Dropped
                }
                Ok(values) => Verdict::GaveUp(format!(
                    "the remediation udf `{}` returned {} records; it returns the repaired record, or (a flat_map) none to drop it",
                    self.udf,
                    values.len()
                )),
                Err(e) => Verdict::GaveUp(format!(
                    "the remediation udf `{}` gave up: {}",
                    self.udf, e.message
                )),
            })
            .collect()
    }
}

/// Fills in what a step that calls a function knows about a record it gave up on: the
/// error's detail (with `note`, why a remediation did not save it, after it), the attempts,
/// when the first failed, the tier that gave up (`remediation` when there is a note, else
/// `retry`) and the code that failed.
pub(super) fn gave_up(
    dl: &mut crate::dlq::DeadLetter,
    err: &FunctionError,
    note: Option<&str>,
    attempts: u32,
    first_failed_ms: i64,
    runtime: &dyn UdfRuntime,
) {
    dl.detail = match (&err.detail, note) {
        (Some(d), Some(n)) => Some(format!("{d}\n\n{n}")),
        (d, n) => d.clone().or(n.map(str::to_string)),
    };
    dl.attempts = attempts;
    dl.first_failed_at_ms = Some(first_failed_ms);
    dl.tier = Some(if note.is_some() {
        "remediation"
    } else {
        "retry"
    });
    dl.udf_version = Some(runtime.udf_version());
}

/// What the remediation function gets: `{"record": ..., "error": {step, error_class,
/// error_type, error, fingerprint, attempts}}` (the fields of a dead-letter envelope).
pub(super) fn request(step: &str, f: &Failed) -> Value {
    let kind = error_type(step, &f.error.message);
    let mut error = Object::with_capacity(6);
    error.insert("step", Value::Str(step.into()));
    error.insert("error_class", Value::Str(f.error.class.as_str().into()));
    error.insert(
        "fingerprint",
        Value::Str(fingerprint(step, &kind, &f.error.message).into()),
    );
    error.insert("error_type", Value::Str(kind.into()));
    error.insert("error", Value::Str(f.error.message.as_str().into()));
    error.insert("attempts", Value::Int(i64::from(f.attempts)));
    let mut req = Object::with_capacity(2);
    req.insert("record", f.record.value().clone());
    req.insert("error", Value::Object(error));
    Value::Object(req)
}
