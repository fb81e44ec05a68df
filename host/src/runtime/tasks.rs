//! The two kinds of task thread: source tasks (read partitions, stamp watermarks, run the
//! first stage) and stage tasks (merge upstream tasks' streams after a shuffle, run the next
//! stage). Both forward data before the watermark that covers it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::config::spec::EventTimeSpec;
use crate::dlq::DeadLetter;
use crate::ops::{Chain, Context};
use crate::record::{Message, Record, WatermarkStatus, WATERMARK_END};
use crate::sources::{Poll, SourcePartition};
use crate::time::{InputWatermarks, PartitionClock};

use super::metrics::Metrics;
use super::outputs::{Downstream, Inbound, SinkHub};
use super::{RunControl, RunError};

/// One partition assigned to a source task.
pub struct AssignedPartition {
    pub partition: Box<dyn SourcePartition>,
    pub event_time: EventTimeSpec,
}

struct Live {
    partition: Box<dyn SourcePartition>,
    clock: PartitionClock,
    ended: bool,
}

/// Everything a task shares with the rest of the run.
pub struct TaskEnv {
    pub hub: SinkHub,
    pub metrics: Arc<Metrics>,
    pub control: Arc<RunControl>,
    pub batch_size: usize,
}

/// Runs a source task to completion. Returns when every partition is exhausted, the run is
/// stopped (then it ends its partitions, so open windows still fire), or it is cancelled.
pub fn run_source_task(
    assigned: Vec<AssignedPartition>,
    mut chain: Chain,
    mut downstream: Downstream,
    env: TaskEnv,
) -> Result<(), RunError> {
    let mut parts: Vec<Live> = assigned
        .into_iter()
        .map(|a| Live {
            clock: PartitionClock::new(
                a.event_time.max_out_of_orderness,
                a.event_time.idle_timeout,
            ),
            partition: a.partition,
            ended: false,
        })
        .collect();
    let mut watermarks = InputWatermarks::new(parts.len());
    let mut ctx = Context::default();
    let mut buf: Vec<Record> = Vec::with_capacity(env.batch_size);
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut idle_rounds = 0u32;
    loop {
        if env.control.cancelled() {
            return Ok(());
        }
        let stopping = env.control.stop_requested();
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
            let _ = downstream.end();
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

/// Runs a stage task: merges the streams of all upstream tasks until each has ended.
pub fn run_stage_task(
    inbound: Receiver<Inbound>,
    upstream_tasks: usize,
    mut chain: Chain,
    mut downstream: Downstream,
    env: TaskEnv,
) -> Result<(), RunError> {
    let mut watermarks = InputWatermarks::new(upstream_tasks);
    let mut ended = vec![false; upstream_tasks];
    let mut ctx = Context::default();
    loop {
        let next = if chain.holds_records() {
            match inbound.recv_timeout(TICK) {
                Ok(m) => Some(m),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match inbound.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            }
        };
        if env.control.cancelled() {
            return Ok(());
        }
        if chain.holds_records()
            && tick(&mut chain, &mut ctx, &mut downstream, &env, Instant::now())?.is_err()
        {
            return Ok(());
        }
        let Some((from, msg)) = next else {
            continue;
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
                    let _ = downstream.end();
                    return Ok(());
                }
            }
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
