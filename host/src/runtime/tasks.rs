//! The two kinds of task thread: source tasks (`source_task.rs`: read partitions, stamp
//! watermarks, run the first stage) and stage tasks (`stage_task.rs`: merge upstream tasks'
//! streams after a shuffle, run the next stage). Both forward data before the watermark that
//! covers it; what they share is here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::coordinator::Barriers;
use crate::ops::{Chain, Context};
use crate::record::{WatermarkStatus, WATERMARK_END};
use crate::time::InputWatermarks;

use super::outputs::{Disconnected, Downstream, SinkHub};
use super::{RunControl, RunError};
use crate::metrics::Metrics;

pub use super::source_task::{run_source_task, AssignedPartition};
pub use super::stage_task::{run_stage_task, StageSlot};
pub use super::unaligned::PriorityBarrier;

/// Everything a task shares with the rest of the run.
pub struct TaskEnv {
    pub hub: SinkHub,
    pub metrics: Arc<Metrics>,
    pub control: Arc<RunControl>,
    pub batch_size: usize,
    /// Checkpointing is on: where barriers come from and reports go.
    pub barriers: Option<Barriers>,
}

/// How often a stage task whose chain holds records back checks the clock.
pub(super) const TICK: Duration = Duration::from_millis(2);

/// Lets operators that hold records back release those whose time is up.
pub(super) fn tick(
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
    now: Instant,
) -> Result<Result<(), Disconnected>, RunError> {
    let released = chain.on_tick(now, ctx)?;
    Ok(send_out(released, ctx, downstream, env))
}

/// Sends what the chain put aside (dead letters, side outputs), then `out` downstream.
pub(super) fn send_out(
    out: crate::record::Batch,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<(), Disconnected> {
    env.hub.drain_context(ctx, &env.metrics)?;
    downstream.send_batch(out)
}

/// Holds each watermark until the batches read before it are out of the chain (UDF calls in
/// flight release them in order, one per chain call), so every batch is followed by the
/// watermark that followed it in: records are late, or on time, exactly as if no call were in
/// flight, whatever the calls' timing.
#[derive(Debug, Default)]
pub(super) struct WatermarkGate {
    /// Input batches given to the chain so far.
    batches: u64,
    /// Watermarks not sent yet, each with the number of batches read before it.
    waiting: VecDeque<(u64, WatermarkStatus)>,
}

impl WatermarkGate {
    /// A batch goes into the chain.
    pub(super) fn note_batch(&mut self) {
        self.batches += 1;
    }

    fn push(&mut self, status: WatermarkStatus) {
        self.waiting.push_back((self.batches, status));
    }

    /// The input ended: what is in flight is released now.
    fn ends(&self) -> bool {
        matches!(
            self.waiting.back(),
            Some((_, WatermarkStatus::Active(WATERMARK_END)))
        )
    }

    /// The newest watermark whose batches are all out, with `in_flight` batches still in.
    fn ready(&mut self, in_flight: usize) -> Option<WatermarkStatus> {
        let out_of_chain = self.batches.saturating_sub(in_flight as u64);
        let mut ready = None;
        while let Some(&(before, status)) = self.waiting.front() {
            if before > out_of_chain {
                break;
            }
            self.waiting.pop_front();
            ready = Some(status);
        }
        ready
    }
}

/// If the combined watermark changed, queues it; sends every watermark whose batches are out
/// of the chain (letting the chain act on it first: firing windows). At the end of the input,
/// releases what is in flight first, a batch and its watermark at a time.
pub(super) fn forward_watermark(
    watermarks: &mut InputWatermarks,
    gate: &mut WatermarkGate,
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<Result<(), Disconnected>, RunError> {
    if let Some(status) = watermarks.changed() {
        gate.push(status);
    }
    if gate.ends() {
        if let Err(e) = release_in_flight(gate, chain, ctx, downstream, env)? {
            return Ok(Err(e));
        }
    }
    send_ready(gate, chain, ctx, downstream, env)
}

/// Releases every batch in flight, oldest first, each followed by its watermark (before a
/// checkpoint barrier, and at the end of the input).
pub(super) fn release_in_flight(
    gate: &mut WatermarkGate,
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<Result<(), Disconnected>, RunError> {
    while let Some(out) = chain.release_oldest(ctx)? {
        if let Err(e) = send_out(out, ctx, downstream, env) {
            return Ok(Err(e));
        }
        if let Err(e) = send_ready(gate, chain, ctx, downstream, env)? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// Sends the newest watermark whose batches are out of the chain, if any: called after every
/// chain call that can release a batch, so that no later batch overtakes it.
pub(super) fn send_ready(
    gate: &mut WatermarkGate,
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<Result<(), Disconnected>, RunError> {
    let Some(status) = gate.ready(chain.in_flight_batches()) else {
        return Ok(Ok(()));
    };
    if let WatermarkStatus::Active(wm) = status {
        let released = chain.on_watermark(wm, ctx)?;
        if let Err(e) = send_out(released, ctx, downstream, env) {
            return Ok(Err(e));
        }
    }
    Ok(downstream.send_watermark(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use WatermarkStatus::{Active, Idle};

    #[test]
    fn a_watermark_waits_for_the_batches_read_before_it() {
        let mut gate = WatermarkGate::default();
        gate.note_batch();
        gate.push(Active(10)); // after batch 1
        gate.note_batch();
        gate.push(Active(20)); // after batch 2
        gate.note_batch();
        gate.push(Idle); // after batch 3
                         // Batches 1-3 in flight: nothing may go.
        assert_eq!(gate.ready(3), None);
        // Batch 1 out: its watermark, not the later ones.
        assert_eq!(gate.ready(2), Some(Active(10)));
        assert_eq!(gate.ready(2), None, "sent once");
        // Batches 2 and 3 out at once: the newest.
        assert_eq!(gate.ready(0), Some(Idle));
        assert!(!gate.ends());
        gate.push(Active(WATERMARK_END));
        assert!(gate.ends());
        assert_eq!(gate.ready(0), Some(Active(WATERMARK_END)));
    }
}
