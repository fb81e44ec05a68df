//! The batches a udf step took in and has not released: calls to a worker in flight, batches
//! parked until their failed records' next attempt, and batches done but waiting for the ones
//! before them. Batches leave in the order they came, so the task can send each watermark
//! after the batches read before it.

use std::time::Instant;

use crate::record::Batch;
use crate::udf::PendingCall;

use super::super::{Context, OpError};
use super::settle::Settling;
use super::UdfStep;

/// Batches a step keeps in flight behind a parked one before it waits for the oldest.
pub(super) const PARKED_DEPTH: usize = 64;

/// One batch in flight.
pub(super) struct InFlight {
    /// The step's input batch count when it came in (see [`UdfStep::in_flight_batches`]).
    pub seq: u64,
    /// It waited for a retry: the batches behind it leave with it.
    pub parked: bool,
    pub stage: Stage,
}

pub(super) enum Stage {
    /// Its call is with the worker.
    Called {
        batch: Batch,
        call: Box<dyn PendingCall>,
    },
    /// Some of its records wait for their next attempt.
    Parked(Settling),
    /// Its outputs, waiting for the batches before it.
    Done(Batch),
}

impl UdfStep {
    /// Queues a batch whose first call's outcomes are taken apart (`s`).
    pub(super) fn queue(&mut self, s: Settling, ctx: &mut Context) -> Result<(), OpError> {
        let parked = !s.is_settled();
        let stage = match parked {
            true => Stage::Parked(s),
            false => Stage::Done(self.complete(s, ctx)?),
        };
        self.in_flight.push_back(InFlight {
            seq: self.seen,
            parked,
            stage,
        });
        Ok(())
    }

    /// Moves `stage` on; with `block`, to its end (waiting for the call and the attempts).
    fn advance(&mut self, stage: Stage, ctx: &mut Context, block: bool) -> Result<Stage, OpError> {
        match stage {
            Stage::Called { batch, call } if block || call.is_ready() => {
                let s = self.begin(batch, call.wait())?;
                self.advance(Stage::Parked(s), ctx, block)
            }
            Stage::Parked(mut s) => {
                if block {
                    self.finish(&mut s)?;
                } else if !s.is_settled() && s.is_due(Instant::now()) {
                    self.attempt(&mut s)?;
                }
                match s.is_settled() {
                    true => Ok(Stage::Done(self.complete(s, ctx)?)),
                    false => Ok(Stage::Parked(s)),
                }
            }
            other => Ok(other),
        }
    }

    /// Moves every batch in flight on without waiting: answered calls are taken apart,
    /// parked records whose attempt is due are called again.
    pub(super) fn advance_all(&mut self, ctx: &mut Context) -> Result<(), OpError> {
        for i in 0..self.in_flight.len() {
            let stage = std::mem::replace(&mut self.in_flight[i].stage, Stage::Done(Vec::new()));
            let advanced = self.advance(stage, ctx, false)?;
            if matches!(advanced, Stage::Parked(_)) {
                self.in_flight[i].parked = true;
            }
            self.in_flight[i].stage = advanced;
        }
        Ok(())
    }

    /// Releases the oldest batch, waiting for it; `None` when nothing is in flight.
    pub(super) fn settle_oldest(&mut self, ctx: &mut Context) -> Result<Option<Batch>, OpError> {
        let Some(entry) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        self.draining = entry.parked;
        match self.advance(entry.stage, ctx, true)? {
            Stage::Done(batch) => Ok(Some(batch)),
            // A blocking advance ends every stage; nothing else comes back.
            _ => Ok(Some(Vec::new())),
        }
    }

    /// Releases the done batches at the front while more than `keep` are in flight: one,
    /// or, once a parked batch left, every done batch that waited behind it.
    pub(super) fn release_done(&mut self, keep: usize) -> Batch {
        let mut out = Vec::new();
        let mut released = 0;
        while self.in_flight.len() > keep || (self.draining && !self.in_flight.is_empty()) {
            let Some(InFlight {
                stage: Stage::Done(_),
                ..
            }) = self.in_flight.front()
            else {
                break;
            };
            if released > 0 && !self.draining {
                break;
            }
            let Some(entry) = self.in_flight.pop_front() else {
                break;
            };
            self.draining |= entry.parked;
            if let Stage::Done(batch) = entry.stage {
                out.extend(batch);
            }
            released += 1;
        }
        if !matches!(
            self.in_flight.front(),
            Some(InFlight {
                stage: Stage::Done(_),
                ..
            })
        ) {
            self.draining = false;
        }
        out
    }

    /// True when some batch waits for a retry.
    pub(super) fn has_parked(&self) -> bool {
        self.in_flight
            .iter()
            .any(|e| matches!(e.stage, Stage::Parked(_)))
    }
}
