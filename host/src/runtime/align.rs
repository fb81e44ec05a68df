//! Barrier alignment for a consumer with several inputs (a stage task, a sink).
//!
//! Once an input delivers barrier *n*, its later messages are held back until every other
//! input delivered *n* too (or ended); then the consumer snapshots, forwards the barrier and
//! calls [`Aligner::release`], and the held messages are delivered in their original order.
//! Each input's messages stay in order; inputs are independent of each other.

use std::collections::VecDeque;

use crate::checkpoint::CheckpointId;

/// What the aligner needs to know about a message.
pub trait Control {
    fn barrier(&self) -> Option<CheckpointId>;
    fn is_end(&self) -> bool;
}

/// One receive attempt.
pub enum Recv<M> {
    Msg(usize, M),
    Timeout,
    Closed,
}

/// What the consumer does next.
#[derive(Debug, PartialEq)]
pub enum Step<M> {
    /// Process this message from this input.
    Deliver(usize, M),
    /// Barrier `id` came from every live input: snapshot, forward it, then `release()`.
    Aligned(CheckpointId),
    Timeout,
    Closed,
}

pub struct Aligner<M> {
    blocked: Vec<bool>,
    ended: Vec<bool>,
    pending: Option<CheckpointId>,
    held: VecDeque<(usize, M)>,
    replay: VecDeque<(usize, M)>,
}

impl<M: Control> Aligner<M> {
    pub fn new(inputs: usize) -> Self {
        Aligner {
            blocked: vec![false; inputs],
            ended: vec![false; inputs],
            pending: None,
            held: VecDeque::new(),
            replay: VecDeque::new(),
        }
    }

    fn aligned(&self) -> bool {
        self.blocked.iter().zip(&self.ended).all(|(b, e)| *b || *e)
    }

    /// True when every input ended.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// Messages held back, for metrics and tests.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn next(&mut self, mut recv: impl FnMut() -> Recv<M>) -> Step<M> {
        loop {
            if let Some(id) = self.pending {
                if self.aligned() {
                    return Step::Aligned(id);
                }
            }
            let (from, msg) = match self.replay.pop_front() {
                Some(x) => x,
                None => match recv() {
                    Recv::Msg(from, msg) => (from, msg),
                    Recv::Timeout => return Step::Timeout,
                    Recv::Closed => return Step::Closed,
                },
            };
            if from >= self.blocked.len() {
                continue;
            }
            if self.blocked[from] {
                self.held.push_back((from, msg));
                continue;
            }
            if let Some(id) = msg.barrier() {
                self.pending = Some(self.pending.map_or(id, |p| p.min(id)));
                self.blocked[from] = true;
                continue;
            }
            if msg.is_end() {
                self.ended[from] = true;
            }
            return Step::Deliver(from, msg);
        }
    }

    /// The snapshot for the pending barrier is done: unblock every input; held messages
    /// come next, before anything new.
    pub fn release(&mut self) {
        self.pending = None;
        self.blocked.iter_mut().for_each(|b| *b = false);
        let mut replay = std::mem::take(&mut self.held);
        replay.append(&mut self.replay);
        self.replay = replay;
    }
}

impl Control for crate::record::Message {
    fn barrier(&self) -> Option<CheckpointId> {
        match self {
            crate::record::Message::Barrier(id) => Some(*id),
            _ => None,
        }
    }

    fn is_end(&self) -> bool {
        matches!(self, crate::record::Message::End)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum M {
        D(u32),
        B(u64),
        E,
    }

    impl Control for M {
        fn barrier(&self) -> Option<CheckpointId> {
            match self {
                M::B(id) => Some(*id),
                _ => None,
            }
        }
        fn is_end(&self) -> bool {
            matches!(self, M::E)
        }
    }

    fn run(inputs: usize, script: Vec<(usize, M)>) -> Vec<String> {
        let mut a = Aligner::new(inputs);
        let mut q: VecDeque<(usize, M)> = script.into();
        let mut log = Vec::new();
        loop {
            match a.next(|| match q.pop_front() {
                Some((f, m)) => Recv::Msg(f, m),
                None => Recv::Closed,
            }) {
                Step::Deliver(f, m) => log.push(format!("{f}:{m:?}")),
                Step::Aligned(id) => {
                    log.push(format!("aligned {id}"));
                    a.release();
                }
                Step::Timeout => {}
                Step::Closed => return log,
            }
        }
    }

    #[test]
    fn an_input_past_the_barrier_waits_for_the_others() {
        let log = run(
            2,
            vec![
                (0, M::D(1)),
                (0, M::B(1)),
                (0, M::D(2)), // held: input 0 is past barrier 1
                (1, M::D(10)),
                (1, M::B(1)),
                (1, M::D(11)),
            ],
        );
        assert_eq!(
            log,
            vec!["0:D(1)", "1:D(10)", "aligned 1", "0:D(2)", "1:D(11)"]
        );
    }

    #[test]
    fn ended_inputs_count_as_aligned_and_held_barriers_replay() {
        let log = run(
            2,
            vec![
                (0, M::B(1)),
                (0, M::D(1)),
                (0, M::B(2)),
                (0, M::D(2)),
                (1, M::E),
            ],
        );
        assert_eq!(
            log,
            vec!["1:E", "aligned 1", "0:D(1)", "aligned 2", "0:D(2)"]
        );
    }
}
