//! Records and the messages that flow between operators.

use std::sync::Arc;

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
    /// For a dead letter sent back in by `headwater dlq replay`: 1 + the index of the step it
    /// enters the pipeline at (the step that gave up on it); the steps before it let it
    /// pass untouched (`Chain::process` in the operators), and the step sets it back to 0.
    /// 0 for every record a source read.
    pub entry: u16,
}

impl Origin {
    /// The index of the step a replayed dead letter has yet to enter at, if it is one.
    pub fn entry_step(&self) -> Option<usize> {
        self.entry.checked_sub(1).map(usize::from)
    }
}

/// The JSON text a source decoded a record's value from, shared by the record's copies.
pub type SourceText = Arc<[u8]>;

/// One record in flight.
///
/// The value is private so that every change goes through [`Record::value_mut`] or
/// [`Record::set_value`], which drop the source text: a record carries the bytes it was read
/// from only while its value is still exactly what they decode to. UDF runtimes that send
/// records out as JSON send those bytes instead of encoding the value again.
#[derive(Clone, Debug)]
pub struct Record {
    value: Value,
    /// Event time (ms since epoch), taken from the record, never from the wall clock.
    pub time: EventTime,
    /// The key set by the last `key_by` step (None before any).
    pub key: Option<Value>,
    pub origin: Origin,
    text: Option<SourceText>,
}

impl Record {
    pub fn new(value: Value, time: EventTime, origin: Origin) -> Self {
        Record {
            value,
            time,
            key: None,
            origin,
            text: None,
        }
    }

    /// The record with `text`, the JSON its value was decoded from (sources only).
    pub fn with_source_text(mut self, text: SourceText) -> Self {
        self.text = Some(text);
        self
    }

    /// The record with `key`.
    pub fn with_key(mut self, key: Option<Value>) -> Self {
        self.key = key;
        self
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The value, to change: the record forgets its source text.
    pub fn value_mut(&mut self) -> &mut Value {
        self.text = None;
        &mut self.value
    }

    pub fn set_value(&mut self, value: Value) {
        self.text = None;
        self.value = value;
    }

    pub fn into_value(self) -> Value {
        self.value
    }

    /// A record with the same time, key and origin holding `value` (an operator's output for
    /// this input).
    pub fn derive(&self, value: Value) -> Record {
        Record {
            value,
            time: self.time,
            key: self.key.clone(),
            origin: self.origin,
            text: None,
        }
    }

    /// The JSON text the value was decoded from, while the value is unchanged.
    pub fn source_text(&self) -> Option<&SourceText> {
        self.text.as_ref()
    }

    /// Appends the value's JSON: the source text when the record still has it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match &self.text {
            Some(text) => out.extend_from_slice(text),
            None => self.value.write_json(out),
        }
    }
}

/// Records are equal when their values, times, keys and origins are: whether one still holds
/// its source text does not matter.
impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
            && self.time == other.time
            && self.key == other.key
            && self.origin == other.origin
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
