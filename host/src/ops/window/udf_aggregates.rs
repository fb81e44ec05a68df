//! User-defined window aggregates (`udf(NAME)`): their accumulators are folded, merged and
//! turned into results by calling the function; a failing record goes to the DLQ.

use crate::dlq::ErrorClass;
use crate::record::{Origin, Record, WATERMARK_START};
use crate::udf::{AggregateInput, AggregateOp, AggregateOutput, FunctionError};
use crate::value::Value;

use super::{UdfAggregate, WindowOp};
use crate::ops::aggregate::Acc;
use crate::ops::breaker::{hold, Held};
use crate::ops::retry::WaitOutcome;
use crate::ops::{dead_letter_for, Context, OpError};

impl WindowOp {
    pub(super) fn udf_error(&self, e: crate::udf::RuntimeError) -> OpError {
        OpError::Udf {
            step: self.cfg.step.clone(),
            message: e.to_string(),
        }
    }

    /// Folds the records pending in user-defined accumulators into them: one call per
    /// aggregate for all the given windows. A window whose call fails keeps its accumulator
    /// and its records go to the DLQ with the error.
    pub(super) fn settle(
        &self,
        windows: &mut [&mut Vec<Acc>],
        ctx: &mut Context,
    ) -> Result<(), OpError> {
        for (i, udf) in self.cfg.udfs.iter().enumerate() {
            let Some(udf) = udf else { continue };
            let mut which = Vec::new();
            let mut inputs = Vec::new();
            for (j, accs) in windows.iter_mut().enumerate() {
                if let Some(Acc::Udf { acc, pending }) = accs.get_mut(i) {
                    if !pending.is_empty() {
                        which.push(j);
                        inputs.push(AggregateInput {
                            accumulators: if acc.is_empty() {
                                vec![]
                            } else {
                                vec![acc.clone()]
                            },
                            values: std::mem::take(pending),
                        });
                    }
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let outcomes = udf
                .runtime
                .invoke_aggregate(&udf.function, AggregateOp::Add, inputs.clone())
                .map_err(|e| self.udf_error(e))?;
            if let Some(b) = &udf.breaker {
                // Per record: an input that failed transiently failed for all its values.
                let (mut failed, mut answered) = (0, 0);
                for (input, outcome) in inputs.iter().zip(&outcomes) {
                    match outcome {
                        Err(e) if e.class == ErrorClass::Transient => failed += input.values.len(),
                        _ => answered += input.values.len(),
                    }
                }
                b.record(failed, answered);
            }
            for ((j, input), outcome) in which.into_iter().zip(inputs).zip(outcomes) {
                match outcome {
                    Ok(AggregateOutput::Accumulator(bytes)) => {
                        if let Some(Acc::Udf { acc, .. }) = windows[j].get_mut(i) {
                            *acc = bytes;
                        }
                    }
                    Ok(AggregateOutput::Result(_)) => {}
                    // Find the record(s) the function fails on: fold the batch in one record
                    // at a time, dead-lettering only those that fail.
                    Err(_) => {
                        let mut acc = input.accumulators.into_iter().next().unwrap_or_default();
                        for value in input.values {
                            acc = self.add_one(udf, acc, value, ctx)?;
                        }
                        if let Some(Acc::Udf { acc: slot, .. }) = windows[j].get_mut(i) {
                            *slot = acc;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Folds one record into `acc`; on failure the record goes to the DLQ and `acc` is kept.
    /// Transient failures are retried with backoff first.
    pub(super) fn add_one(
        &self,
        udf: &UdfAggregate,
        acc: Vec<u8>,
        value: Value,
        ctx: &mut Context,
    ) -> Result<Vec<u8>, OpError> {
        let mut retry = udf.retry.start(0);
        loop {
            let input = AggregateInput {
                accumulators: if acc.is_empty() {
                    vec![]
                } else {
                    vec![acc.clone()]
                },
                values: vec![value.clone()],
            };
            let outcome = udf
                .runtime
                .invoke_aggregate(&udf.function, AggregateOp::Add, vec![input])
                .map_err(|e| self.udf_error(e))?;
            let outcome = outcome.into_iter().next();
            if let Some(b) = &udf.breaker {
                let failed = matches!(&outcome, Some(Err(e)) if e.class == ErrorClass::Transient);
                b.record(usize::from(failed), usize::from(!failed));
            }
            match outcome {
                Some(Ok(AggregateOutput::Accumulator(bytes))) => return Ok(bytes),
                Some(Err(err)) if err.class == ErrorClass::Transient && !retry.is_exhausted() => {
                    if retry.wait_for_next(&self.cancel) != WaitOutcome::Due {
                        // Cancelled: the run is being torn down; the window keeps `acc`.
                        tracing::debug!(step = %self.cfg.step, "retry abandoned: the run is cancelled");
                        return Ok(acc);
                    }
                }
                Some(Err(err)) if err.class == ErrorClass::Transient => {
                    match hold(udf.breaker.as_deref(), 1, &self.cancel) {
                        // An outage: after the pause, the record is tried afresh.
                        Held::TryAgain => retry = udf.retry.start(0),
                        Held::Cancelled => return Ok(acc),
                        Held::DeadLetter => {
                            self.dead_aggregate(ctx, value, &udf.function, &err);
                            return Ok(acc);
                        }
                    }
                }
                Some(Err(err)) => {
                    self.dead_aggregate(ctx, value, &udf.function, &err);
                    return Ok(acc);
                }
                _ => return Ok(acc),
            }
        }
    }

    pub(super) fn dead_aggregate(
        &self,
        ctx: &mut Context,
        value: Value,
        function: &str,
        err: &FunctionError,
    ) {
        let record = Record::new(value, WATERMARK_START, Origin::default());
        let mut dl = dead_letter_for(
            &record,
            &self.cfg.step,
            err.class,
            format!("aggregate `{function}`: {}", err.message),
        );
        dl.event_time = None;
        dl.detail = err.detail.clone();
        ctx.dead_not_an_end += 1;
        ctx.dead.push(dl);
    }

    /// Merges `from` into `into` (session merges): built-ins directly, user-defined
    /// accumulators through their function when both hold something.
    pub(super) fn merge_into(
        &self,
        into: &mut [Acc],
        from: &[Acc],
        record: &Record,
        ctx: &mut Context,
    ) -> Result<(), OpError> {
        for (i, (a, o)) in into.iter_mut().zip(from).enumerate() {
            match (a, o, self.cfg.udfs.get(i).and_then(Option::as_ref)) {
                (Acc::Udf { acc, .. }, Acc::Udf { acc: other, .. }, Some(udf))
                    if !acc.is_empty() && !other.is_empty() =>
                {
                    let input = AggregateInput {
                        accumulators: vec![acc.clone(), other.clone()],
                        values: Vec::new(),
                    };
                    let outcome = udf
                        .runtime
                        .invoke_aggregate(&udf.function, AggregateOp::Merge, vec![input])
                        .map_err(|e| self.udf_error(e))?;
                    match outcome.into_iter().next() {
                        Some(Ok(AggregateOutput::Accumulator(bytes))) => *acc = bytes,
                        // The merged session keeps the first accumulator; the record that
                        // bridged the sessions goes to the DLQ with the error.
                        Some(Err(mut err)) => {
                            err.message = format!("failed to merge sessions: {}", err.message);
                            self.dead_aggregate(ctx, record.value().clone(), &udf.function, &err);
                        }
                        _ => {}
                    }
                }
                (a, o, _) => a.merge(o),
            }
        }
        Ok(())
    }
}
