//! Where a task's results go: the next stage (a shuffle by key group), the sinks, the
//! side-output sinks and the DLQ. All channels are bounded, so a slow consumer slows the
//! producer (backpressure) instead of growing memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::dlq::DeadLetter;
use crate::ops::Context;
use crate::record::{Batch, Message, Record, WatermarkStatus};
use crate::state::{key_group_of, task_of_key_group};
use crate::value::Value;

use super::metrics::Metrics;

/// A message on a stage's inbound channel: which upstream task sent it, and what.
pub type Inbound = (usize, Message);

/// What a sink receives from a task.
#[derive(Debug)]
pub enum SinkItem {
    Data(Vec<Value>),
    /// Everything this task sent before belongs to checkpoint `id`'s epoch.
    Barrier(crate::checkpoint::CheckpointId),
    /// The task sends nothing more.
    End,
}

/// A message on a sink's channel: the sending task (numbered across all stages) and what.
pub type SinkMsg = (usize, SinkItem);

/// What the dead-letter writer receives from a task.
#[derive(Debug)]
pub enum DlqItem {
    Letters(Vec<DeadLetter>),
    Barrier(crate::checkpoint::CheckpointId),
    End,
}

/// A message on the DLQ channel: the sending task and what.
pub type DlqMsg = (usize, DlqItem);

impl super::align::Control for DlqItem {
    fn barrier(&self) -> Option<crate::checkpoint::CheckpointId> {
        match self {
            DlqItem::Barrier(id) => Some(*id),
            _ => None,
        }
    }

    fn is_end(&self) -> bool {
        matches!(self, DlqItem::End)
    }
}

impl super::align::Control for SinkItem {
    fn barrier(&self) -> Option<crate::checkpoint::CheckpointId> {
        match self {
            SinkItem::Barrier(id) => Some(*id),
            _ => None,
        }
    }

    fn is_end(&self) -> bool {
        matches!(self, SinkItem::End)
    }
}

/// The receiver has gone away: the run is being torn down.
#[derive(Debug)]
pub struct Disconnected;

/// Senders to every sink (main and side outputs) and to the DLQ writer.
#[derive(Clone)]
pub struct SinkHub {
    /// This task's number among all tasks (the sinks track each sender's barriers).
    pub sender: usize,
    /// Per sink, its instances' channels (Kafka sinks have one instance per task).
    pub sinks: Vec<Vec<Sender<SinkMsg>>>,
    pub dlq: Sender<DlqMsg>,
    /// `dlq: { sink: NAME }`: dead letters go to that sink as envelopes, not to the file.
    pub dlq_sink: Option<Arc<DlqToSink>>,
}

/// Dead letters routed to a declared sink (a Kafka topic, say).
pub struct DlqToSink {
    pub sink: usize,
    pub names: crate::dlq::Names,
    pub metrics: Arc<Metrics>,
}

impl SinkHub {
    /// The instance of sink `sink` that task `sender` writes to: each task always the same
    /// one, so a key's records (which one task produces) keep their order.
    pub fn instance_for(&self, sink: usize, sender: usize) -> &Sender<SinkMsg> {
        let instances = &self.sinks[sink];
        &instances[sender % instances.len()]
    }

    /// Sends checkpoint `id`'s barrier to every sink instance and the DLQ, after everything
    /// sent before.
    pub fn barrier(&self, id: crate::checkpoint::CheckpointId) -> Result<(), Disconnected> {
        for s in self.sinks.iter().flatten() {
            s.send((self.sender, SinkItem::Barrier(id)))
                .map_err(|_| Disconnected)?;
        }
        self.dlq
            .send((self.sender, DlqItem::Barrier(id)))
            .map_err(|_| Disconnected)
    }

    /// Tells every sink and the DLQ this task is done.
    pub fn end(&self) -> Result<(), Disconnected> {
        for s in self.sinks.iter().flatten() {
            s.send((self.sender, SinkItem::End))
                .map_err(|_| Disconnected)?;
        }
        self.dlq
            .send((self.sender, DlqItem::End))
            .map_err(|_| Disconnected)
    }

    /// Sends dead letters to the DLQ writer (or, as envelopes, to the DLQ sink).
    pub fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), Disconnected> {
        if let Some(to) = &self.dlq_sink {
            let mut values = Vec::with_capacity(letters.len());
            for dl in &letters {
                to.metrics.note_dead_letters(&dl.step, 1);
                to.metrics
                    .note_failure(&dl.step, &dl.error, dl.detail.as_deref());
                let envelope = dl.to_envelope(&to.names).to_string();
                if let Ok(v) = Value::from_json(envelope.as_bytes()) {
                    values.push(v);
                }
            }
            return self
                .instance_for(to.sink, self.sender)
                .send((self.sender, SinkItem::Data(values)))
                .map_err(|_| Disconnected);
        }
        self.dlq
            .send((self.sender, DlqItem::Letters(letters)))
            .map_err(|_| Disconnected)
    }

    /// Sends what an operator put aside: dead letters and side outputs.
    pub fn drain_context(&self, ctx: &mut Context, metrics: &Metrics) -> Result<(), Disconnected> {
        if ctx.late > 0 {
            metrics.late.fetch_add(ctx.late, Ordering::Relaxed);
            ctx.late = 0;
        }
        if !ctx.dead.is_empty() {
            self.dead_letters(std::mem::take(&mut ctx.dead))?;
        }
        if !ctx.side.is_empty() {
            let mut per_sink: Vec<Vec<Value>> = vec![Vec::new(); self.sinks.len()];
            for (idx, v) in ctx.side.drain(..) {
                if let Some(bucket) = per_sink.get_mut(idx) {
                    bucket.push(v);
                }
            }
            for (idx, values) in per_sink.into_iter().enumerate() {
                if !values.is_empty() {
                    self.instance_for(idx, self.sender)
                        .send((self.sender, SinkItem::Data(values)))
                        .map_err(|_| Disconnected)?;
                }
            }
        }
        Ok(())
    }
}

/// The downstream of a task's chain.
pub enum Downstream {
    /// Route each record to the task of the next stage that owns its key group.
    Shuffle {
        from: usize,
        targets: Vec<Sender<Inbound>>,
        max_parallelism: u32,
        buckets: Vec<Batch>,
        metrics: Arc<Metrics>,
        /// Unaligned checkpoints: each target's priority lane for barriers.
        priority: Option<Vec<Sender<super::tasks::PriorityBarrier>>>,
        /// Messages sent to each target on its data lane.
        sent: Vec<u64>,
    },
    /// Write to the main-output sinks (each gets every record).
    Sinks {
        task: usize,
        /// The task's number among all tasks (see [`SinkHub::sender`]).
        sender: usize,
        outputs: Vec<Sender<SinkMsg>>,
        metrics: Arc<Metrics>,
    },
}

impl Downstream {
    pub fn shuffle(
        from: usize,
        targets: Vec<Sender<Inbound>>,
        max_parallelism: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        let buckets = targets.iter().map(|_| Vec::new()).collect();
        let sent = vec![0; targets.len()];
        Downstream::Shuffle {
            from,
            targets,
            max_parallelism,
            buckets,
            metrics,
            priority: None,
            sent,
        }
    }

    /// Barriers go on the targets' priority lanes, overtaking queued data.
    pub fn with_priority(
        mut self,
        lanes: Option<Vec<Sender<super::tasks::PriorityBarrier>>>,
    ) -> Self {
        if let Downstream::Shuffle { priority, .. } = &mut self {
            *priority = lanes;
        }
        self
    }

    pub fn send_batch(&mut self, batch: Batch) -> Result<(), Disconnected> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Downstream::Shuffle {
                from,
                targets,
                max_parallelism,
                buckets,
                metrics,
                sent,
                ..
            } => {
                let parallelism = targets.len();
                let mut key_bytes = Vec::with_capacity(32);
                for record in batch {
                    key_bytes.clear();
                    match &record.key {
                        Some(k) => k.key_bytes(&mut key_bytes),
                        None => Value::Null.key_bytes(&mut key_bytes),
                    }
                    let kg = key_group_of(&key_bytes, *max_parallelism);
                    let task = task_of_key_group(kg, *max_parallelism, parallelism);
                    buckets[task].push(record);
                }
                for (task, bucket) in buckets.iter_mut().enumerate() {
                    if !bucket.is_empty() {
                        let batch: Vec<Record> = std::mem::take(bucket);
                        send_timed(&targets[task], (*from, Message::Data(batch)), metrics)?;
                        sent[task] += 1;
                    }
                }
                Ok(())
            }
            Downstream::Sinks {
                outputs,
                metrics,
                sender,
                ..
            } => {
                metrics
                    .records_out
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let values: Vec<Value> = batch.into_iter().map(|r| r.value).collect();
                send_to_all(outputs, *sender, values, metrics)
            }
        }
    }

    pub fn send_watermark(&mut self, status: WatermarkStatus) -> Result<(), Disconnected> {
        match self {
            Downstream::Shuffle {
                from,
                targets,
                sent,
                ..
            } => {
                for (t, n) in targets.iter().zip(sent.iter_mut()) {
                    t.send((*from, Message::Watermark(status)))
                        .map_err(|_| Disconnected)?;
                    *n += 1;
                }
                Ok(())
            }
            Downstream::Sinks { task, metrics, .. } => {
                if let WatermarkStatus::Active(wm) = status {
                    metrics.set_task_watermark(*task, wm);
                }
                Ok(())
            }
        }
    }

    /// Sends checkpoint `id`'s barrier to the next stage (sinks get it through the hub).
    pub fn send_barrier(
        &mut self,
        id: crate::checkpoint::CheckpointId,
    ) -> Result<(), Disconnected> {
        if let Downstream::Shuffle {
            from,
            targets,
            priority,
            sent,
            ..
        } = self
        {
            match priority {
                Some(lanes) => {
                    for (lane, n) in lanes.iter().zip(sent.iter()) {
                        lane.send((*from, id, *n)).map_err(|_| Disconnected)?;
                    }
                }
                None => {
                    for t in targets.iter() {
                        t.send((*from, Message::Barrier(id)))
                            .map_err(|_| Disconnected)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// No more messages from this task.
    pub fn end(&mut self) -> Result<(), Disconnected> {
        match self {
            Downstream::Shuffle { from, targets, .. } => {
                for t in targets.iter() {
                    t.send((*from, Message::End)).map_err(|_| Disconnected)?;
                }
                Ok(())
            }
            Downstream::Sinks { task, metrics, .. } => {
                metrics.set_task_watermark(*task, i64::MAX);
                Ok(())
            }
        }
    }
}

fn send_to_all(
    outputs: &[Sender<SinkMsg>],
    sender: usize,
    values: Vec<Value>,
    metrics: &Metrics,
) -> Result<(), Disconnected> {
    let Some((last, rest)) = outputs.split_last() else {
        return Ok(());
    };
    for s in rest {
        send_timed(s, (sender, SinkItem::Data(values.clone())), metrics)?;
    }
    send_timed(last, (sender, SinkItem::Data(values)), metrics)
}

/// Sends, counting the time spent waiting on a full channel as backpressure.
fn send_timed<T>(tx: &Sender<T>, msg: T, metrics: &Metrics) -> Result<(), Disconnected> {
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(crossbeam_channel::TrySendError::Full(msg)) => {
            let waited = std::time::Instant::now();
            let sent = tx.send(msg).map_err(|_| Disconnected);
            metrics
                .backpressure_ns
                .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
            sent
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(Disconnected),
    }
}
