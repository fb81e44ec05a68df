//! Source tasks: read their partitions, stamp event time and per-partition watermarks, run
//! the first stage, and inject checkpoint barriers with their partitions' positions.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::checkpoint::manifest::PartitionState;
use crate::checkpoint::{CheckpointId, Contribution, Participant, Report};
use crate::config::spec::EventTimeSpec;
use crate::dlq::DeadLetter;
use crate::ops::{Chain, Context};
use crate::record::{EventTime, Record, WatermarkStatus, WATERMARK_START};
use crate::sources::{Poll, SourcePartition};
use crate::time::{InputWatermarks, PartitionClock};

use super::outputs::{Disconnected, Downstream};
use super::tasks::{
    forward_watermark, release_in_flight, send_ready, tick, TaskEnv, WatermarkGate,
};
use super::RunError;

/// One partition assigned to a source task.
pub struct AssignedPartition {
    pub source_name: String,
    /// The partition's identity in checkpoints (see [`super::partition_key`]).
    pub checkpoint_key: String,
    pub partition: Box<dyn SourcePartition>,
    pub event_time: EventTimeSpec,
    /// Largest event time seen before the checkpoint the run resumed from.
    pub restored_max_time: Option<EventTime>,
}

struct Live {
    source_name: String,
    checkpoint_key: String,
    partition: Box<dyn SourcePartition>,
    clock: PartitionClock,
    ended: bool,
    /// Ended because its input is exhausted (not because the run is stopping).
    exhausted: bool,
    /// Fed records from elsewhere (dead letters replayed; see
    /// [`SourcePartition::is_auxiliary`]).
    auxiliary: bool,
    /// Its last poll gave nothing.
    quiet: bool,
}

impl Live {
    /// Its watermark input: an auxiliary partition never holds the watermark back (until
    /// it ends: then, like any ended input, it is at +inf).
    fn status(&self, now: Instant) -> WatermarkStatus {
        match self.auxiliary && !self.ended {
            true => WatermarkStatus::Idle,
            false => self.clock.status(now),
        }
    }
}

/// Runs a source task to completion. Returns when every partition is exhausted, the run is
/// stopped (then it ends its partitions, so open windows still fire), or it is cancelled.
pub fn run_source_task(
    task: usize,
    assigned: Vec<AssignedPartition>,
    mut chain: Chain,
    mut downstream: Downstream,
    env: TaskEnv,
) -> Result<(), RunError> {
    let mut parts: Vec<Live> = assigned
        .into_iter()
        .map(|a| {
            let mut clock =
                PartitionClock::new(a.event_time.max_out_of_orderness, a.event_time.idle_timeout);
            if let Some(t) = a.restored_max_time {
                clock.restore(t);
            }
            Live {
                source_name: a.source_name,
                checkpoint_key: a.checkpoint_key,
                clock,
                auxiliary: a.partition.is_auxiliary(),
                partition: a.partition,
                ended: false,
                exhausted: false,
                quiet: false,
            }
        })
        .collect();
    let mut last_barrier: CheckpointId = 0;
    // Without checkpoints a stop drains the input (open windows fire); with them the run
    // stops at a checkpoint and the next run resumes there.
    let drain_on_stop = env.barriers.is_none();
    let mut watermarks = InputWatermarks::new(parts.len());
    let mut gate = WatermarkGate::default();
    let mut ctx = Context::default();
    let mut buf: Vec<Record> = Vec::with_capacity(env.batch_size);
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut idle_rounds = 0u32;
    let mut lag = BarrierLag::from_env(task);
    loop {
        if env.control.cancelled() {
            return Ok(());
        }
        // A barrier that overtook a send outside the reading loop (releasing held records,
        // firing on a watermark) is passed on before anything else is read.
        if pass_overtaken(task, &parts, &mut downstream, &env, &mut last_barrier).is_err() {
            return Ok(());
        }
        if let Some(barriers) = &env.barriers {
            let id = barriers.requested();
            if id > last_barrier && lag.due(id) {
                last_barrier = id;
                if let Some(o) = downstream.overtake() {
                    o.last = id;
                }
                let partitions = partition_states(&parts);
                // Batches in flight go first, each with its watermark: they were read before
                // the barrier.
                if release_in_flight(&mut gate, &mut chain, &mut ctx, &mut downstream, &env)?
                    .is_err()
                {
                    return Ok(());
                }
                if inject_barrier(
                    id,
                    partitions,
                    task,
                    &mut chain,
                    &mut ctx,
                    &mut downstream,
                    &env,
                )?
                .is_err()
                {
                    return Ok(());
                }
            }
        }
        let stopping = drain_on_stop && env.control.stop_requested();
        let mut progressed = false;
        for idx in 0..parts.len() {
            let p = &mut parts[idx];
            if p.ended {
                continue;
            }
            if stopping {
                p.clock.end();
                p.ended = true;
                watermarks.update(idx, p.status(Instant::now()));
                continue;
            }
            buf.clear();
            let poll = p
                .partition
                .poll(&mut buf, &mut dead, env.batch_size)
                .map_err(RunError::Source)?;
            let now = Instant::now();
            p.quiet = poll == Poll::Pending;
            match poll {
                Poll::Ready => progressed = true,
                Poll::Pending => {}
                Poll::End => {
                    p.clock.end();
                    p.ended = true;
                    p.exhausted = true;
                    progressed = true;
                }
            }
            if !dead.is_empty() {
                p.clock.touch(now);
                if env.hub.dead_letters(std::mem::take(&mut dead)).is_err() {
                    return Ok(());
                }
            }
            if !buf.is_empty() {
                env.metrics
                    .records_in
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                if p.auxiliary {
                    // Replayed records keep their old event times: they move no clock.
                    env.metrics
                        .replayed
                        .fetch_add(buf.len() as u64, Ordering::Relaxed);
                } else {
                    let mut max_time = i64::MIN;
                    for r in &buf {
                        max_time = max_time.max(r.time);
                    }
                    p.clock.observe(max_time, now);
                    env.metrics
                        .max_event_time
                        .fetch_max(max_time, Ordering::Relaxed);
                }
                let batch = std::mem::replace(&mut buf, Vec::with_capacity(env.batch_size));
                gate.note_batch();
                let out = chain.process(batch, &mut ctx)?;
                if let Some(o) = downstream.overtake() {
                    o.allowed = !chain.holds_records();
                }
                if env.hub.drain_context(&mut ctx, &env.metrics).is_err()
                    || downstream.send_batch(out).is_err()
                    || send_ready(&mut gate, &mut chain, &mut ctx, &mut downstream, &env)?.is_err()
                {
                    return Ok(());
                }
                if pass_overtaken(task, &parts, &mut downstream, &env, &mut last_barrier).is_err() {
                    return Ok(());
                }
            }
            watermarks.update(idx, parts[idx].status(now));
        }
        // Auxiliary partitions end with the others, once they have nothing to give; their
        // end reaches the watermark below, which releases what the steps hold.
        if parts.iter().all(|p| p.ended || p.auxiliary) {
            for p in parts.iter_mut().filter(|p| !p.ended && p.quiet) {
                p.clock.end();
                p.ended = true;
            }
        }
        let now = Instant::now();
        if chain.holds_records() && tick(&mut chain, &mut ctx, &mut downstream, &env, now)?.is_err()
        {
            return Ok(());
        }
        for (idx, p) in parts.iter().enumerate() {
            watermarks.update(idx, p.status(now));
        }
        if forward_watermark(
            &mut watermarks,
            &mut gate,
            &mut chain,
            &mut ctx,
            &mut downstream,
            &env,
        )?
        .is_err()
        {
            return Ok(());
        }
        if parts.iter().all(|p| p.ended) {
            if pass_overtaken(task, &parts, &mut downstream, &env, &mut last_barrier).is_err() {
                return Ok(());
            }
            if let Some(barriers) = &env.barriers {
                barriers.report(Report {
                    from: Participant::Source { task },
                    id: None,
                    contribution: Contribution::Source(partition_states(&parts)),
                });
            }
            let _ = downstream.end();
            let _ = env.hub.end();
            return Ok(());
        }
        if progressed {
            idle_rounds = 0;
        } else {
            // Nothing to read right now (rate limit, idle input): back off gently.
            idle_rounds = (idle_rounds + 1).min(10);
            std::thread::sleep(Duration::from_micros(100 * u64::from(idle_rounds)));
        }
    }
}

/// Fault injection for tests: with `HEADWATER_TEST_BARRIER_LAG=MS`, every source task but the
/// first passes a checkpoint's barrier on only MS milliseconds after it sees the checkpoint
/// asked for, reading and sending records meanwhile. Receivers then get the first task's
/// barrier long before the others', which is when unaligned captures have the most to do.
struct BarrierLag {
    lag: Duration,
    seen: Option<(CheckpointId, Instant)>,
}

impl BarrierLag {
    fn from_env(task: usize) -> Self {
        let ms = std::env::var("HEADWATER_TEST_BARRIER_LAG")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| task > 0)
            .unwrap_or(0);
        BarrierLag {
            lag: Duration::from_millis(ms),
            seen: None,
        }
    }

    /// Whether checkpoint `id`'s barrier may go now.
    fn due(&mut self, id: CheckpointId) -> bool {
        if self.lag.is_zero() {
            return true;
        }
        match self.seen {
            Some((seen, at)) if seen == id => at.elapsed() >= self.lag,
            _ => {
                self.seen = Some((id, Instant::now()));
                false
            }
        }
    }
}

/// After a send: if a checkpoint's barrier overtook it (it was blocked on a full channel),
/// the task reports its partitions' positions for that checkpoint — everything read so far was
/// counted before the barrier — and passes the barrier on to the sinks. Called after every
/// send of a source task and before it reads again, so the positions match the barrier.
fn pass_overtaken(
    task: usize,
    parts: &[Live],
    downstream: &mut Downstream,
    env: &TaskEnv,
    last_barrier: &mut CheckpointId,
) -> Result<(), Disconnected> {
    let Some(id) = downstream.overtake().and_then(|o| o.taken.take()) else {
        return Ok(());
    };
    *last_barrier = id;
    crate::udf::wasm::passed_barrier(id);
    tracing::debug!(task, checkpoint = id, "barrier overtook a blocked send");
    if let Some(barriers) = &env.barriers {
        barriers.report(Report {
            from: Participant::Source { task },
            id: Some(id),
            contribution: Contribution::Source(partition_states(parts)),
        });
    }
    env.hub.barrier(id)
}

/// The positions of a source task's partitions, for a checkpoint.
fn partition_states(parts: &[Live]) -> Vec<PartitionState> {
    parts
        .iter()
        .map(|p| PartitionState {
            source: p.source_name.clone(),
            partition: p.checkpoint_key.clone(),
            position: p.partition.position(),
            max_event_time: (!p.auxiliary && p.clock.max_time() != WATERMARK_START)
                .then(|| p.clock.max_time()),
            ended: p.exhausted,
        })
        .collect()
}

/// Passes barrier `id` on: records held back go first, then the task reports its
/// contribution and the barrier goes to the next stage and to every sink.
fn inject_barrier(
    id: CheckpointId,
    partitions: Vec<PartitionState>,
    task: usize,
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<Result<(), Disconnected>, RunError> {
    let released = chain.on_barrier(ctx)?;
    // Records from here on belong to the next checkpoint (and run its Wasm module version).
    crate::udf::wasm::passed_barrier(id);
    if let Err(e) = env.hub.drain_context(ctx, &env.metrics) {
        return Ok(Err(e));
    }
    if let Err(e) = downstream.send_batch(released) {
        return Ok(Err(e));
    }
    if let Some(barriers) = &env.barriers {
        barriers.report(Report {
            from: Participant::Source { task },
            id: Some(id),
            contribution: Contribution::Source(partitions),
        });
    }
    if let Err(e) = downstream.send_barrier(id) {
        return Ok(Err(e));
    }
    Ok(env.hub.barrier(id))
}
