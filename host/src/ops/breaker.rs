//! A UDF's circuit breaker: an outage pauses the stream instead of emptying it into the DLQ.
//!
//! Every record a UDF step calls its function on counts as a success or a transient failure
//! (permanent failures are the record's own problem, not an outage, and count as calls that
//! answered). When at least `failure_percent` of the last [`WINDOW`] records (and at least
//! `min_records` of them) failed transiently, the breaker is *open*: a record whose retries are
//! used up is held instead of dead-lettered, calls pause for `cool_down`, and the held records
//! are tried again. A call that then goes through without a transient failure closes it (and
//! the outage is forgotten), as does the rate falling below the threshold. An outage longer than `max_pause` gives up: held records go to the DLQ as
//! before, so a bounded run always ends. One breaker per UDF, shared by its tasks.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::spec::BreakerSpec;
use crate::metrics::BreakerStatus;

/// How many recent records the failure rate is taken over.
pub const WINDOW: usize = 100;

pub struct Breaker {
    udf: String,
    spec: BreakerSpec,
    state: Mutex<State>,
    status: Arc<BreakerStatus>,
}

#[derive(Default)]
struct State {
    /// The last records' outcomes: true for a transient failure.
    recent: VecDeque<bool>,
    failures: usize,
    /// When the current outage began (the breaker opened).
    opened_at: Option<Instant>,
    /// The current outage outlasted `max_pause`: held records go to the DLQ until it closes.
    gave_up: bool,
    /// Outages that ended so far (see [`Breaker::recoveries`]).
    recoveries: u64,
}

/// What to do with records whose retries are used up, still failing transiently.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dead-letter them.
    DeadLetter,
    /// Keep them, wait this long, and try them again.
    HoldFor(Duration),
}

impl Breaker {
    pub fn new(udf: &str, spec: BreakerSpec) -> Breaker {
        Breaker {
            udf: udf.to_string(),
            spec,
            state: Mutex::new(State::default()),
            status: Arc::new(BreakerStatus::default()),
        }
    }

    /// What the control API shows of it.
    pub fn status(&self) -> Arc<BreakerStatus> {
        self.status.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call's outcomes: `failed` records failed transiently, `answered` did not.
    pub fn record(&self, failed: usize, answered: usize) {
        let mut s = self.state();
        for outcome in std::iter::repeat_n(true, failed).chain(std::iter::repeat_n(false, answered))
        {
            s.recent.push_back(outcome);
            s.failures += usize::from(outcome);
            if s.recent.len() > WINDOW {
                if let Some(old) = s.recent.pop_front() {
                    s.failures -= usize::from(old);
                }
            }
        }
        // Closed again when a call after the pause went through whole (the probe of a
        // half-open breaker), or the rate fell below the threshold; the outage is forgotten.
        let probe_passed = failed == 0 && answered > 0;
        if s.opened_at.is_some() && (probe_passed || !self.tripped(&s)) {
            if probe_passed {
                s.recent.clear();
                s.failures = 0;
            }
            let outage = s.opened_at.map(|t| t.elapsed()).unwrap_or_default();
            s.opened_at = None;
            s.recoveries += 1;
            s.gave_up = false;
            self.status.open.store(false, Ordering::Relaxed);
            tracing::warn!(
                udf = %self.udf,
                outage = ?outage,
                "udf `{}` recovered: circuit breaker closed, records flow again",
                self.udf
            );
        }
    }

    fn tripped(&self, s: &State) -> bool {
        s.recent.len() >= self.spec.min_records as usize
            && s.failures * 100 >= s.recent.len() * self.spec.failure_percent as usize
    }

    /// How many outages ended so far. Records whose attempts failed during an outage that
    /// has ended since (their batch waited while other calls went through) get fresh
    /// attempts instead of the DLQ: the failures were the outage's, not theirs.
    pub fn recoveries(&self) -> u64 {
        self.state().recoveries
    }

    /// `held` records used up their retries failing transiently: hold them or dead-letter them.
    pub fn verdict(&self, held: usize) -> Verdict {
        if !self.spec.enabled || held == 0 {
            return Verdict::DeadLetter;
        }
        let mut s = self.state();
        if !self.tripped(&s) {
            return Verdict::DeadLetter;
        }
        let opened = match s.opened_at {
            Some(at) => at,
            None => {
                self.status.open.store(true, Ordering::Relaxed);
                self.status.openings.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    udf = %self.udf,
                    "udf `{}`: {}% of its last {} records failed transiently; circuit breaker open: \
                     records wait instead of going to the DLQ, calls pause {:?} at a time (up to {:?})",
                    self.udf,
                    s.failures * 100 / s.recent.len().max(1),
                    s.recent.len(),
                    self.spec.cool_down,
                    self.spec.max_pause
                );
                let now = Instant::now();
                s.opened_at = Some(now);
                now
            }
        };
        if opened.elapsed() >= self.spec.max_pause {
            if !s.gave_up {
                s.gave_up = true;
                tracing::warn!(
                    udf = %self.udf,
                    "udf `{}` has been failing for longer than max_pause ({:?}): records go to the DLQ until it recovers",
                    self.udf,
                    self.spec.max_pause
                );
            }
            return Verdict::DeadLetter;
        }
        self.status.held.fetch_add(held as u64, Ordering::Relaxed);
        Verdict::HoldFor(self.spec.cool_down)
    }
}

/// What an operator does with records whose attempts are used up, failing transiently.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// An outage: the pause is over; try them again with fresh attempts.
    TryAgain,
    /// Dead-letter them.
    DeadLetter,
    /// The run is being cancelled during the pause: give them up.
    Cancelled,
}

/// Asks `breaker` (if the UDF has one) about `exhausted` records and, during an outage, waits
/// out the pause (woken early by `cancel`).
pub fn hold(
    breaker: Option<&Breaker>,
    exhausted: usize,
    cancel: &super::retry::CancelSignal,
) -> Held {
    match breaker.map(|b| b.verdict(exhausted)) {
        Some(Verdict::HoldFor(pause)) => {
            if cancel.wait_until(Instant::now() + pause) {
                Held::Cancelled
            } else {
                Held::TryAgain
            }
        }
        _ => Held::DeadLetter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cool_down_ms: u64, max_pause_ms: u64) -> BreakerSpec {
        BreakerSpec {
            enabled: true,
            failure_percent: 50,
            min_records: 10,
            cool_down: Duration::from_millis(cool_down_ms),
            max_pause: Duration::from_millis(max_pause_ms),
        }
    }

    #[test]
    fn an_outage_holds_records_and_recovery_closes_the_breaker() {
        let b = Breaker::new("f", spec(5, 60_000));
        // A few failures among many answers: dead-letter them as usual.
        b.record(3, 30);
        assert_eq!(b.verdict(3), Verdict::DeadLetter);
        // Most records fail: hold them.
        b.record(60, 0);
        assert_eq!(b.verdict(60), Verdict::HoldFor(Duration::from_millis(5)));
        assert!(b.status().open.load(Ordering::Relaxed));
        assert_eq!(b.status().openings.load(Ordering::Relaxed), 1);
        assert_eq!(b.status().held.load(Ordering::Relaxed), 60);
        // Still failing: held again, the same opening.
        b.record(60, 0);
        assert_eq!(b.verdict(60), Verdict::HoldFor(Duration::from_millis(5)));
        assert_eq!(b.status().openings.load(Ordering::Relaxed), 1);
        // Recovered: successes push the rate below half; closed.
        b.record(0, 60);
        assert!(!b.status().open.load(Ordering::Relaxed));
        assert_eq!(b.verdict(1), Verdict::DeadLetter);
    }

    #[test]
    fn too_few_records_or_a_disabled_breaker_never_hold() {
        let b = Breaker::new("f", spec(5, 60_000));
        b.record(5, 0);
        assert_eq!(b.verdict(5), Verdict::DeadLetter, "fewer than min_records");
        let off = Breaker::new(
            "f",
            BreakerSpec {
                enabled: false,
                ..spec(5, 60_000)
            },
        );
        off.record(100, 0);
        assert_eq!(off.verdict(100), Verdict::DeadLetter);
    }

    #[test]
    fn an_outage_longer_than_max_pause_goes_to_the_dlq_until_recovery() {
        let b = Breaker::new("f", spec(1, 20));
        b.record(50, 0);
        assert_eq!(b.verdict(50), Verdict::HoldFor(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.verdict(50), Verdict::DeadLetter);
        b.record(0, 100);
        b.record(50, 0);
        assert_eq!(
            b.verdict(50),
            Verdict::HoldFor(Duration::from_millis(1)),
            "a new outage holds again"
        );
        assert_eq!(b.status().openings.load(Ordering::Relaxed), 2);
    }
}
