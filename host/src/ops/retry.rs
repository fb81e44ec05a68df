//! How operators retry transient function failures: one policy for every step.
//!
//! A [`RetryPolicy`] says how many attempts a call gets and how long to wait between them
//! (exponential backoff with jitter, capped). A [`Retry`] tracks one piece of work through
//! its attempts and answers "is it exhausted, and when is the next attempt due" rather than
//! sleeping itself: today operators wait for that instant in place ([`Retry::wait_for_next`]),
//! but the same answer lets a record be parked while others flow.
//!
//! Waiting never blocks a task blindly: it is a wait on a [`CancelSignal`] with a deadline,
//! so a cancelled run wakes every waiting operator at once instead of after its backoff.

use std::time::{Duration, Instant};

/// How transient failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each attempt after that.
    pub initial_backoff: Duration,
    /// No wait is longer than this (before jitter).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// The pipeline file's defaults (4 attempts, 20ms doubling up to 2s).
    fn default() -> Self {
        RetryPolicy::from(crate::config::spec::RetrySpec::default())
    }
}

impl From<crate::config::spec::RetrySpec> for RetryPolicy {
    /// A UDF's `retry:` (its own keys over the pipeline's).
    fn from(spec: crate::config::spec::RetrySpec) -> Self {
        RetryPolicy {
            max_attempts: spec.max_attempts.max(1),
            initial_backoff: spec.initial_backoff,
            max_backoff: spec.max_backoff,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (2, 3, ...): `initial_backoff` doubled per attempt
    /// after the second, capped at `max_backoff`, then scaled by a jitter in [50%, 100%]
    /// drawn from `jitter_seed`, so failures that happened together do not retry together
    /// while every wait still grows.
    pub fn backoff(&self, attempt: u32, jitter_seed: u64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(2).min(16))
            .min(self.max_backoff);
        // xorshift for a cheap, dependency-free jitter in [50%, 100%] of the backoff
        let mut x = jitter_seed | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let frac = 0.5 + (x % 1000) as f64 / 2000.0;
        exp.mul_f64(frac)
    }

    /// Starts tracking a piece of work whose first attempt is being made; `jitter_seed`
    /// spreads the waits of different pieces of work.
    pub fn start(&self, jitter_seed: u64) -> Retry {
        Retry {
            policy: *self,
            attempt: 1,
            jitter_seed,
        }
    }
}

/// One piece of work (a record, or a batch of records that failed together) going through
/// its attempts.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    policy: RetryPolicy,
    /// The attempt being made, 1-based.
    attempt: u32,
    jitter_seed: u64,
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextAttempt {
    /// Another attempt may be made once this instant has passed.
    DueAt(Instant),
    /// Every attempt the policy allows was made.
    Exhausted,
}

/// How a wait for the next attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The next attempt is due: make it.
    Due,
    /// The run is being cancelled: give the work up.
    Cancelled,
    /// No attempt is left.
    Exhausted,
}

impl Retry {
    /// The attempt being made (1 for the first), as reported with dead letters.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// True when the attempt being made is the last the policy allows, so a transient
    /// failure of it is final.
    pub fn is_exhausted(&self) -> bool {
        self.attempt >= self.policy.max_attempts
    }

    /// The attempt being made failed: moves on to the next one and says when it is due
    /// (`now` plus the backoff), or that none is left.
    pub fn next_attempt(&mut self, now: Instant) -> NextAttempt {
        if self.is_exhausted() {
            return NextAttempt::Exhausted;
        }
        self.attempt += 1;
        let wait = self
            .policy
            .backoff(self.attempt, self.jitter_seed ^ u64::from(self.attempt));
        NextAttempt::DueAt(now + wait)
    }

    /// The attempt being made failed: waits until the next one is due, waking early if
    /// `cancel` fires.
    pub fn wait_for_next(&mut self, cancel: &CancelSignal) -> WaitOutcome {
        match self.next_attempt(Instant::now()) {
            NextAttempt::Exhausted => WaitOutcome::Exhausted,
            NextAttempt::DueAt(at) => {
                if cancel.wait_until(at) {
                    WaitOutcome::Cancelled
                } else {
                    WaitOutcome::Due
                }
            }
        }
    }
}

pub use crate::run_control::CancelSignal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::default();
        for seed in 0..50u64 {
            assert!(p.backoff(2, seed) <= Duration::from_millis(20));
            assert!(p.backoff(3, seed) <= Duration::from_millis(40));
            assert!(p.backoff(3, seed) >= Duration::from_millis(20));
            assert!(p.backoff(4, seed) >= Duration::from_millis(40));
            assert!(p.backoff(30, seed) <= Duration::from_secs(2));
            assert!(p.backoff(u32::MAX, seed) >= Duration::from_secs(1));
        }
    }

    #[test]
    fn jitter_stays_within_half_and_whole_of_the_backoff_and_varies() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(60),
        };
        let delays: Vec<Duration> = (0..200).map(|seed| p.backoff(3, seed)).collect();
        for d in &delays {
            assert!(*d >= Duration::from_millis(100) && *d <= Duration::from_millis(200));
        }
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 50,
            "jitter spreads waits: {}",
            distinct.len()
        );
    }

    #[test]
    fn attempts_run_out_after_max_attempts() {
        let p = RetryPolicy::default();
        let mut retry = p.start(7);
        let now = Instant::now();
        let mut dues = Vec::new();
        assert_eq!(retry.attempt(), 1);
        while let NextAttempt::DueAt(at) = retry.next_attempt(now) {
            assert!(at > now);
            dues.push(at);
        }
        assert_eq!(dues.len(), 3, "4 attempts: 3 retries");
        assert_eq!(retry.attempt(), 4);
        assert!(retry.is_exhausted());
        assert_eq!(retry.next_attempt(now), NextAttempt::Exhausted);
        assert_eq!(
            retry.wait_for_next(&CancelSignal::new()),
            WaitOutcome::Exhausted
        );
        let single = RetryPolicy {
            max_attempts: 1,
            ..p
        }
        .start(0);
        assert!(single.is_exhausted(), "one attempt: no retry");
    }

    #[test]
    fn a_wait_lasts_its_backoff_when_not_cancelled() {
        let p = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_millis(30),
        };
        let started = Instant::now();
        assert_eq!(
            p.start(1).wait_for_next(&CancelSignal::new()),
            WaitOutcome::Due
        );
        assert!(started.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn cancelling_interrupts_a_wait_promptly() {
        let p = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        };
        let cancel = CancelSignal::new();
        let waiter = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                (p.start(1).wait_for_next(&cancel), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
        let (outcome, waited) = waiter.join().expect("waiter");
        assert_eq!(outcome, WaitOutcome::Cancelled);
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
        assert!(cancel.is_cancelled());
        // Once fired, later waits return at once.
        assert!(cancel.wait_until(Instant::now() + Duration::from_secs(60)));
    }
}
