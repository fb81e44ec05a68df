//! Operators: the steps of a pipeline. Each takes a batch and returns a batch; stateful ones
//! also act on watermarks. A [`Chain`] runs consecutive operators inside one task.

pub mod aggregate;
pub mod breaker;
pub mod keyed;
pub mod remedy;
pub mod retry;
pub mod stateless;
pub mod udf;
pub mod window;

use crate::dlq::DeadLetter;
use crate::record::{Batch, EventTime};
use crate::state::StateError;
use crate::value::Value;

/// Per-task side channels an operator can write to while it processes.
#[derive(Default)]
pub struct Context {
    /// Records for the dead-letter queue.
    pub dead: Vec<DeadLetter>,
    /// Records for named side-output sinks: (sink index, record).
    pub side: Vec<(usize, Value)>,
    /// Records later than the allowed lateness (whatever their policy).
    pub late: u64,
    /// Failed records a remediation repaired (sent through their step again).
    pub remediated: u64,
    /// Failed records a remediation dropped.
    pub remediation_dropped: u64,
    /// Records a step removed on purpose: a filter, or a function that returned nothing.
    pub filtered: u64,
    /// Records taken into state: a window's accumulators, a keyed function's call.
    pub absorbed: u64,
    /// Records a step made beyond one per input: a flat map's extra outputs, fired windows,
    /// a keyed function's outputs and timer calls.
    pub created: u64,
    /// Dead letters in `dead` that are not a record's end: a late record's copy (its end is
    /// `late`) and a window aggregate's failure (the record or window went on).
    pub dead_not_an_end: u64,
}

/// A failure that stops the run (never a bad record: those go to the DLQ).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{step}: {source}")]
    State { step: String, source: StateError },
    #[error("{step}: {message}")]
    Udf { step: String, message: String },
}

/// One step of a pipeline.
pub trait Operator: Send {
    /// Processes a batch; returns the records for the next step.
    fn process(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError>;

    /// The watermark advanced to `watermark`; returns records it releases (fired windows).
    fn on_watermark(
        &mut self,
        _watermark: EventTime,
        _ctx: &mut Context,
    ) -> Result<Batch, OpError> {
        Ok(Vec::new())
    }

    /// Called regularly (about every few milliseconds) with the wall clock, for operators
    /// that hold records back for a while (a UDF step lingering to fill a request); returns
    /// records whose time is up.
    fn on_tick(&mut self, _now: std::time::Instant, _ctx: &mut Context) -> Result<Batch, OpError> {
        Ok(Vec::new())
    }

    /// True when the operator holds records back (then its task keeps ticking it).
    fn holds_records(&self) -> bool {
        false
    }

    /// The chain is giving its operators a new input batch (this one may not reach this
    /// operator: an earlier one may have filtered it all out).
    fn note_input_batch(&mut self) {}

    /// Batches the operator took in and has not released yet (UDF calls in flight, batches
    /// parked for a retry), counted from the oldest one's input batch on. It releases them in
    /// order, one per call of `process` or `on_tick` (after a parked batch, the done ones
    /// behind it with it), so the task can send each batch's watermark after the batch: no
    /// record is late because of a call's timing or a retry.
    fn in_flight_batches(&self) -> usize {
        0
    }

    /// Releases the oldest batch in flight, waiting for it (`None` when there is none).
    fn release_oldest(&mut self, _ctx: &mut Context) -> Result<Option<Batch>, OpError> {
        Ok(None)
    }

    /// A checkpoint barrier is about to pass: returns every record the operator holds back,
    /// since they arrived before the barrier and belong to the checkpoint's side of it.
    fn on_barrier(&mut self, _ctx: &mut Context) -> Result<Batch, OpError> {
        Ok(Vec::new())
    }

    /// The task resumed from a checkpoint: rebuild in-memory indexes (pending timers) from
    /// the restored state of key groups `first..=last`, at the restored `watermark`.
    fn restore(&mut self, _key_groups: (u16, u16), _watermark: EventTime) -> Result<(), OpError> {
        Ok(())
    }
}

/// Operators run one after another in the same task.
#[derive(Default)]
pub struct Chain {
    ops: Vec<Box<dyn Operator>>,
    /// The pipeline's step index of each operator (where replayed dead letters enter).
    steps: Vec<usize>,
}

impl Chain {
    /// A chain of `ops` that are the pipeline's steps 0, 1, ...
    pub fn new(ops: Vec<Box<dyn Operator>>) -> Self {
        let steps = (0..ops.len()).collect();
        Chain { ops, steps }
    }

    /// A chain of `ops`, the pipeline's steps `steps` (one index per operator).
    pub fn of_steps(ops: Vec<Box<dyn Operator>>, steps: Vec<usize>) -> Self {
        debug_assert_eq!(ops.len(), steps.len());
        Chain { ops, steps }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn process(&mut self, mut batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        if batch.iter().any(|r| r.origin.entry != 0) {
            return self.process_replayed(batch, ctx);
        }
        for op in &mut self.ops {
            op.note_input_batch();
            if !batch.is_empty() {
                batch = op.process(batch, ctx)?;
            }
        }
        Ok(batch)
    }

    /// [`Chain::process`] for a batch holding dead letters that `headwater dlq replay` sends
    /// back in: each passes the steps before the one it enters at untouched (a `key_by`
    /// among them too: it keeps the key it had when it failed), joins the batch at that step
    /// as an ordinary record again, and leaves the chain unprocessed when its step is in a
    /// later stage (the shuffle routes it by its key).
    fn process_replayed(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        let (mut waiting, mut batch): (Batch, Batch) =
            batch.into_iter().partition(|r| r.origin.entry != 0);
        for (op, &step) in self.ops.iter_mut().zip(&self.steps) {
            op.note_input_batch();
            if waiting.iter().any(|r| r.origin.entry_step() == Some(step)) {
                let (entering, rest): (Batch, Batch) = std::mem::take(&mut waiting)
                    .into_iter()
                    .partition(|r| r.origin.entry_step() == Some(step));
                waiting = rest;
                batch.extend(entering.into_iter().map(|mut r| {
                    r.origin.entry = 0;
                    r
                }));
            }
            if !batch.is_empty() {
                batch = op.process(batch, ctx)?;
            }
        }
        batch.extend(waiting);
        Ok(batch)
    }

    /// Gives the watermark to each operator in order; what one releases passes through the
    /// operators after it before they see the watermark themselves.
    pub fn on_watermark(
        &mut self,
        watermark: EventTime,
        ctx: &mut Context,
    ) -> Result<Batch, OpError> {
        let mut carry: Batch = Vec::new();
        for op in &mut self.ops {
            if !carry.is_empty() {
                carry = op.process(carry, ctx)?;
            }
            let released = op.on_watermark(watermark, ctx)?;
            carry.extend(released);
        }
        Ok(carry)
    }

    /// Gives the clock to each operator in order; what one releases passes through the
    /// operators after it.
    pub fn on_tick(
        &mut self,
        now: std::time::Instant,
        ctx: &mut Context,
    ) -> Result<Batch, OpError> {
        let mut carry: Batch = Vec::new();
        for op in &mut self.ops {
            if !carry.is_empty() {
                carry = op.process(carry, ctx)?;
            } else {
                // One release per operator and call: each batch's watermark can follow it.
                carry = op.on_tick(now, ctx)?;
            }
        }
        Ok(carry)
    }

    /// Releases everything held back before a barrier; what one operator releases passes
    /// through the operators after it.
    pub fn on_barrier(&mut self, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut carry: Batch = Vec::new();
        for op in &mut self.ops {
            if !carry.is_empty() {
                carry = op.process(carry, ctx)?;
            }
            carry.extend(op.on_barrier(ctx)?);
        }
        Ok(carry)
    }

    pub fn restore(&mut self, key_groups: (u16, u16), watermark: EventTime) -> Result<(), OpError> {
        for op in &mut self.ops {
            op.restore(key_groups, watermark)?;
        }
        Ok(())
    }

    /// True when some operator holds records back until a tick.
    pub fn holds_records(&self) -> bool {
        self.ops.iter().any(|op| op.holds_records())
    }

    /// Input batches not out of the chain yet: the sum over its operators (a batch is in
    /// flight in one operator at a time).
    pub fn in_flight_batches(&self) -> usize {
        self.ops.iter().map(|op| op.in_flight_batches()).sum()
    }

    /// Releases the oldest batch in flight in the first operator that has one, through the
    /// operators after it; `None` when nothing is in flight.
    pub fn release_oldest(&mut self, ctx: &mut Context) -> Result<Option<Batch>, OpError> {
        let Some(first) = self.ops.iter().position(|op| op.in_flight_batches() > 0) else {
            return Ok(None);
        };
        let mut carry = self.ops[first].release_oldest(ctx)?.unwrap_or_default();
        for op in &mut self.ops[first + 1..] {
            if carry.is_empty() {
                break;
            }
            carry = op.process(carry, ctx)?;
        }
        Ok(Some(carry))
    }
}

/// The name of step `index` (0-based) as users read it in messages: `steps[2] window`.
pub fn step_name(index: usize, what: &str) -> String {
    format!("steps[{index}] {what}")
}

/// Builds a dead letter for a record that already was decoded: its JSON is the raw payload
/// (the bytes the source read, while the record still has them).
pub fn dead_letter_for(
    record: &crate::record::Record,
    step: &str,
    class: crate::dlq::ErrorClass,
    error: String,
) -> DeadLetter {
    let mut raw = Vec::new();
    record.write_json(&mut raw);
    let mut dl = DeadLetter::new(raw, record.origin, step.to_string(), class, error);
    dl.event_time = Some(record.time);
    dl.key = record.key.clone();
    dl
}

#[cfg(test)]
mod chain_tests;
