//! The two kinds of task thread: source tasks (`source_task.rs`: read partitions, stamp
//! watermarks, run the first stage) and stage tasks (`stage_task.rs`: merge upstream tasks'
//! streams after a shuffle, run the next stage). Both forward data before the watermark that
//! covers it; what they share is here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::coordinator::Barriers;
use crate::ops::{Chain, Context};
use crate::record::WatermarkStatus;
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
    if let Err(e) = env.hub.drain_context(ctx, &env.metrics) {
        return Ok(Err(e));
    }
    Ok(downstream.send_batch(released))
}

/// If the combined watermark changed, lets the chain act on it (firing windows), sends what
/// it released, then the watermark itself; held below records the chain still has in flight
/// (see [`InputWatermarks::changed_below`]).
pub(super) fn forward_watermark(
    watermarks: &mut InputWatermarks,
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<Result<(), Disconnected>, RunError> {
    let Some(status) = watermarks.changed_below(chain.in_flight_since()) else {
        return Ok(Ok(()));
    };
    if let WatermarkStatus::Active(wm) = status {
        let released = chain.on_watermark(wm, ctx)?;
        if let Err(e) = env.hub.drain_context(ctx, &env.metrics) {
            return Ok(Err(e));
        }
        if let Err(e) = downstream.send_batch(released) {
            return Ok(Err(e));
        }
    }
    Ok(downstream.send_watermark(status))
}
