//! The calls of a keyed step's batch, one queue per key in arrival order. A round takes the
//! head of every key that is ready; a head that failed transiently waits for its next
//! attempt in its own queue (the key's later calls behind it, so a key's calls stay in
//! order) while the other keys' queues go on: one key's retries do not hold the others up.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::Call;
use crate::ops::retry::{NextAttempt, Retry, RetryPolicy};

/// One key's calls and the retry of its head.
struct KeyQueue {
    calls: VecDeque<Call>,
    /// The head's attempts, once its first one failed.
    retry: Option<Retry>,
    /// When the head's next attempt is due (None: now).
    due: Option<Instant>,
    /// When the head's first attempt failed (ms since the epoch).
    first_failed_ms: Option<i64>,
}

pub(super) struct Queues {
    keys: Vec<KeyQueue>,
    policy: RetryPolicy,
}

/// How far a head that is given up on got.
pub(super) struct Tries {
    pub attempts: u32,
    pub first_failed_ms: i64,
}

impl Queues {
    /// `calls` queued by key, keys in the order they first appear.
    pub fn new(calls: Vec<Call>, policy: RetryPolicy) -> Self {
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut keys: Vec<KeyQueue> = Vec::new();
        for call in calls {
            let q = *index.entry(call.key_bytes.clone()).or_insert_with(|| {
                keys.push(KeyQueue {
                    calls: VecDeque::new(),
                    retry: None,
                    due: None,
                    first_failed_ms: None,
                });
                keys.len() - 1
            });
            keys[q].calls.push_back(call);
        }
        Queues { keys, policy }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.iter().all(|k| k.calls.is_empty())
    }

    /// The next round: the head of every key whose next attempt is due at `now`, taken out
    /// of its queue, with the queue's index.
    pub fn take_ready(&mut self, now: Instant) -> Vec<(usize, Call)> {
        let mut round = Vec::new();
        for (q, k) in self.keys.iter_mut().enumerate() {
            if k.due.is_none_or(|d| d <= now) {
                if let Some(call) = k.calls.pop_front() {
                    round.push((q, call));
                }
            }
        }
        round
    }

    /// When the earliest waiting head is due.
    pub fn earliest_due(&self) -> Option<Instant> {
        self.keys
            .iter()
            .filter(|k| !k.calls.is_empty())
            .filter_map(|k| k.due)
            .min()
    }

    /// Queue `q`'s head succeeded or was given up on: its next call is due at once.
    pub fn done(&mut self, q: usize) {
        let k = &mut self.keys[q];
        k.retry = None;
        k.due = None;
        k.first_failed_ms = None;
    }

    /// Queue `q`'s head `call` failed transiently: it goes back to the front of its queue,
    /// due after its backoff, unless its attempts are used up (then it is returned).
    pub fn failed(&mut self, q: usize, call: Call, now: Instant) -> Option<Call> {
        let policy = self.policy;
        let k = &mut self.keys[q];
        k.first_failed_ms.get_or_insert_with(crate::dlq::now_ms);
        let seed = jitter_seed(&call);
        let retry = k.retry.get_or_insert_with(|| policy.start(seed));
        match retry.next_attempt(now) {
            NextAttempt::DueAt(at) => {
                k.due = Some(at);
                k.calls.push_front(call);
                None
            }
            NextAttempt::Exhausted => Some(call),
        }
    }

    /// Queue `q`'s head, whose attempts were used up during an outage the circuit breaker
    /// waited out, goes back to the front of its queue with fresh attempts.
    pub fn try_again(&mut self, q: usize, call: Call) {
        let k = &mut self.keys[q];
        k.retry = None;
        k.due = None;
        k.calls.push_front(call);
    }

    /// The attempts of queue `q`'s head so far.
    pub fn tries(&self, q: usize) -> Tries {
        let k = &self.keys[q];
        Tries {
            attempts: k.retry.map_or(1, |r| r.attempt()),
            first_failed_ms: k.first_failed_ms.unwrap_or_else(crate::dlq::now_ms),
        }
    }
}

/// Spreads the backoffs of different calls.
fn jitter_seed(call: &Call) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&call.key_bytes) ^ call.time as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use std::time::Duration;

    fn call(k: &str, t: i64) -> Call {
        Call {
            key_bytes: k.as_bytes().to_vec(),
            key: Value::Null,
            record: None,
            time: t,
            timer: None,
        }
    }

    fn times(round: &[(usize, Call)]) -> Vec<i64> {
        round.iter().map(|(_, c)| c.time).collect()
    }

    #[test]
    fn a_key_waiting_for_a_retry_keeps_its_order_and_lets_the_others_go() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
        };
        let mut q = Queues::new(
            vec![
                call("a", 1),
                call("b", 2),
                call("a", 3),
                call("b", 4),
                call("c", 5),
            ],
            policy,
        );
        let now = Instant::now();
        let mut round = q.take_ready(now);
        assert_eq!(times(&round), vec![1, 2, 5], "one head per key");
        // a's head fails transiently: it waits (a minute), a's next call behind it.
        let (qa, a1) = round.remove(0);
        assert!(q.failed(qa, a1, now).is_none());
        for (i, _) in round {
            q.done(i);
        }
        assert_eq!(times(&q.take_ready(now)), vec![4], "b goes on, a waits");
        assert!(q.take_ready(now).is_empty());
        let due = q.earliest_due().expect("a is due later");
        assert!(due > now + Duration::from_secs(20));
        assert_eq!(
            times(&q.take_ready(due)),
            vec![1],
            "a's head again, before its next"
        );
        assert_eq!(q.tries(qa).attempts, 2);
    }

    #[test]
    fn a_head_out_of_attempts_is_returned() {
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        };
        let mut q = Queues::new(vec![call("a", 1)], policy);
        let now = Instant::now();
        let (i, c) = q.take_ready(now).remove(0);
        assert!(q.failed(i, c, now).is_none());
        let (i, c) = q.take_ready(now).remove(0);
        let back = q.failed(i, c, now).expect("exhausted");
        assert_eq!(back.time, 1);
        assert_eq!(q.tries(i).attempts, 2);
    }
}
