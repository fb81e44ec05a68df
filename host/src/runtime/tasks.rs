//! The two kinds of task thread: source tasks (read partitions, stamp watermarks, run the
//! first stage) and stage tasks (merge upstream tasks' streams after a shuffle, run the next
//! stage). Both forward data before the watermark that covers it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::checkpoint::coordinator::Barriers;
use crate::checkpoint::manifest::PartitionState;
use crate::checkpoint::{CheckpointId, Contribution, Participant, Report};
use crate::config::spec::EventTimeSpec;
use crate::dlq::DeadLetter;
use crate::ops::{Chain, Context};
use crate::record::{EventTime, Message, Record, WatermarkStatus, WATERMARK_END, WATERMARK_START};
use crate::sources::{Poll, SourcePartition};
use crate::state::StateStore;
use crate::time::{InputWatermarks, PartitionClock};

use super::align::{Aligner, Recv, Step};
use super::metrics::Metrics;
use super::outputs::{Downstream, Inbound, SinkHub};
use super::{RunControl, RunError};

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
}

/// Everything a task shares with the rest of the run.
pub struct TaskEnv {
    pub hub: SinkHub,
    pub metrics: Arc<Metrics>,
    pub control: Arc<RunControl>,
    pub batch_size: usize,
    /// Checkpointing is on: where barriers come from and reports go.
    pub barriers: Option<Barriers>,
}

/// A stage task's place in the run, for its snapshots.
pub struct StageSlot {
    pub stage: usize,
    pub task: usize,
    pub key_groups: (u16, u16),
    pub store: Option<StateStore>,
    /// The watermark of the checkpoint the run resumed from.
    pub restored_watermark: Option<EventTime>,
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
                partition: a.partition,
                ended: false,
                exhausted: false,
            }
        })
        .collect();
    let mut last_barrier: CheckpointId = 0;
    // Without checkpoints a stop drains the input (open windows fire); with them the run
    // stops at a checkpoint and the next run resumes there.
    let drain_on_stop = env.barriers.is_none();
    let mut watermarks = InputWatermarks::new(parts.len());
    let mut ctx = Context::default();
    let mut buf: Vec<Record> = Vec::with_capacity(env.batch_size);
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut idle_rounds = 0u32;
    loop {
        if env.control.cancelled() {
            return Ok(());
        }
        if let Some(barriers) = &env.barriers {
            let id = barriers.requested();
            if id > last_barrier {
                last_barrier = id;
                let partitions = partition_states(&parts);
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
        for (idx, p) in parts.iter_mut().enumerate() {
            if p.ended {
                continue;
            }
            if stopping {
                p.clock.end();
                p.ended = true;
                watermarks.update(idx, p.clock.status(Instant::now()));
                continue;
            }
            buf.clear();
            let poll = p
                .partition
                .poll(&mut buf, &mut dead, env.batch_size)
                .map_err(RunError::Source)?;
            let now = Instant::now();
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
                if env.hub.dlq.send(std::mem::take(&mut dead)).is_err() {
                    return Ok(());
                }
            }
            if !buf.is_empty() {
                let mut max_time = i64::MIN;
                for r in &buf {
                    max_time = max_time.max(r.time);
                }
                p.clock.observe(max_time, now);
                env.metrics
                    .records_in
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                env.metrics
                    .max_event_time
                    .fetch_max(max_time, Ordering::Relaxed);
                let batch = std::mem::replace(&mut buf, Vec::with_capacity(env.batch_size));
                let out = chain.process(batch, &mut ctx)?;
                if env.hub.drain_context(&mut ctx, &env.metrics).is_err()
                    || downstream.send_batch(out).is_err()
                {
                    return Ok(());
                }
            }
            watermarks.update(idx, p.clock.status(now));
        }
        let now = Instant::now();
        if chain.holds_records() && tick(&mut chain, &mut ctx, &mut downstream, &env, now)?.is_err()
        {
            return Ok(());
        }
        for (idx, p) in parts.iter().enumerate() {
            watermarks.update(idx, p.clock.status(now));
        }
        if forward_watermark(&mut watermarks, &mut chain, &mut ctx, &mut downstream, &env)?.is_err()
        {
            return Ok(());
        }
        if parts.iter().all(|p| p.ended) {
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

/// The positions of a source task's partitions, for a checkpoint.
fn partition_states(parts: &[Live]) -> Vec<PartitionState> {
    parts
        .iter()
        .map(|p| PartitionState {
            source: p.source_name.clone(),
            partition: p.checkpoint_key.clone(),
            position: p.partition.position(),
            max_event_time: (p.clock.max_time() != WATERMARK_START).then(|| p.clock.max_time()),
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
) -> Result<Result<(), super::outputs::Disconnected>, RunError> {
    let released = chain.on_barrier(ctx)?;
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

/// A stage task's snapshot: held records flushed, RocksDB checkpointed into a local folder,
/// the contribution reported. `id: None` is the final snapshot after the input ended.
fn snapshot_stage(
    id: Option<CheckpointId>,
    slot: &StageSlot,
    watermark: EventTime,
    env: &TaskEnv,
) -> Result<(), RunError> {
    let Some(barriers) = &env.barriers else {
        return Ok(());
    };
    let dir = match &slot.store {
        Some(store) => {
            let dir = barriers.snapshot_dir(id, slot.stage, slot.task);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| {
                    RunError::State(crate::state::StateError::Clear {
                        path: dir.clone(),
                        source,
                    })
                })?;
            }
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|source| {
                    RunError::State(crate::state::StateError::Clear {
                        path: parent.to_path_buf(),
                        source,
                    })
                })?;
            }
            store.checkpoint_to(&dir)?;
            Some(dir)
        }
        None => None,
    };
    barriers.report(Report {
        from: Participant::Stage {
            stage: slot.stage,
            task: slot.task,
        },
        id,
        contribution: Contribution::Stage {
            watermark,
            key_groups: slot.key_groups,
            dir,
        },
    });
    Ok(())
}

/// Runs a stage task: merges the streams of all upstream tasks until each has ended,
/// aligning checkpoint barriers.
pub fn run_stage_task(
    inbound: Receiver<Inbound>,
    upstream_tasks: usize,
    mut chain: Chain,
    mut downstream: Downstream,
    env: TaskEnv,
    slot: StageSlot,
) -> Result<(), RunError> {
    let mut watermarks = match slot.restored_watermark {
        Some(wm) => InputWatermarks::restored(upstream_tasks, wm),
        None => InputWatermarks::new(upstream_tasks),
    };
    if let Some(wm) = slot.restored_watermark {
        chain.restore(slot.key_groups, wm)?;
    }
    let mut ended = vec![false; upstream_tasks];
    let mut ctx = Context::default();
    let mut aligner: Aligner<Message> = Aligner::new(upstream_tasks);
    loop {
        let holds = chain.holds_records();
        let step = aligner.next(|| {
            if holds {
                match inbound.recv_timeout(TICK) {
                    Ok((from, m)) => Recv::Msg(from, m),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => Recv::Timeout,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Recv::Closed,
                }
            } else {
                match inbound.recv() {
                    Ok((from, m)) => Recv::Msg(from, m),
                    Err(_) => Recv::Closed,
                }
            }
        });
        if env.control.cancelled() {
            return Ok(());
        }
        if chain.holds_records()
            && tick(&mut chain, &mut ctx, &mut downstream, &env, Instant::now())?.is_err()
        {
            return Ok(());
        }
        let (from, msg) = match step {
            Step::Deliver(from, msg) => (from, msg),
            Step::Timeout => continue,
            Step::Closed => break,
            Step::Aligned(id) => {
                let released = chain.on_barrier(&mut ctx)?;
                if env.hub.drain_context(&mut ctx, &env.metrics).is_err()
                    || downstream.send_batch(released).is_err()
                {
                    return Ok(());
                }
                snapshot_stage(Some(id), &slot, watermarks.current(), &env)?;
                if downstream.send_barrier(id).is_err() || env.hub.barrier(id).is_err() {
                    return Ok(());
                }
                aligner.release();
                continue;
            }
        };
        match msg {
            Message::Data(batch) => {
                let out = chain.process(batch, &mut ctx)?;
                if env.hub.drain_context(&mut ctx, &env.metrics).is_err()
                    || downstream.send_batch(out).is_err()
                {
                    return Ok(());
                }
            }
            Message::Watermark(status) => {
                watermarks.update(from, status);
                if forward_watermark(&mut watermarks, &mut chain, &mut ctx, &mut downstream, &env)?
                    .is_err()
                {
                    return Ok(());
                }
            }
            Message::End => {
                watermarks.update(from, WatermarkStatus::Active(WATERMARK_END));
                if let Some(slot) = ended.get_mut(from) {
                    *slot = true;
                }
                if forward_watermark(&mut watermarks, &mut chain, &mut ctx, &mut downstream, &env)?
                    .is_err()
                {
                    return Ok(());
                }
                if ended.iter().all(|e| *e) {
                    snapshot_stage(None, &slot, watermarks.current(), &env)?;
                    let _ = downstream.end();
                    let _ = env.hub.end();
                    return Ok(());
                }
            }
            // The aligner turns barriers into `Step::Aligned`.
            Message::Barrier(_) => {}
        }
    }
    // All senders are gone without an End: the run was torn down.
    Ok(())
}

/// How often a stage task whose chain holds records back checks the clock.
const TICK: Duration = Duration::from_millis(2);

/// Lets operators that hold records back release those whose time is up.
fn tick(
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
    now: Instant,
) -> Result<Result<(), super::outputs::Disconnected>, RunError> {
    let released = chain.on_tick(now, ctx)?;
    if let Err(e) = env.hub.drain_context(ctx, &env.metrics) {
        return Ok(Err(e));
    }
    Ok(downstream.send_batch(released))
}

/// If the combined watermark changed, lets the chain act on it (firing windows), sends what
/// it released, then the watermark itself.
fn forward_watermark(
    watermarks: &mut InputWatermarks,
    chain: &mut Chain,
    ctx: &mut Context,
    downstream: &mut Downstream,
    env: &TaskEnv,
) -> Result<Result<(), super::outputs::Disconnected>, RunError> {
    let Some(status) = watermarks.changed() else {
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
