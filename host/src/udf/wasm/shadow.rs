//! Shadow runs: a candidate version of a module runs beside the active one on the same records
//! (map, filter and flat_map calls), its results compared and thrown away. Counted as matched,
//! differed (with a few samples) or failed (the candidate failed a record the active version
//! did not, or a whole call).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Version;
use crate::udf::RecordOutcome;
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

fn show(outcome: &RecordOutcome) -> String {
    match outcome {
        Ok(values) => cut(values
            .iter()
            .map(Value::to_json_string)
            .collect::<Vec<_>>()
            .join(" ")),
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
    pub(super) fn compare(
        &self,
        function: &str,
        inputs: &[Value],
        active: &[RecordOutcome],
        candidate: Option<Vec<RecordOutcome>>,
    ) {
        let Some(candidate) = candidate.filter(|c| c.len() == active.len()) else {
            self.failed
                .fetch_add(active.len() as u64, Ordering::Relaxed);
            return;
        };
        for ((input, a), c) in inputs.iter().zip(active).zip(&candidate) {
            let counter = match (a, c) {
                (Ok(a), Ok(c)) if a == c => &self.matched,
                (Err(_), Err(_)) => &self.matched,
                (Ok(_), Err(_)) => &self.failed,
                _ => {
                    if let Ok(mut samples) = self.samples.lock() {
                        if samples.len() < SAMPLES {
                            samples.push(Difference {
                                function: function.to_string(),
                                input: cut(input.to_json_string()),
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
