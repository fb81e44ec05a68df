//! How a udf step takes a batch's outcomes apart: outputs in their records' places, transient
//! failures called again after a backoff, the rest remediated (if the step has a
//! remediation) or dead-lettered. A batch in the middle of its retries is a [`Settling`]: the
//! step parks it while other batches go on, and calls its records again when they are due.

use std::time::Instant;

use crate::dlq::ErrorClass;
use crate::record::{Batch, Record};
use crate::udf::{FunctionError, FunctionKind, RecordOutcome, RuntimeError};

use super::super::breaker::{hold, Held};
use super::super::remedy::{Failed, Verdict};
use super::super::retry::{NextAttempt, Retry};
use super::super::{Context, OpError};
use super::UdfStep;

/// A batch on its way through the function.
pub(super) struct Settling {
    /// The outputs of each record, by its place in the batch.
    outputs: Vec<Batch>,
    /// Records whose last attempt failed transiently, to call again.
    pending: Vec<(usize, Record)>,
    /// Records the step gave up on (for the remediation or the DLQ).
    failed: Vec<Failed>,
    /// The batch's attempts (its records share them).
    retry: Retry,
    /// When the first attempt's failures were seen (ms since the epoch).
    started: i64,
    /// When the pending records' next attempt is due (None: at once).
    due: Option<Instant>,
    /// The UDF breaker's recoveries when these attempts began (see `Breaker::recoveries`).
    recoveries: u64,
}

impl Settling {
    /// Nothing is left to call.
    pub(super) fn is_settled(&self) -> bool {
        self.pending.is_empty()
    }

    /// The pending records' next attempt may be made at `now`.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.due.is_none_or(|due| due <= now)
    }
}

impl UdfStep {
    /// Calls the function on `batch`, retrying transient failures (waiting between
    /// attempts). Outputs keep the order of their inputs, retried or not, so per-key order
    /// holds.
    pub(super) fn call(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        let first = self.runtime.invoke_records(&self.function, &batch);
        self.settle(batch, first, ctx)
    }

    /// [`UdfStep::call`] once the first call's outcomes are in.
    pub(super) fn settle(
        &mut self,
        batch: Batch,
        first: Result<Vec<RecordOutcome>, RuntimeError>,
        ctx: &mut Context,
    ) -> Result<Batch, OpError> {
        let mut s = self.begin(batch, first)?;
        self.finish(&mut s)?;
        self.complete(s, ctx)
    }

    /// `batch` with its first call's outcomes taken apart.
    pub(super) fn begin(
        &mut self,
        batch: Batch,
        first: Result<Vec<RecordOutcome>, RuntimeError>,
    ) -> Result<Settling, OpError> {
        let mut s = Settling {
            outputs: vec![Vec::new(); batch.len()],
            retry: self.retry.start(batch.len() as u64),
            pending: batch.into_iter().enumerate().collect(),
            failed: Vec::new(),
            // The first attempt's answers are in hand: failures were seen from now on.
            started: crate::dlq::now_ms(),
            due: None,
            recoveries: self.breaker.as_ref().map_or(0, |b| b.recoveries()),
        };
        self.absorb(&mut s, first)?;
        Ok(s)
    }

    /// Calls the pending records again and takes the outcomes apart.
    pub(super) fn attempt(&mut self, s: &mut Settling) -> Result<(), OpError> {
        let inputs = s.pending.iter().map(|(_, r)| r.value().clone()).collect();
        let outcomes = self.runtime.invoke(&self.function, inputs);
        self.absorb(s, outcomes)
    }

    /// Attempts until nothing is pending, waiting until each attempt is due.
    pub(super) fn finish(&mut self, s: &mut Settling) -> Result<(), OpError> {
        while !s.pending.is_empty() {
            if let Some(due) = s.due {
                if self.cancel.wait_until(due) {
                    // Cancelled: the run is being torn down and its in-flight records with it.
                    tracing::debug!(step = %self.step, records = s.pending.len(), "retry abandoned: the run is cancelled");
                    s.pending.clear();
                    break;
                }
            }
            self.attempt(s)?;
        }
        Ok(())
    }

    /// Takes one call's outcomes for the pending records apart: outputs into their places,
    /// transient failures pending again (due after the backoff), the rest failed.
    fn absorb(
        &mut self,
        s: &mut Settling,
        outcomes: Result<Vec<RecordOutcome>, RuntimeError>,
    ) -> Result<(), OpError> {
        let outcomes = outcomes.map_err(|e| OpError::Udf {
            step: self.step.clone(),
            message: e.to_string(),
        })?;
        let pending = std::mem::take(&mut s.pending);
        if outcomes.len() != pending.len() {
            return Err(OpError::Udf {
                step: self.step.clone(),
                message: format!(
                    "runtime returned {} results for {} records",
                    outcomes.len(),
                    pending.len()
                ),
            });
        }
        let answered = outcomes
            .iter()
            .filter(|o| !matches!(o, Err(e) if e.class == ErrorClass::Transient))
            .count();
        if let Some(b) = &self.breaker {
            b.record(outcomes.len() - answered, answered);
        }
        let (attempt, started) = (s.retry.attempt(), s.started);
        let mut exhausted = Vec::new();
        for ((index, record), outcome) in pending.into_iter().zip(outcomes) {
            match outcome {
                Ok(values) => {
                    if self.kind == FunctionKind::Map && values.len() != 1 {
                        let err = FunctionError::permanent(format!(
                            "a map function must return exactly one record, got {}",
                            values.len()
                        ));
                        s.failed
                            .push(Failed::new(index, record, err, attempt, started));
                    } else if let Some(slot) = s.outputs.get_mut(index) {
                        self.emit(&record, values, slot);
                    }
                }
                Err(err) if err.class == ErrorClass::Transient && !s.retry.is_exhausted() => {
                    s.pending.push((index, record))
                }
                Err(err) if err.class == ErrorClass::Transient => {
                    exhausted.push((index, record, err))
                }
                Err(err) => s
                    .failed
                    .push(Failed::new(index, record, err, attempt, started)),
            }
        }
        s.due = None;
        if !exhausted.is_empty() {
            // The batch's records share their attempts: none is pending now. An outage that
            // ended while they were parked (other batches went through) failed them, not
            // their data: they start over.
            let recovered = self.breaker.as_ref().map(|b| b.recoveries());
            let held = match recovered {
                Some(now) if now > s.recoveries => {
                    s.recoveries = now;
                    Held::TryAgain
                }
                _ => hold(self.breaker.as_deref(), exhausted.len(), &self.cancel),
            };
            match held {
                Held::TryAgain => {
                    // An outage: after the pause, the held records are tried again afresh.
                    s.pending = exhausted.into_iter().map(|(i, r, _)| (i, r)).collect();
                    s.retry = self.retry.start(s.pending.len() as u64);
                    return Ok(());
                }
                Held::Cancelled => {
                    tracing::debug!(step = %self.step, records = exhausted.len(), "held records abandoned: the run is cancelled");
                }
                Held::DeadLetter => {
                    for (index, record, err) in exhausted {
                        s.failed
                            .push(Failed::new(index, record, err, attempt, started));
                    }
                }
            }
        }
        if !s.pending.is_empty() {
            match s.retry.next_attempt(Instant::now()) {
                NextAttempt::DueAt(at) => s.due = Some(at),
                // Pending records had attempts left; kept whole should that ever change.
                NextAttempt::Exhausted => {
                    for (index, record) in std::mem::take(&mut s.pending) {
                        let err = FunctionError::transient("no attempt left");
                        s.failed
                            .push(Failed::new(index, record, err, attempt, started));
                    }
                }
            }
        }
        Ok(())
    }

    /// A settled batch's outputs, in order: what failed is remediated or dead-lettered, and
    /// each record's end is counted (filtered, or made beyond one output).
    pub(super) fn complete(&mut self, s: Settling, ctx: &mut Context) -> Result<Batch, OpError> {
        let (dead_before, dropped_before) = (ctx.dead.len(), ctx.remediation_dropped);
        let mut outputs = s.outputs;
        self.remediate(s.failed, &mut outputs, ctx)?;
        // A record without outputs was filtered, unless it failed (dead or dropped); outputs
        // beyond one per record are new records.
        let failed =
            (ctx.dead.len() - dead_before) as u64 + ctx.remediation_dropped - dropped_before;
        let empty = outputs.iter().filter(|o| o.is_empty()).count() as u64;
        ctx.filtered += empty.saturating_sub(failed);
        ctx.created += outputs
            .iter()
            .map(|o| o.len().saturating_sub(1) as u64)
            .sum::<u64>();
        Ok(outputs.into_iter().flatten().collect())
    }

    /// Sends what failed to the remediation, if any, and puts the repaired records' outputs
    /// in their places; what it gives up on, or what fails again once repaired, is
    /// dead-lettered.
    fn remediate(
        &mut self,
        failed: Vec<Failed>,
        outputs: &mut [Batch],
        ctx: &mut Context,
    ) -> Result<(), OpError> {
        let Some(remedy) = self.remedy.clone().filter(|_| !failed.is_empty()) else {
            for f in failed {
                self.dead(ctx, &f, None);
            }
            return Ok(());
        };
        let verdicts = remedy.judge(&self.step, &failed);
        let mut repaired: Batch = Vec::new();
        let mut places = Vec::new();
        for (f, verdict) in failed.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Repaired(value) => {
                    places.push(f.index);
                    repaired.push(f.record.derive(value));
                }
                Verdict::Dropped => ctx.remediation_dropped += 1,
                Verdict::GaveUp(why) => self.dead(ctx, &f, Some(&why)),
            }
        }
        if repaired.is_empty() {
            return Ok(());
        }
        ctx.remediated += repaired.len() as u64;
        let first = self.runtime.invoke_records(&self.function, &repaired);
        let mut s = self.begin(repaired, first)?;
        self.finish(&mut s)?;
        for (place, slot) in places.into_iter().zip(s.outputs) {
            if let Some(out) = outputs.get_mut(place) {
                *out = slot;
            }
        }
        let note = format!(
            "the remediation udf `{}` repaired this record (what is shown) and it failed again",
            remedy.udf
        );
        for f in s.failed {
            self.dead(ctx, &f, Some(&note));
        }
        Ok(())
    }
}
