//! The in-memory index of an operator's pending timers.
//!
//! Each stateful operator of a task keeps its timers (for the key groups the task owns) in
//! one of these, ordered by time, and fires what is due when the watermark advances. The
//! index is not stored: operators rebuild it from their state on restore (windows derive it
//! from their accumulator keys, keyed process steps from their [`super::Tag::KeyedTimer`]
//! entries).

use std::collections::BTreeSet;

use super::Millis;

/// Timers ordered by time, then by what they are for (`T`: an encoded key, say, or a kind
/// and a key). The same `(time, T)` is held once.
#[derive(Clone, Debug)]
pub struct TimerIndex<T: Ord> {
    timers: BTreeSet<(Millis, T)>,
}

impl<T: Ord> Default for TimerIndex<T> {
    fn default() -> Self {
        TimerIndex {
            timers: BTreeSet::new(),
        }
    }
}

impl<T: Ord> TimerIndex<T> {
    pub fn new() -> Self {
        TimerIndex::default()
    }

    /// Adds a timer; false if the same one was pending already.
    pub fn insert(&mut self, time: Millis, timer: T) -> bool {
        self.timers.insert((time, timer))
    }

    /// Removes a timer; false if it was not pending.
    pub fn remove(&mut self, time: Millis, timer: T) -> bool {
        self.timers.remove(&(time, timer))
    }

    /// Removes and returns the earliest timer if it is due at `watermark` (time ≤ watermark).
    pub fn pop_due(&mut self, watermark: Millis) -> Option<(Millis, T)> {
        if self.timers.first()?.0 > watermark {
            return None;
        }
        self.timers.pop_first()
    }

    /// Removes and returns the earliest timer, due or not.
    pub fn pop_first(&mut self) -> Option<(Millis, T)> {
        self.timers.pop_first()
    }

    /// Number of timers due at `watermark`.
    pub fn count_due(&self, watermark: Millis) -> usize {
        self.timers
            .iter()
            .take_while(|(t, _)| *t <= watermark)
            .count()
    }

    /// Pending timers in time order.
    pub fn iter(&self) -> impl Iterator<Item = &(Millis, T)> {
        self.timers.iter()
    }

    pub fn len(&self) -> usize {
        self.timers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    pub fn clear(&mut self) {
        self.timers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_time_order_and_duplicates_are_held_once() {
        let mut idx = TimerIndex::new();
        assert!(idx.insert(20, b"b".to_vec()));
        assert!(idx.insert(10, b"a".to_vec()));
        assert!(!idx.insert(10, b"a".to_vec()), "held once");
        assert!(idx.insert(10, b"0".to_vec()));
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.count_due(15), 2);
        assert_eq!(idx.pop_due(9), None);
        assert_eq!(idx.pop_due(15), Some((10, b"0".to_vec())));
        assert_eq!(idx.pop_due(15), Some((10, b"a".to_vec())));
        assert_eq!(idx.pop_due(15), None);
        assert!(idx.remove(20, b"b".to_vec()));
        assert!(idx.is_empty());
    }
}
