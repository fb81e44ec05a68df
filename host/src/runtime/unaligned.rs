//! Unaligned checkpoints at a receiver: a stage task or a sink instance, one protocol for both.
//!
//! Barriers reach a receiver on a *priority lane*, ahead of the data queued on its channel, each
//! tagged with how many counted messages its sender had put on the data lane before it. At the
//! first barrier of a checkpoint the receiver snapshots (a stage task its state, a sink its
//! epoch), and from then on every message that any sender sent before its own barrier is
//! recorded as *in-flight data* of the checkpoint, until each sender's barrier position (or
//! end) has been taken off the channel. The records are stored with the checkpoint and
//! processed first by a restored receiver; the receiver itself processes them as usual, after
//! its snapshot.
//!
//! The invariant that makes this exactly-once: between the snapshot and the end of the capture,
//! **every** message taken off the channel passes through [`Capture::pull`], which records it
//! when it precedes its sender's barrier (or its sender's barrier is not known yet). A message
//! processed after the snapshot without being recorded would be in neither the state nor the
//! checkpoint, and lost on recovery.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::checkpoint::CheckpointId;

use super::outputs::Credits;
use super::RunError;

/// A barrier on a receiver's priority lane: the sender, the checkpoint, and how many counted
/// messages the sender had put on the data lane before it.
pub type PriorityBarrier = (usize, CheckpointId, u64);

/// A receiver's side of unaligned checkpoints: its priority lane, the credits it gives its
/// senders as it handles their messages, and how long a checkpoint may first try to align.
pub struct UnalignedInput {
    pub priority: Receiver<PriorityBarrier>,
    pub credits: Credits,
    pub aligned_timeout: Duration,
}

/// What a capture needs to know about a message on a receiver's data lane.
pub trait LaneItem {
    /// What a capture stores of a data message.
    type Payload: Clone;
    /// Counts toward its sender's message number (the number barriers are tagged with).
    fn counted(&self) -> bool;
    /// The sender sends nothing after it.
    fn is_end(&self) -> bool;
    /// Data to record while capturing (`None` for control messages).
    fn payload(&self) -> Option<&Self::Payload>;
}

/// What a receiver does after a message.
pub enum Flow {
    Go,
    /// Torn down (a channel closed, the run was cancelled).
    Stop,
    /// Every input ended: the receiver finished its work.
    Done,
}

/// How the loop of [`run`] ended.
pub enum Ended {
    /// Torn down before every input ended.
    Stopped,
    /// Every input ended and the receiver said [`Flow::Done`].
    Done,
}

/// The receiver's side of the protocol.
pub trait Participant {
    type Item: LaneItem;
    /// What the receiver took at a checkpoint's first barrier (a snapshot, a pre-commit).
    type Begun;

    /// How long to wait for data before looking at the priority lane again.
    fn wait(&self) -> Duration;
    fn cancelled(&self) -> bool;
    /// Whether checkpoint `id` must be aligned here whatever the mode: a Wasm module
    /// version switches at its barrier, so nothing sent before it may land after it.
    fn must_align(&self, _id: CheckpointId) -> bool {
        false
    }
    /// The first barrier of checkpoint `id`: snapshot what has been processed and forward the
    /// barrier. `None`: torn down.
    fn begin(&mut self, id: CheckpointId) -> Result<Option<Self::Begun>, RunError>;
    /// A newer checkpoint's barrier came before `id`'s capture finished (`id` was abandoned).
    fn abandon(&mut self, id: CheckpointId, begun: Self::Begun);
    /// Every sender's messages before its barrier are recorded: store them and report.
    fn complete(
        &mut self,
        id: CheckpointId,
        begun: Self::Begun,
        in_flight: Vec<<Self::Item as LaneItem>::Payload>,
    ) -> Result<(), RunError>;
    /// Called on every turn of the loop (release what is due).
    fn tick(&mut self) -> Result<Flow, RunError> {
        Ok(Flow::Go)
    }
    /// Processes one message, in its sender's order.
    fn handle(&mut self, from: usize, item: Self::Item) -> Result<Flow, RunError>;
}

/// What to do about a barrier taken off the priority lane.
#[derive(Debug, PartialEq, Eq)]
pub enum BarrierStep {
    /// A checkpoint already completed or superseded here: nothing.
    Ignore,
    /// The first barrier of a new checkpoint: snapshot, then [`Capture::begin`].
    Begin,
    /// Another sender's barrier of the checkpoint being captured: noted.
    Noted,
}

struct InFlight<P> {
    id: CheckpointId,
    /// Per sender: the number of counted messages it sent before the barrier, once known.
    barrier_at: Vec<Option<u64>>,
    /// Recorded data: (sender, message number, payload).
    records: Vec<(usize, u64, P)>,
}

/// A checkpoint whose capture finished: its id and the data in flight at its barriers.
pub struct Captured<P> {
    pub id: CheckpointId,
    pub records: Vec<P>,
}

/// The bookkeeping of unaligned captures at one receiver: message numbers per sender, the
/// queue of messages taken off the channel but not processed yet, and the capture in progress.
pub struct Capture<T: LaneItem> {
    pulled: Vec<u64>,
    end_pulled: Vec<bool>,
    /// Per sender: counted messages processed (popped).
    processed: Vec<u64>,
    queue: VecDeque<(usize, u64, T)>,
    /// A checkpoint still aligning (`aligned_timeout`): no snapshot yet; each sender's
    /// messages after its barrier wait in the queue.
    aligning: Option<Aligning>,
    inflight: Option<InFlight<T::Payload>>,
    /// The newest checkpoint begun here (later barriers of older ones are ignored).
    newest: CheckpointId,
}

struct Aligning {
    id: CheckpointId,
    barrier_at: Vec<Option<u64>>,
    since: Instant,
}

impl<T: LaneItem> Capture<T> {
    pub fn new(senders: usize) -> Self {
        Capture {
            pulled: vec![0; senders],
            end_pulled: vec![false; senders],
            processed: vec![0; senders],
            queue: VecDeque::new(),
            aligning: None,
            inflight: None,
            newest: 0,
        }
    }

    /// Takes a message off the channel: numbers it, records it if it belongs to the capture in
    /// progress, and queues it for processing. Every message goes through here.
    pub fn pull(&mut self, (from, item): (usize, T)) {
        let Some(count) = self.pulled.get_mut(from) else {
            return; // not a sender of this receiver
        };
        if item.counted() {
            *count += 1;
        }
        let n = *count;
        if item.is_end() {
            self.end_pulled[from] = true;
        }
        if let (Some(f), Some(payload)) = (self.inflight.as_mut(), item.payload()) {
            let before = f.barrier_at[from].is_none_or(|at| n <= at);
            if before {
                f.records.push((from, n, payload.clone()));
            }
        }
        self.queue.push_back((from, n, item));
    }

    /// A barrier from the priority lane.
    pub fn barrier(&mut self, from: usize, id: CheckpointId, at: u64) -> BarrierStep {
        if from >= self.pulled.len() || id < self.newest {
            return BarrierStep::Ignore;
        }
        if let Some(a) = self.aligning.as_mut().filter(|a| a.id == id) {
            a.barrier_at[from] = Some(at);
            return BarrierStep::Noted;
        }
        match self.inflight.as_mut() {
            Some(f) if f.id == id => {
                f.barrier_at[from] = Some(at);
                BarrierStep::Noted
            }
            _ if id == self.newest => BarrierStep::Ignore, // completed here
            _ => BarrierStep::Begin,
        }
    }

    /// Starts aligning checkpoint `id` at `from`'s barrier instead of snapshotting at once:
    /// messages after each sender's barrier wait until every sender's messages before it were
    /// processed ([`Capture::aligned`]) or the caller gives up waiting. Returns the capture it
    /// replaces, if one was in progress (abandoned).
    pub fn start_aligning(
        &mut self,
        from: usize,
        id: CheckpointId,
        at: u64,
    ) -> Option<CheckpointId> {
        let replaced = self.inflight.take().map(|f| f.id);
        self.newest = id;
        let mut barrier_at = vec![None; self.pulled.len()];
        barrier_at[from] = Some(at);
        self.aligning = Some(Aligning {
            id,
            barrier_at,
            since: Instant::now(),
        });
        replaced
    }

    /// The checkpoint being aligned and how long it has been.
    pub fn aligning(&self) -> Option<(CheckpointId, Duration)> {
        self.aligning.as_ref().map(|a| (a.id, a.since.elapsed()))
    }

    /// Every sender's messages before its barrier were processed (or it ended and all of its
    /// messages were): a snapshot now has nothing in flight.
    pub fn aligned(&self) -> bool {
        self.aligning.as_ref().is_some_and(|a| {
            (0..self.pulled.len()).all(|i| match a.barrier_at[i] {
                Some(at) => self.processed[i] >= at,
                None => self.end_pulled[i] && self.processed[i] == self.pulled[i],
            })
        })
    }

    /// The checkpoint being aligned was snapshotted (aligned, or waiting timed out): capture
    /// what its senders sent before their barriers and was not processed yet.
    pub fn stop_aligning(&mut self) {
        if let Some(a) = self.aligning.take() {
            self.open_capture(a.id, a.barrier_at);
        }
    }

    /// Starts capturing checkpoint `id` (after the receiver snapshotted) at `from`'s barrier.
    /// Returns the capture it replaces, if one was in progress (abandoned).
    pub fn begin(&mut self, from: usize, id: CheckpointId, at: u64) -> Option<CheckpointId> {
        let replaced = self.inflight.take().map(|f| f.id);
        self.aligning = None;
        self.newest = id;
        let mut barrier_at = vec![None; self.pulled.len()];
        if let Some(slot) = barrier_at.get_mut(from) {
            *slot = Some(at);
        }
        self.open_capture(id, barrier_at);
        replaced
    }

    fn open_capture(&mut self, id: CheckpointId, barrier_at: Vec<Option<u64>>) {
        // Taken off the channel but not processed: not in the snapshot.
        let records = self
            .queue
            .iter()
            .filter_map(|(from, n, item)| item.payload().map(|p| (*from, *n, p.clone())))
            .collect();
        self.inflight = Some(InFlight {
            id,
            barrier_at,
            records,
        });
    }

    /// A capture is in progress and some sender's messages before its barrier are still on
    /// the channel.
    pub fn wants_more(&self) -> bool {
        self.inflight.as_ref().is_some_and(|f| !self.captured(f))
    }

    fn captured(&self, f: &InFlight<T::Payload>) -> bool {
        (0..self.pulled.len())
            .all(|i| self.end_pulled[i] || f.barrier_at[i].is_some_and(|at| self.pulled[i] >= at))
    }

    /// The capture in progress, if it is complete: what its senders sent before their
    /// barriers and had not been processed at the snapshot.
    pub fn take_complete(&mut self) -> Option<Captured<T::Payload>> {
        let done = self.inflight.as_ref().is_some_and(|f| self.captured(f));
        if !done {
            return None;
        }
        let f = self.inflight.take()?;
        let records = f
            .records
            .into_iter()
            .filter(|(from, n, _)| f.barrier_at[*from].is_none_or(|at| *n <= at))
            .map(|(_, _, p)| p)
            .collect();
        Some(Captured { id: f.id, records })
    }

    /// Whether a message waits to be processed (while aligning, messages after their sender's
    /// barrier do not count).
    pub fn ready(&self) -> bool {
        self.next_index().is_some()
    }

    fn next_index(&self) -> Option<usize> {
        match &self.aligning {
            None => (!self.queue.is_empty()).then_some(0),
            Some(a) => self
                .queue
                .iter()
                .position(|(from, n, _)| a.barrier_at[*from].is_none_or(|at| *n <= at)),
        }
    }

    /// The next message to process: in the order messages were taken off the channel, except
    /// that while aligning, a sender's messages after its barrier wait.
    pub fn pop(&mut self) -> Option<(usize, T)> {
        let i = self.next_index()?;
        let (from, _, item) = self.queue.remove(i)?;
        if item.counted() {
            self.processed[from] += 1;
        }
        Some((from, item))
    }
}

/// Runs a receiver until every input ended or it is torn down.
pub fn run<P: Participant>(
    p: &mut P,
    inbound: &Receiver<(usize, P::Item)>,
    priority: &Receiver<PriorityBarrier>,
    senders: usize,
    aligned_timeout: Duration,
) -> Result<Ended, RunError> {
    let mut capture: Capture<P::Item> = Capture::new(senders);
    let mut begun: Option<P::Begun> = None;
    loop {
        if !capture.ready() {
            match inbound.recv_timeout(p.wait()) {
                Ok(m) => capture.pull(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Ended::Stopped),
            }
        }
        if p.cancelled() {
            return Ok(Ended::Stopped);
        }
        // Barriers first: each was sent before any later message of its sender, so one that
        // overtook a message already taken off the channel is seen before it is processed.
        while let Ok((from, id, at)) = priority.try_recv() {
            match capture.barrier(from, id, at) {
                BarrierStep::Ignore | BarrierStep::Noted => {}
                BarrierStep::Begin if !aligned_timeout.is_zero() || p.must_align(id) => {
                    if let Some(old) = capture.start_aligning(from, id, at) {
                        if let Some(old_begun) = begun.take() {
                            p.abandon(old, old_begun);
                        }
                    }
                }
                BarrierStep::Begin => {
                    let Some(b) = p.begin(id)? else {
                        return Ok(Ended::Stopped);
                    };
                    if let Some(old) = capture.begin(from, id, at) {
                        if let Some(old_begun) = begun.take() {
                            p.abandon(old, old_begun);
                        }
                    }
                    begun = Some(b);
                }
            }
        }
        // Aligning: snapshot once every sender's messages before its barrier were processed
        // (nothing in flight), or when that takes too long (the rest is captured).
        if let Some((id, waited)) = capture.aligning() {
            let aligned = capture.aligned();
            if aligned || (waited >= aligned_timeout && !p.must_align(id)) {
                if !aligned {
                    tracing::debug!(checkpoint = id, "alignment timed out: unaligned");
                }
                let Some(b) = p.begin(id)? else {
                    return Ok(Ended::Stopped);
                };
                capture.stop_aligning();
                begun = Some(b);
            }
        }
        // Take what was sent before the barriers off the channel now.
        while capture.wants_more() {
            match inbound.try_recv() {
                Ok(m) => capture.pull(m),
                Err(_) => break,
            }
        }
        if let Some(done) = capture.take_complete() {
            if let Some(b) = begun.take() {
                p.complete(done.id, b, done.records)?;
            }
        }
        if let Flow::Stop = p.tick()? {
            return Ok(Ended::Stopped);
        }
        let Some((from, item)) = capture.pop() else {
            continue;
        };
        match p.handle(from, item)? {
            Flow::Go => {}
            Flow::Stop => return Ok(Ended::Stopped),
            Flow::Done => return Ok(Ended::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test message: data (a number), or the end of its sender.
    #[derive(Debug, Clone, PartialEq)]
    enum Item {
        Data(i64),
        Watermark,
        End,
    }

    impl LaneItem for Item {
        type Payload = i64;
        fn counted(&self) -> bool {
            true
        }
        fn is_end(&self) -> bool {
            matches!(self, Item::End)
        }
        fn payload(&self) -> Option<&i64> {
            match self {
                Item::Data(v) => Some(v),
                _ => None,
            }
        }
    }

    #[test]
    fn a_capture_records_what_each_sender_sent_before_its_barrier_and_nothing_after() {
        let mut c: Capture<Item> = Capture::new(2);
        // Taken off the channel before the first barrier is seen: 1 (sender 0), 100 (sender 1).
        c.pull((0, Item::Data(1)));
        c.pull((1, Item::Data(100)));
        assert_eq!(c.barrier(0, 1, 2), BarrierStep::Begin);
        assert_eq!(c.begin(0, 1, 2), None);
        // Sender 0's second message precedes its barrier; its third follows it.
        c.pull((0, Item::Data(2)));
        c.pull((0, Item::Data(3)));
        assert!(c.wants_more(), "sender 1's barrier is not known yet");
        // The queue runs dry and sender 1 sends more before its barrier: still recorded.
        while c.pop().is_some() {}
        c.pull((1, Item::Watermark));
        c.pull((1, Item::Data(101)));
        assert_eq!(c.barrier(1, 1, 3), BarrierStep::Noted);
        assert!(!c.wants_more());
        let done = c.take_complete().expect("complete");
        assert_eq!(done.id, 1);
        assert_eq!(done.records, vec![1, 100, 2, 101]);
        // Late copies of a completed checkpoint's barriers change nothing.
        assert_eq!(c.barrier(1, 1, 3), BarrierStep::Ignore);
    }

    #[test]
    fn an_ended_sender_counts_as_captured() {
        let mut c: Capture<Item> = Capture::new(2);
        assert_eq!(c.barrier(0, 4, 0), BarrierStep::Begin);
        c.begin(0, 4, 0);
        c.pull((1, Item::Data(7)));
        assert!(c.wants_more());
        c.pull((1, Item::End));
        let done = c.take_complete().expect("complete");
        assert_eq!(done.records, vec![7]);
    }

    #[test]
    fn a_newer_checkpoint_replaces_an_unfinished_capture_and_older_barriers_are_ignored() {
        let mut c: Capture<Item> = Capture::new(2);
        assert_eq!(c.barrier(0, 1, 0), BarrierStep::Begin);
        c.begin(0, 1, 0);
        c.pull((0, Item::Data(1)));
        assert_eq!(c.barrier(0, 2, 1), BarrierStep::Begin);
        assert_eq!(c.begin(0, 2, 1), Some(1), "checkpoint 1 is abandoned");
        // Sender 1's barrier of checkpoint 1 arrives late: it must not restart checkpoint 1.
        assert_eq!(c.barrier(1, 1, 0), BarrierStep::Ignore);
        c.pull((1, Item::Data(100)));
        assert_eq!(c.barrier(1, 2, 1), BarrierStep::Noted);
        let done = c.take_complete().expect("complete");
        assert_eq!((done.id, done.records), (2, vec![1, 100]));
    }

    #[test]
    fn aligning_holds_each_senders_messages_after_its_barrier_until_all_are_before() {
        let mut c: Capture<Item> = Capture::new(2);
        c.pull((0, Item::Data(1)));
        c.pull((0, Item::Data(2))); // after sender 0's barrier
        c.pull((1, Item::Data(100)));
        assert_eq!(c.barrier(0, 1, 1), BarrierStep::Begin);
        assert_eq!(c.start_aligning(0, 1, 1), None);
        assert_eq!(c.pop(), Some((0, Item::Data(1))));
        assert_eq!(
            c.pop(),
            Some((1, Item::Data(100))),
            "2 waits behind the barrier"
        );
        assert!(!c.aligned(), "sender 1's barrier is not known yet");
        assert!(c.pop().is_none() && !c.ready());
        assert_eq!(c.barrier(1, 1, 1), BarrierStep::Noted);
        assert!(c.aligned());
        c.stop_aligning();
        let done = c.take_complete().expect("complete");
        assert_eq!(
            done.records,
            Vec::<i64>::new(),
            "aligned: nothing in flight"
        );
        assert_eq!(c.pop(), Some((0, Item::Data(2))));
    }

    #[test]
    fn an_alignment_that_takes_too_long_captures_what_is_left() {
        let mut c: Capture<Item> = Capture::new(2);
        c.pull((0, Item::Data(1)));
        c.pull((1, Item::Data(100)));
        c.start_aligning(0, 3, 0);
        assert_eq!(c.aligning().map(|(id, _)| id), Some(3));
        // The wait is over before sender 1's records were processed: snapshot now.
        c.stop_aligning();
        c.pull((1, Item::Data(101)));
        assert_eq!(c.barrier(1, 3, 2), BarrierStep::Noted);
        let done = c.take_complete().expect("complete");
        assert_eq!(done.records, vec![100, 101]);
    }

    #[test]
    fn messages_from_unknown_senders_and_barriers_from_them_are_ignored() {
        let mut c: Capture<Item> = Capture::new(1);
        c.pull((5, Item::Data(1)));
        assert!(!c.ready());
        assert_eq!(c.barrier(5, 1, 0), BarrierStep::Ignore);
    }
}
