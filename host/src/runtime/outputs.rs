//! Where a task's results go: the next stage (a shuffle by key group), the sinks, the
//! side-output sinks and the DLQ. All channels are bounded, so a slow consumer slows the
//! producer (backpressure) instead of growing memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::dlq::DeadLetter;
use crate::ops::Context;
use crate::record::{Batch, Message, WatermarkStatus};
use crate::state::{key_group_of, task_of_key_group};
use crate::value::Value;

use crate::metrics::Metrics;

pub use super::credits::{CloseCreditsOnDrop, CreditCounters, Credits};

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
    /// Per sink, its instances' inputs (Kafka sinks have one instance per task).
    pub sinks: Vec<Vec<SinkLane>>,
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
    pub fn instance_for(&self, sink: usize, sender: usize) -> &SinkLane {
        let instances = &self.sinks[sink];
        &instances[sender % instances.len()]
    }

    /// Sends checkpoint `id`'s barrier to every sink instance (after everything sent before,
    /// or unaligned on its priority lane) and the DLQ (after everything sent before).
    pub fn barrier(&self, id: crate::checkpoint::CheckpointId) -> Result<(), Disconnected> {
        for s in self.sinks.iter().flatten() {
            s.send_barrier(self.sender, id)?;
        }
        self.dlq
            .send((self.sender, DlqItem::Barrier(id)))
            .map_err(|_| Disconnected)
    }

    /// Tells every sink and the DLQ this task is done.
    pub fn end(&self) -> Result<(), Disconnected> {
        for s in self.sinks.iter().flatten() {
            s.data
                .send((self.sender, SinkItem::End))
                .map_err(|_| Disconnected)?;
        }
        self.dlq
            .send((self.sender, DlqItem::End))
            .map_err(|_| Disconnected)
    }

    /// Sends dead letters to the DLQ writer (or, as envelopes, to the DLQ sink).
    pub fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), Disconnected> {
        if let Some(to) = &self.dlq_sink {
            let lane = self.instance_for(to.sink, self.sender);
            let mut values = Vec::with_capacity(letters.len());
            for dl in &letters {
                super::dlq_task::note_dead_letter(&to.metrics, dl);
                let envelope = match &lane.limit {
                    Some(limit) => limit.envelope(dl, &to.names),
                    None => Value::from_json(dl.to_envelope(&to.names).to_string().as_bytes()).ok(),
                };
                values.extend(envelope);
            }
            return lane.send_data(self.sender, values, &to.metrics);
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
        if ctx.remediated + ctx.remediation_dropped > 0 {
            metrics
                .remediated
                .fetch_add(std::mem::take(&mut ctx.remediated), Ordering::Relaxed);
            metrics.remediation_dropped.fetch_add(
                std::mem::take(&mut ctx.remediation_dropped),
                Ordering::Relaxed,
            );
        }
        for (counter, n) in [
            (&metrics.filtered, std::mem::take(&mut ctx.filtered)),
            (&metrics.absorbed, std::mem::take(&mut ctx.absorbed)),
            (&metrics.created, std::mem::take(&mut ctx.created)),
            (
                &metrics.dead_ends,
                (ctx.dead.len() as u64).saturating_sub(std::mem::take(&mut ctx.dead_not_an_end)),
            ),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
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
                        .send_data(self.sender, values, metrics)?;
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
        /// A source task's unaligned barriers may overtake a send blocked on a full channel.
        overtake: Option<Box<Overtake>>,
        /// Unaligned: per target, the messages it has handled from each sender, and how many
        /// unhandled messages a sender may have outstanding (channel and the target's queue).
        credits: Option<(Vec<Credits>, u64)>,
    },
    /// Write to the main-output sinks (each gets every record).
    Sinks {
        task: usize,
        /// The task's number among all tasks (see [`SinkHub::sender`]).
        sender: usize,
        outputs: Vec<SinkLane>,
        metrics: Arc<Metrics>,
        /// Where results too large for a sink go (its DLQ), before this task's next barrier.
        hub: SinkHub,
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
            overtake: None,
            credits: None,
        }
    }

    /// Unaligned checkpoints: a sender keeps at most `limit` messages a target has not handled
    /// yet, wherever they are (its channel, or the target's queue after a capture took them
    /// off the channel), so captures do not let backlogs grow.
    pub fn with_credits(mut self, given: Option<(Vec<Credits>, u64)>) -> Self {
        if let Downstream::Shuffle { credits, .. } = &mut self {
            *credits = given;
        }
        self
    }

    /// A source task's barriers overtake its own sends blocked on a full channel (unaligned
    /// checkpoints only: needs priority lanes).
    pub fn with_overtake(
        mut self,
        barriers: Option<crate::checkpoint::coordinator::Barriers>,
    ) -> Self {
        if let Downstream::Shuffle {
            overtake,
            priority: Some(_),
            ..
        } = &mut self
        {
            *overtake = barriers.map(|barriers| {
                Box::new(Overtake {
                    barriers,
                    last: 0,
                    allowed: false,
                    taken: None,
                })
            });
        }
        self
    }

    /// The overtaking state, for source tasks that have it.
    pub fn overtake(&mut self) -> Option<&mut Overtake> {
        match self {
            Downstream::Shuffle {
                overtake: Some(o), ..
            } => Some(o),
            _ => None,
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
                priority,
                overtake,
                credits,
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
                let pending: Vec<bool> = buckets.iter().map(|b| !b.is_empty()).collect();
                for k in 0..buckets.len() {
                    if !pending[k] {
                        continue;
                    }
                    let msg = (*from, Message::Data(std::mem::take(&mut buckets[k])));
                    {
                        let mut ahead = match (priority.as_ref(), overtake.as_deref_mut()) {
                            (Some(lanes), Some(o)) if o.allowed => Some((lanes, o)),
                            _ => None,
                        };
                        let sent_so_far: &[u64] = sent;
                        // Blocked for long enough to see a checkpoint asked for: its barrier
                        // goes ahead on the priority lanes, counting this message and the ones
                        // this batch still sends as before it (they were read before it); the
                        // receivers record them as in-flight data.
                        let mut on_block = || {
                            let Some((lanes, o)) = ahead.as_mut() else {
                                return;
                            };
                            let id = o.barriers.requested();
                            if id <= o.last {
                                return;
                            }
                            for (t, lane) in lanes.iter().enumerate() {
                                let at =
                                    sent_so_far[t] + u64::from(t == k || (t > k && pending[t]));
                                let _ = lane.send((*from, id, at));
                            }
                            o.last = id;
                            o.taken = Some(id);
                        };
                        if let Some((handled, limit)) = credits.as_ref() {
                            wait_for_credit(
                                &handled[k],
                                *from,
                                sent_so_far[k],
                                *limit,
                                metrics,
                                &mut on_block,
                            )?;
                        }
                        send_overtaking(&targets[k], msg, metrics, &mut on_block)?;
                    }
                    sent[k] += 1;
                }
                Ok(())
            }
            Downstream::Sinks {
                outputs,
                metrics,
                sender,
                hub,
                ..
            } => {
                metrics
                    .records_out
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if outputs.iter().any(|o| o.limit.is_some()) {
                    return send_limited(outputs, hub, batch, metrics);
                }
                let values: Vec<Value> = batch.into_iter().map(|r| r.into_value()).collect();
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
    outputs: &[SinkLane],
    sender: usize,
    values: Vec<Value>,
    metrics: &Metrics,
) -> Result<(), Disconnected> {
    let Some((last, rest)) = outputs.split_last() else {
        return Ok(());
    };
    for s in rest {
        s.send_data(sender, values.clone(), metrics)?;
    }
    last.send_data(sender, values, metrics)
}

/// Sends results to sinks some of which limit their messages' size (Kafka): a result too large
/// for a sink becomes a dead letter of this task instead (the other sinks still get it).
fn send_limited(
    outputs: &[SinkLane],
    hub: &SinkHub,
    batch: Batch,
    metrics: &Metrics,
) -> Result<(), Disconnected> {
    let meta: Vec<_> = batch.iter().map(|r| (r.origin, r.time)).collect();
    let mut values: Vec<Value> = batch.into_iter().map(|r| r.into_value()).collect();
    for (i, lane) in outputs.iter().enumerate() {
        let mut mine = if i + 1 == outputs.len() {
            std::mem::take(&mut values)
        } else {
            values.clone()
        };
        if let Some(limit) = &lane.limit {
            let dead = limit.retain_fitting(&mut mine, &meta);
            if !dead.is_empty() {
                hub.dead_letters(dead)?;
            }
        }
        if !mine.is_empty() {
            lane.send_data(hub.sender, mine, metrics)?;
        }
    }
    Ok(())
}

/// One sink instance's input: its channel, in unaligned checkpoints its priority lane and
/// credits, and the largest message the sink can send (Kafka).
#[derive(Clone)]
pub struct SinkLane {
    pub data: Sender<SinkMsg>,
    pub unaligned: Option<Arc<SinkUnaligned>>,
    pub limit: Option<Arc<crate::sinks::limit::MessageLimit>>,
}

/// An unaligned sink instance's priority lane (barriers overtake the queued data) and, per
/// sender, the data messages sent and handled (a sender keeps at most `limit` unhandled).
pub struct SinkUnaligned {
    pub priority: Sender<super::tasks::PriorityBarrier>,
    pub sent: Vec<AtomicU64>,
    pub credits: Credits,
    pub limit: u64,
}

impl SinkUnaligned {
    pub fn new(
        priority: Sender<super::tasks::PriorityBarrier>,
        credits: Credits,
        limit: u64,
    ) -> Self {
        SinkUnaligned {
            priority,
            sent: (0..credits.handled.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            credits,
            limit,
        }
    }
}

impl SinkLane {
    /// Sends a batch of results (unaligned: once the sink has handled enough of this sender's
    /// earlier batches).
    pub fn send_data(
        &self,
        sender: usize,
        values: Vec<Value>,
        metrics: &Metrics,
    ) -> Result<(), Disconnected> {
        let Some(u) = &self.unaligned else {
            return send_timed(&self.data, (sender, SinkItem::Data(values)), metrics);
        };
        let Some(sent) = u.sent.get(sender) else {
            return send_timed(&self.data, (sender, SinkItem::Data(values)), metrics);
        };
        let so_far = sent.load(Ordering::Relaxed);
        wait_for_credit(&u.credits, sender, so_far, u.limit, metrics, &mut || {})?;
        send_timed(&self.data, (sender, SinkItem::Data(values)), metrics)?;
        sent.store(so_far + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends checkpoint `id`'s barrier: after the data (aligned), or on the priority lane with
    /// the number of data messages sent before it (unaligned).
    pub fn send_barrier(
        &self,
        sender: usize,
        id: crate::checkpoint::CheckpointId,
    ) -> Result<(), Disconnected> {
        match &self.unaligned {
            None => self
                .data
                .send((sender, SinkItem::Barrier(id)))
                .map_err(|_| Disconnected),
            Some(u) => {
                let at = u.sent.get(sender).map_or(0, |n| n.load(Ordering::Relaxed));
                u.priority.send((sender, id, at)).map_err(|_| Disconnected)
            }
        }
    }
}

/// Waits until the receiver has handled enough of `sender`'s messages that one more keeps at
/// most `limit` outstanding; `on_block` runs every few milliseconds meanwhile. A blocked
/// sender sleeps until the receiver has handled half its outstanding messages (so it wakes
/// once per half a window, not once per message).
fn wait_for_credit(
    credits: &CreditCounters,
    sender: usize,
    sent: u64,
    limit: u64,
    metrics: &Metrics,
    on_block: &mut dyn FnMut(),
) -> Result<(), Disconnected> {
    let Some(handled) = credits.handled.get(sender) else {
        return Ok(());
    };
    if sent.saturating_sub(handled.load(Ordering::Acquire)) < limit {
        return Ok(());
    }
    let waited = std::time::Instant::now();
    let mut last_poll = waited;
    // Resume once at most half the window is outstanding (with a window of 1: none).
    let wake_at = sent.saturating_sub(limit / 2);
    loop {
        if let Ok(mut w) = credits.waiters[sender].lock() {
            *w = Some(std::thread::current());
        }
        credits.wake_at[sender].store(wake_at, Ordering::SeqCst);
        if handled.load(Ordering::SeqCst) >= wake_at {
            break;
        }
        if credits.closed.load(Ordering::SeqCst) {
            return Err(Disconnected);
        }
        std::thread::park_timeout(OVERTAKE_POLL.saturating_sub(last_poll.elapsed()));
        if last_poll.elapsed() >= OVERTAKE_POLL {
            last_poll = std::time::Instant::now();
            on_block();
        }
    }
    credits.wake_at[sender].store(u64::MAX, Ordering::SeqCst);
    metrics
        .backpressure_ns
        .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

/// The part of a source task's unaligned checkpointing that happens inside a blocked send.
pub struct Overtake {
    barriers: crate::checkpoint::coordinator::Barriers,
    /// The newest barrier the task passed on.
    pub last: crate::checkpoint::CheckpointId,
    /// Everything the task read is in the batch being sent (its chain holds no records):
    /// only then may a barrier overtake it.
    pub allowed: bool,
    /// A barrier that overtook a send: the task reports its positions for it next.
    pub taken: Option<crate::checkpoint::CheckpointId>,
}

/// How often a blocked send looks for a checkpoint whose barrier may overtake it.
const OVERTAKE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Like [`send_timed`], calling `on_block` every few milliseconds while the channel is full.
fn send_overtaking<T>(
    tx: &Sender<T>,
    msg: T,
    metrics: &Metrics,
    on_block: &mut dyn FnMut(),
) -> Result<(), Disconnected> {
    let mut msg = match tx.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(crossbeam_channel::TrySendError::Full(msg)) => msg,
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Err(Disconnected),
    };
    let waited = std::time::Instant::now();
    let result = loop {
        match tx.send_timeout(msg, OVERTAKE_POLL) {
            Ok(()) => break Ok(()),
            Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                msg = m;
                on_block();
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => break Err(Disconnected),
        }
    };
    metrics
        .backpressure_ns
        .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
    result
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn records(n: i64) -> Batch {
        (0..n)
            .map(|i| {
                let mut r = crate::record::Record::new(Value::Int(i), i, Default::default());
                r.key = Some(Value::Int(i));
                r
            })
            .collect()
    }

    #[test]
    fn a_barrier_overtakes_a_send_blocked_on_credits_counting_what_was_read_before_it() {
        let (tx0, rx0) = crossbeam_channel::bounded(1);
        let (tx1, rx1) = crossbeam_channel::bounded(1);
        let (lane0, barriers0) = crossbeam_channel::unbounded();
        let (lane1, barriers1) = crossbeam_channel::unbounded();
        let handled: Vec<Credits> = (0..2).map(|_| CreditCounters::new(1)).collect();
        let requested = Arc::new(AtomicU64::new(0));
        let (barriers, _reports) = crate::checkpoint::coordinator::Barriers::for_test(
            requested.clone(),
            std::path::Path::new(""),
        );
        let mut down = Downstream::shuffle(0, vec![tx0, tx1], 128, Arc::new(Metrics::new(1)))
            .with_priority(Some(vec![lane0, lane1]))
            .with_credits(Some((handled.clone(), 1)))
            .with_overtake(Some(barriers));
        // One message to each target: both now have one unhandled message (the limit).
        down.send_batch(records(64)).expect("first batch");
        assert!(rx0.len() == 1 && rx1.len() == 1);
        if let Some(o) = down.overtake() {
            o.allowed = true;
        }
        requested.store(1, Ordering::Release);
        let sender = std::thread::spawn(move || {
            down.send_batch(records(64)).expect("second batch");
            down
        });
        // The sender is blocked; checkpoint 1's barrier goes ahead, counting both messages of
        // the batch being sent as before it.
        let b0 = barriers0
            .recv_timeout(Duration::from_secs(5))
            .expect("barrier to target 0");
        let b1 = barriers1
            .recv_timeout(Duration::from_secs(5))
            .expect("barrier to target 1");
        assert_eq!((b0, b1), ((0, 1, 2), (0, 1, 2)));
        // The targets handle their messages: the blocked batch goes through.
        for (rx, h) in [(&rx0, &handled[0]), (&rx1, &handled[1])] {
            rx.recv_timeout(Duration::from_secs(5))
                .expect("first message");
            h.handled_one(0);
        }
        for rx in [&rx0, &rx1] {
            rx.recv_timeout(Duration::from_secs(5))
                .expect("second message");
        }
        let mut down = sender.join().expect("sender");
        let o = down.overtake().expect("overtaking");
        assert_eq!((o.taken, o.last), (Some(1), 1));
        assert!(barriers0.try_recv().is_err(), "one barrier per checkpoint");
    }
}
