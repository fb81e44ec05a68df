//! Stage tasks: merge the streams of every upstream task after a shuffle, run the next
//! stage, and pass checkpoint barriers aligned (`align.rs`) or unaligned (`unaligned.rs`),
//! snapshotting their RocksDB instance.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::checkpoint::coordinator::Barriers;
use crate::checkpoint::{CheckpointId, Contribution, Participant, Report};
use crate::ops::{Chain, Context};
use crate::record::{Batch, EventTime, Message, Record, WatermarkStatus, WATERMARK_END};
use crate::state::StateStore;
use crate::time::InputWatermarks;

use super::align::{Aligner, Recv, Step};
use super::outputs::{Downstream, Inbound};
use super::tasks::{
    forward_watermark, release_in_flight, send_ready, tick, TaskEnv, WatermarkGate, TICK,
};
use super::unaligned::{self, Ended, Flow, LaneItem, UnalignedInput};
use super::RunError;

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
    /// Holds each watermark until the batches received before it are out of the chain.
    gate: WatermarkGate,
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
        // Records an unaligned checkpoint held in flight come in again here (see `Accounting`).
        env.metrics
            .restored
            .fetch_add(restored.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((
            Stage {
                chain,
                downstream,
                env,
                slot,
                watermarks,
                gate: WatermarkGate::default(),
                ended: vec![false; upstream_tasks],
                ctx: Context::default(),
            },
            restored,
        ))
    }

    fn process(&mut self, batch: Vec<Record>) -> Result<Flow, RunError> {
        self.gate.note_batch();
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
        // The batch it released, if any, is followed by its watermark.
        Ok(
            match send_ready(
                &mut self.gate,
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

    fn tick(&mut self) -> Result<Flow, RunError> {
        if !self.chain.holds_records() {
            return Ok(Flow::Go);
        }
        if tick(
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
        // A watermark held back by calls in flight goes on once they are answered.
        self.forward_watermark()
    }

    /// Releases what operators hold: it arrived before the barrier about to pass.
    fn flush_for_barrier(&mut self) -> Result<Flow, RunError> {
        // Batches in flight go first, each with its watermark.
        let Ok(()) = release_in_flight(
            &mut self.gate,
            &mut self.chain,
            &mut self.ctx,
            &mut self.downstream,
            &self.env,
        )?
        else {
            return Ok(Flow::Stop);
        };
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
                &mut self.gate,
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
