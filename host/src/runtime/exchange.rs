//! The exchange: how one stage's output reaches the tasks of the next (the shuffle by key
//! group). On one host it is a set of bounded channels; this module is the one place that
//! creates them, so the wiring in `spawn.rs` never touches a channel of the shuffle directly.
//!
//! **Where a multi-host run plugs in.** A run spread over hosts would replace the local
//! channels of a stage boundary with a repartition topic: the sending side becomes a producer
//! partitioned by key group, the receiving side a consumer that feeds the task's inbound
//! channel, with barriers and watermarks carried as control records. Only this module and the
//! `Downstream` variant it hands out would change; tasks keep reading `Inbound` messages and
//! sending through their `Downstream`.
//!
//! The exchange exists only while the run is wired: tasks hold plain channel ends inside
//! `Downstream::Shuffle`, so sending a batch costs exactly what it did before there was an
//! exchange (no trait object, no extra hop).

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::outputs::{CreditCounters, Credits, Downstream, Inbound};
use super::tasks::PriorityBarrier;
use super::topology::Topology;
use super::unaligned::UnalignedInput;
use crate::metrics::Metrics;

/// A channel's two ends.
type Channel<T> = (Sender<T>, Receiver<T>);

/// The shuffle between stages on this host. Per stage after the first and per task: a bounded
/// inbound channel, a priority lane barriers take in unaligned checkpoints, and the counters
/// of messages the task has handled from each sender (its credits, unaligned only).
///
/// Drop it once every task is spawned: then only tasks hold senders, and a task's inbound
/// channel closes when all of its upstream tasks have ended.
pub struct LocalExchange {
    parallelism: usize,
    capacity: usize,
    max_parallelism: u32,
    unaligned: bool,
    aligned_timeout: std::time::Duration,
    /// Per stage boundary (stage `s + 1`'s inputs), per receiving task.
    inbound: Vec<Vec<Channel<Inbound>>>,
    lanes: Vec<Vec<Channel<PriorityBarrier>>>,
    handled: Vec<Vec<Credits>>,
}

impl LocalExchange {
    /// The channels into every task of every stage after the first.
    pub fn new(topology: &Topology) -> Self {
        let parallelism = topology.parallelism;
        // Inbound channels of every stage after the first.
        let inbound = (1..topology.stages)
            .map(|_| {
                (0..parallelism)
                    .map(|_| bounded(topology.channel_bound()))
                    .collect()
            })
            .collect();
        // Unaligned checkpoints: each stage task also has a priority lane barriers take.
        let lanes = (1..topology.stages)
            .map(|_| {
                (0..parallelism)
                    .map(|_| crossbeam_channel::unbounded())
                    .collect()
            })
            .collect();
        // Unaligned: per stage boundary and receiving task, how many messages it has handled
        // from each sending task (see `Downstream::with_credits`).
        let handled = (1..topology.stages)
            .map(|_| {
                (0..parallelism)
                    .map(|_| CreditCounters::new(parallelism))
                    .collect()
            })
            .collect();
        LocalExchange {
            parallelism,
            capacity: topology.capacity,
            max_parallelism: topology.max_parallelism,
            unaligned: topology.unaligned,
            aligned_timeout: topology.aligned_timeout,
            inbound,
            lanes,
            handled,
        }
    }

    /// Where task `task` of stage `stage` sends its output: to the task of stage `stage + 1`
    /// that owns each record's key group. `stage` must not be the last stage (that one sends
    /// to the sinks).
    pub fn downstream(&self, stage: usize, task: usize, metrics: Arc<Metrics>) -> Downstream {
        let targets = self.inbound[stage]
            .iter()
            .map(|(tx, _)| tx.clone())
            .collect();
        let priority = self
            .unaligned
            .then(|| self.lanes[stage].iter().map(|(tx, _)| tx.clone()).collect());
        Downstream::shuffle(task, targets, self.max_parallelism, metrics)
            .with_priority(priority)
            .with_credits(
                self.unaligned
                    .then(|| (self.handled[stage].clone(), self.capacity as u64)),
            )
    }

    /// What task `task` of stage `stage` (after the first) reads: its inbound channel, and in
    /// unaligned checkpoints its priority lane and the credits it gives its senders.
    pub fn inbound(
        &self,
        stage: usize,
        task: usize,
    ) -> (Receiver<Inbound>, Option<UnalignedInput>) {
        let rx = self.inbound[stage - 1][task].1.clone();
        let priority = self.unaligned.then(|| UnalignedInput {
            priority: self.lanes[stage - 1][task].1.clone(),
            credits: self.handled[stage - 1][task].clone(),
            aligned_timeout: self.aligned_timeout,
        });
        (rx, priority)
    }

    /// How many tasks send into each inbound channel (every task of the previous stage).
    pub fn upstream_tasks(&self) -> usize {
        self.parallelism
    }
}
