//! Shadow runs: a candidate version of a module runs beside the active one on the same calls
//! (map, filter and flat_map records; keyed process calls with the key's state as the active
//! version left it), its results compared and thrown away. Counted as matched, differed (with
//! a few samples) or failed (the candidate failed a call the active version did not, or a
//! whole batch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::codec::RecordInput;
use super::Version;
use crate::udf::{FunctionError, KeyedInput, KeyedResult, StateUpdate};
use crate::value::Value;

/// Differences kept as samples.
const SAMPLES: usize = 5;
/// Longest sample text kept, per side.
const SAMPLE_CHARS: usize = 300;

/// A candidate version and what it did so far.
pub(super) struct Shadow {
    pub(super) version: Arc<Version>,
    matched: AtomicU64,
    differed: AtomicU64,
    failed: AtomicU64,
    samples: Mutex<Vec<Difference>>,
}

/// One record the two versions disagreed on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Difference {
    pub function: String,
    pub input: String,
    pub active: String,
    pub candidate: String,
}

/// What a shadow run found so far.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShadowReport {
    pub digest: String,
    pub matched: u64,
    pub differed: u64,
    pub failed: u64,
    pub samples: Vec<Difference>,
}

fn cut(s: String) -> String {
    if s.chars().count() <= SAMPLE_CHARS {
        return s;
    }
    s.chars().take(SAMPLE_CHARS).collect::<String>() + "..."
}

/// How a call's input or result reads in a sample.
pub(super) trait Shown {
    fn shown(&self) -> String;
}

impl Shown for Value {
    fn shown(&self) -> String {
        self.to_json_string()
    }
}

impl Shown for RecordInput {
    fn shown(&self) -> String {
        self.value.to_json_string()
    }
}

impl Shown for Vec<Value> {
    fn shown(&self) -> String {
        self.iter()
            .map(Value::to_json_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Shown for KeyedInput {
    fn shown(&self) -> String {
        let what = match (&self.value, self.timer) {
            (_, Some(at)) => format!("timer {at}"),
            (Some(v), None) => v.to_json_string(),
            (None, None) => "nothing".into(),
        };
        let state = self
            .state
            .as_deref()
            .map_or("none".into(), |s| String::from_utf8_lossy(s).into_owned());
        format!("key {}: {what}; state {state}", self.key.to_json_string())
    }
}

impl Shown for KeyedResult {
    fn shown(&self) -> String {
        let state = match &self.state {
            StateUpdate::Keep => "kept".into(),
            StateUpdate::Clear => "cleared".into(),
            StateUpdate::Set(s) => String::from_utf8_lossy(s).into_owned(),
        };
        let outputs = if self.outputs.is_empty() {
            "no output".to_string()
        } else {
            self.outputs.shown()
        };
        format!("{outputs}; state {state}; timers {:?}", self.timers)
    }
}

/// Whether the candidate's result is the active one's.
pub(super) trait Same {
    fn same(&self, other: &Self) -> bool;
}

impl Same for Vec<Value> {
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

impl Same for KeyedResult {
    /// States are compared as JSON documents when both are (field order aside), else as bytes.
    fn same(&self, other: &Self) -> bool {
        let state = match (&self.state, &other.state) {
            (StateUpdate::Set(a), StateUpdate::Set(b)) => {
                a == b
                    || matches!(
                        (
                            serde_json::from_slice::<serde_json::Value>(a),
                            serde_json::from_slice::<serde_json::Value>(b),
                        ),
                        (Ok(x), Ok(y)) if x == y
                    )
            }
            (a, b) => a == b,
        };
        state && self.outputs == other.outputs && self.timers == other.timers
    }
}

fn show<T: Shown>(outcome: &Result<T, FunctionError>) -> String {
    match outcome {
        Ok(result) => cut(result.shown()),
        Err(e) => cut(format!("error: {}", e.message)),
    }
}

impl Shadow {
    pub(super) fn new(version: Arc<Version>) -> Shadow {
        Shadow {
            version,
            matched: AtomicU64::new(0),
            differed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Compares the candidate's outcomes (`None`: the whole call failed) with the active ones.
    pub(super) fn compare<I: Shown, T: Shown + Same>(
        &self,
        function: &str,
        inputs: &[I],
        active: &[Result<T, FunctionError>],
        candidate: Option<Vec<Result<T, FunctionError>>>,
    ) {
        let Some(candidate) = candidate.filter(|c| c.len() == active.len()) else {
            self.failed
                .fetch_add(active.len() as u64, Ordering::Relaxed);
            return;
        };
        for ((input, a), c) in inputs.iter().zip(active).zip(&candidate) {
            let counter = match (a, c) {
                (Ok(a), Ok(c)) if a.same(c) => &self.matched,
                (Err(_), Err(_)) => &self.matched,
                (Ok(_), Err(_)) => &self.failed,
                _ => {
                    if let Ok(mut samples) = self.samples.lock() {
                        if samples.len() < SAMPLES {
                            samples.push(Difference {
                                function: function.to_string(),
                                input: cut(input.shown()),
                                active: show(a),
                                candidate: show(c),
                            });
                        }
                    }
                    &self.differed
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn report(&self) -> ShadowReport {
        ShadowReport {
            digest: self.version.loaded.digest.clone(),
            matched: self.matched.load(Ordering::Relaxed),
            differed: self.differed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            samples: self.samples.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }
}
