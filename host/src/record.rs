//! Records and the messages that flow between operators.

use crate::value::Value;

/// Checkpoint ids grow by one per triggered checkpoint, across restarts. Barriers carry
/// them between tasks, so the id lives with the messages, below the checkpoint layer.
pub type CheckpointId = u64;

/// Event time in milliseconds since the Unix epoch.
pub type EventTime = i64;

/// The largest watermark: reached when every input is exhausted; fires every open window.
pub const WATERMARK_END: EventTime = i64::MAX;
/// The watermark before any record was seen.
pub const WATERMARK_START: EventTime = i64::MIN;

/// Where a record came from: enough to find its bytes again (DLQ envelopes, debugging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Origin {
    /// Index of the source in the pipeline's `sources` section.
    pub source: u16,
    /// Partition within the source (a file, a generator shard, ...).
    pub partition: u32,
    /// Position within the partition (line number for files, event number for generators).
    pub offset: u64,
}

/// One record in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub value: Value,
    /// Event time (ms since epoch), taken from the record, never from the wall clock.
    pub time: EventTime,
    /// The key set by the last `key_by` step (None before any).
    pub key: Option<Value>,
    pub origin: Origin,
}

impl Record {
    pub fn new(value: Value, time: EventTime, origin: Origin) -> Self {
        Record {
            value,
            time,
            key: None,
            origin,
        }
    }
}

/// A batch of records: the unit passed between operators and threads.
pub type Batch = Vec<Record>;

/// Whether an input currently holds the watermark back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatermarkStatus {
    /// All records with event time <= the value have arrived (bounded out-of-orderness).
    Active(EventTime),
    /// The input has been idle past its idle timeout: ignore it when taking the minimum.
    Idle,
}

/// What flows through the channels between threads: data and control, in order.
#[derive(Debug)]
pub enum Message {
    Data(Batch),
    Watermark(WatermarkStatus),
    /// Checkpoint barrier: everything the sender sent before it belongs to the checkpoint.
    Barrier(CheckpointId),
    /// The sender has no more messages (bounded input exhausted).
    End,
}
