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
use crate::record::{
    Batch, EventTime, Message, Record, WatermarkStatus, WATERMARK_END, WATERMARK_START,
};
use crate::sources::{Poll, SourcePartition};
use crate::state::StateStore;
use crate::time::{InputWatermarks, PartitionClock};

use super::align::{Aligner, Recv, Step};
use super::outputs::{Downstream, Inbound, SinkHub};
use super::unaligned::{self, Ended, Flow, LaneItem, UnalignedInput};
use super::{RunControl, RunError};
use crate::metrics::Metrics;

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
    /// Records in flight to this task at that checkpoint (unaligned), processed first.
    pub restored_channel: Vec<Record>,
    /// Inputs that will never send a record (source tasks without partitions): left out of
    /// the watermark from the start.
    pub silent_inputs: Vec<usize>,
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
                if env.hub.dead_letters(std::mem::take(&mut dead)).is_err() {
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
                if let Some(o) = downstream.overtake() {
                    o.allowed = !chain.holds_records();
                }
                if env.hub.drain_context(&mut ctx, &env.metrics).is_err()
                    || downstream.send_batch(out).is_err()
                {
                    return Ok(());
                }
                if pass_overtaken(task, &parts, &mut downstream, &env, &mut last_barrier).is_err() {
                    return Ok(());
                }
            }
            watermarks.update(idx, parts[idx].clock.status(now));
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
) -> Result<(), super::outputs::Disconnected> {
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

/// Checkpoints the stage task's RocksDB instance into its local snapshot folder (stateful
/// stages only). `id: None` is the final snapshot after the input ended.
fn take_snapshot(
    id: Option<CheckpointId>,
    slot: &StageSlot,
    barriers: &Barriers,
) -> Result<Option<std::path::PathBuf>, RunError> {
    let Some(store) = &slot.store else {
        return Ok(None);
    };
    let dir = barriers.snapshot_dir(id, slot.stage, slot.task);
    let clear = |path: &std::path::Path, source| {
        RunError::State(crate::state::StateError::Clear {
            path: path.to_path_buf(),
            source,
        })
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| clear(&dir, e))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| clear(parent, e))?;
    }
    store.checkpoint_to(&dir)?;
    Ok(Some(dir))
}

fn report_stage(
    id: Option<CheckpointId>,
    slot: &StageSlot,
    watermark: EventTime,
    dir: Option<std::path::PathBuf>,
    channel: Option<std::path::PathBuf>,
    barriers: &Barriers,
) {
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
            channel,
        },
    });
}

/// A stage task's whole snapshot (aligned checkpoints and the final one): state, then report.
fn snapshot_stage(
    id: Option<CheckpointId>,
    slot: &StageSlot,
    watermark: EventTime,
    env: &TaskEnv,
) -> Result<(), RunError> {
    let Some(barriers) = &env.barriers else {
        return Ok(());
    };
    let dir = take_snapshot(id, slot, barriers)?;
    report_stage(id, slot, watermark, dir, None, barriers);
    Ok(())
}

/// A stage task's working state, shared by the aligned and unaligned loops.
struct Stage {
    chain: Chain,
    downstream: Downstream,
    env: TaskEnv,
    slot: StageSlot,
    watermarks: InputWatermarks,
    ended: Vec<bool>,
    ctx: Context,
}

impl Stage {
    fn new(
        upstream_tasks: usize,
        mut chain: Chain,
        downstream: Downstream,
        env: TaskEnv,
        mut slot: StageSlot,
    ) -> Result<(Stage, Vec<Record>), RunError> {
        let mut watermarks = match slot.restored_watermark {
            Some(wm) => InputWatermarks::restored(upstream_tasks, wm),
            None => InputWatermarks::new(upstream_tasks),
        };
        for &input in &slot.silent_inputs {
            watermarks.update(input, WatermarkStatus::Active(WATERMARK_END));
        }
        if let Some(wm) = slot.restored_watermark {
            chain.restore(slot.key_groups, wm)?;
        }
        let restored = std::mem::take(&mut slot.restored_channel);
        Ok((
            Stage {
                chain,
                downstream,
                env,
                slot,
                watermarks,
                ended: vec![false; upstream_tasks],
                ctx: Context::default(),
            },
            restored,
        ))
    }

    fn process(&mut self, batch: Vec<Record>) -> Result<Flow, RunError> {
        let out = self.chain.process(batch, &mut self.ctx)?;
        if self
            .env
            .hub
            .drain_context(&mut self.ctx, &self.env.metrics)
            .is_err()
            || self.downstream.send_batch(out).is_err()
        {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    fn tick(&mut self) -> Result<Flow, RunError> {
        if self.chain.holds_records()
            && tick(
                &mut self.chain,
                &mut self.ctx,
                &mut self.downstream,
                &self.env,
                Instant::now(),
            )?
            .is_err()
        {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    /// Releases what operators hold: it arrived before the barrier about to pass.
    fn flush_for_barrier(&mut self) -> Result<Flow, RunError> {
        let released = self.chain.on_barrier(&mut self.ctx)?;
        if self
            .env
            .hub
            .drain_context(&mut self.ctx, &self.env.metrics)
            .is_err()
            || self.downstream.send_batch(released).is_err()
        {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    fn forward_barrier(&mut self, id: CheckpointId) -> Flow {
        crate::udf::wasm::passed_barrier(id);
        if self.downstream.send_barrier(id).is_err() || self.env.hub.barrier(id).is_err() {
            return Flow::Stop;
        }
        Flow::Go
    }

    /// Data, a watermark or the end of one input.
    fn handle(&mut self, from: usize, msg: Message) -> Result<Flow, RunError> {
        match msg {
            Message::Data(batch) => self.process(batch),
            Message::Watermark(status) => {
                self.watermarks.update(from, status);
                self.forward_watermark()
            }
            Message::End => {
                self.watermarks
                    .update(from, WatermarkStatus::Active(WATERMARK_END));
                if let Some(slot) = self.ended.get_mut(from) {
                    *slot = true;
                }
                if let Flow::Stop = self.forward_watermark()? {
                    return Ok(Flow::Stop);
                }
                if self.ended.iter().all(|e| *e) {
                    return Ok(Flow::Done);
                }
                Ok(Flow::Go)
            }
            // Barriers are taken out of the stream before (aligner, priority lane).
            Message::Barrier(_) => Ok(Flow::Go),
        }
    }

    fn forward_watermark(&mut self) -> Result<Flow, RunError> {
        Ok(
            match forward_watermark(
                &mut self.watermarks,
                &mut self.chain,
                &mut self.ctx,
                &mut self.downstream,
                &self.env,
            )? {
                Ok(()) => Flow::Go,
                Err(_) => Flow::Stop,
            },
        )
    }

    /// Every input ended: the final snapshot, then the end goes downstream and to the sinks.
    fn finish(&mut self) -> Result<(), RunError> {
        snapshot_stage(None, &self.slot, self.watermarks.current(), &self.env)?;
        let _ = self.downstream.end();
        let _ = self.env.hub.end();
        Ok(())
    }
}

pub use super::unaligned::PriorityBarrier;

/// Runs a stage task: merges the streams of all upstream tasks until each has ended,
/// passing checkpoint barriers aligned (no `priority` lane) or unaligned.
pub fn run_stage_task(
    inbound: Receiver<Inbound>,
    priority: Option<UnalignedInput>,
    upstream_tasks: usize,
    chain: Chain,
    downstream: Downstream,
    env: TaskEnv,
    slot: StageSlot,
) -> Result<(), RunError> {
    let (mut stage, restored) = Stage::new(upstream_tasks, chain, downstream, env, slot)?;
    // Records that were in flight to this task at an unaligned checkpoint come first.
    if !restored.is_empty() {
        if let Flow::Stop = stage.process(restored)? {
            return Ok(());
        }
    }
    match priority {
        None => run_aligned(&mut stage, inbound, upstream_tasks),
        Some(input) => {
            // However this task ends, its senders stop waiting for its credit.
            let _close = super::outputs::CloseCreditsOnDrop(input.credits.clone());
            run_unaligned(&mut stage, inbound, &input, upstream_tasks)
        }
    }
}

fn run_aligned(
    stage: &mut Stage,
    inbound: Receiver<Inbound>,
    upstream_tasks: usize,
) -> Result<(), RunError> {
    let mut aligner: Aligner<Message> = Aligner::new(upstream_tasks);
    loop {
        let holds = stage.chain.holds_records();
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
        if stage.env.control.cancelled() {
            return Ok(());
        }
        if let Flow::Stop = stage.tick()? {
            return Ok(());
        }
        let flow = match step {
            Step::Deliver(from, msg) => stage.handle(from, msg)?,
            Step::Timeout => Flow::Go,
            Step::Closed => return Ok(()), // torn down without an End
            Step::Aligned(id) => {
                if let Flow::Stop = stage.flush_for_barrier()? {
                    return Ok(());
                }
                snapshot_stage(
                    Some(id),
                    &stage.slot,
                    stage.watermarks.current(),
                    &stage.env,
                )?;
                let flow = stage.forward_barrier(id);
                aligner.release();
                flow
            }
        };
        match flow {
            Flow::Go => {}
            Flow::Stop => return Ok(()),
            Flow::Done => return stage.finish(),
        }
    }
}

impl LaneItem for Message {
    type Payload = Batch;
    /// Stage tasks number every message (see [`super::outputs::Downstream::send_barrier`]).
    fn counted(&self) -> bool {
        true
    }
    fn is_end(&self) -> bool {
        matches!(self, Message::End)
    }
    fn payload(&self) -> Option<&Batch> {
        match self {
            Message::Data(batch) => Some(batch),
            _ => None,
        }
    }
}

/// A stage task in unaligned checkpoints: it snapshots at a checkpoint's first barrier and
/// stores the records its inputs sent before their barriers that it had not processed then.
struct UnalignedStage<'a> {
    stage: &'a mut Stage,
    handled: &'a super::outputs::CreditCounters,
}

/// How long an unaligned stage task waits for data before looking at its priority lane.
const PRIORITY_POLL: Duration = Duration::from_millis(5);

impl unaligned::Participant for UnalignedStage<'_> {
    type Item = Message;
    /// The snapshot folder (stateful stages) and the watermark at the snapshot.
    type Begun = (Option<std::path::PathBuf>, EventTime);

    fn wait(&self) -> Duration {
        if self.stage.chain.holds_records() {
            TICK
        } else {
            PRIORITY_POLL
        }
    }

    fn cancelled(&self) -> bool {
        self.stage.env.control.cancelled()
    }

    fn must_align(&self, id: CheckpointId) -> bool {
        self.stage
            .env
            .barriers
            .as_ref()
            .is_some_and(|b| b.must_align(id))
    }

    fn begin(&mut self, id: CheckpointId) -> Result<Option<Self::Begun>, RunError> {
        if let Flow::Stop = self.stage.flush_for_barrier()? {
            return Ok(None);
        }
        let dir = match &self.stage.env.barriers {
            Some(b) => take_snapshot(Some(id), &self.stage.slot, b)?,
            None => None,
        };
        let watermark = self.stage.watermarks.current();
        if let Flow::Stop = self.stage.forward_barrier(id) {
            return Ok(None);
        }
        Ok(Some((dir, watermark)))
    }

    fn abandon(&mut self, id: CheckpointId, (dir, watermark): Self::Begun) {
        // The coordinator moved on to a newer checkpoint: it discards this report's snapshot.
        if let Some(barriers) = &self.stage.env.barriers {
            report_stage(Some(id), &self.stage.slot, watermark, dir, None, barriers);
        }
    }

    fn complete(
        &mut self,
        id: CheckpointId,
        (dir, watermark): Self::Begun,
        in_flight: Vec<Batch>,
    ) -> Result<(), RunError> {
        let Some(barriers) = &self.stage.env.barriers else {
            return Ok(());
        };
        let records: Vec<Record> = in_flight.into_iter().flatten().collect();
        let channel = if records.is_empty() {
            None
        } else {
            let path = barriers
                .snapshot_dir(Some(id), self.stage.slot.stage, self.stage.slot.task)
                .with_extension("channel.jsonl");
            let fail = |path: &std::path::Path, source| {
                RunError::State(crate::state::StateError::Clear {
                    path: path.to_path_buf(),
                    source,
                })
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(parent, e))?;
            }
            crate::checkpoint::channel::write_records(&path, &records)
                .map_err(|e| fail(&path, e))?;
            Some(path)
        };
        report_stage(
            Some(id),
            &self.stage.slot,
            watermark,
            dir,
            channel,
            barriers,
        );
        Ok(())
    }

    fn tick(&mut self) -> Result<Flow, RunError> {
        self.stage.tick()
    }

    fn handle(&mut self, from: usize, msg: Message) -> Result<Flow, RunError> {
        // The sender may send one more (see `Downstream::with_credits`).
        self.handled.handled_one(from);
        self.stage.handle(from, msg)
    }
}

fn run_unaligned(
    stage: &mut Stage,
    inbound: Receiver<Inbound>,
    input: &UnalignedInput,
    upstream_tasks: usize,
) -> Result<(), RunError> {
    let ended = unaligned::run(
        &mut UnalignedStage {
            stage,
            handled: &input.credits,
        },
        &inbound,
        &input.priority,
        upstream_tasks,
        input.aligned_timeout,
    )?;
    match ended {
        Ended::Done => stage.finish(),
        Ended::Stopped => Ok(()),
    }
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
