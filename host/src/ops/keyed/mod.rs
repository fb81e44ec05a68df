//! The keyed process step (the Stateful Functions model): for each record the host reads the
//! key's state from RocksDB, sends it with the record to the function, and stores the state
//! the function returns; workers hold nothing. Functions may set event-time timers, which
//! call them again for the key when the watermark passes.
//!
//! A key's calls are strictly sequential: a batch's calls are queued by key (in arrival
//! order), each round calls the next ready call of every key, and a round's states are
//! written before the next round reads them. Failed calls change nothing: a transient failure
//! waits for its next attempt (with backoff) at the head of its key's queue, before the key's
//! next record, while the other keys' calls go on; what the step gives up on goes to its
//! remediation, if it has one (a repaired record is the key's next call), else to the DLQ.

use std::sync::Arc;

use crate::dlq::ErrorClass;
use crate::record::{Batch, EventTime, Origin, Record};
use crate::state::layout::{self, Tag};
use crate::state::{key_group_of, KeyGroup, StateBatch, StateError, StateStore, TimerIndex};
use crate::udf::{FunctionError, KeyedInput, KeyedResult, StateUpdate, UdfRuntime};
use crate::value::Value;

mod queues;

use queues::Queues;

use super::breaker::{hold, Breaker, Held};
use super::remedy::{gave_up, Failed, Remedy, Verdict};
use super::retry::{CancelSignal, RetryPolicy, WaitOutcome};
use super::{dead_letter_for, Context, OpError, Operator};

/// Rounds of timer firing per watermark before re-armed timers wait for the next one.
const MAX_TIMER_ROUNDS: usize = 1000;

/// What a keyed process step needs, shared by its tasks.
#[derive(Clone)]
pub struct KeyedProcessConfig {
    pub step: String,
    pub op_id: u16,
    pub runtime: Arc<dyn UdfRuntime>,
    pub function: String,
    pub max_parallelism: u32,
    pub retry: RetryPolicy,
    /// The UDF's circuit breaker (see [`super::breaker`]), if it has one.
    pub breaker: Option<Arc<Breaker>>,
    /// The step's remediation (`remediate:`), if any.
    pub remedy: Option<Remedy>,
}

pub struct KeyedProcess {
    cfg: KeyedProcessConfig,
    store: StateStore,
    /// Pending timers of this task's keys: (time, encoded key), each also stored under
    /// [`Tag::KeyedTimer`] so a restore finds it.
    timers: TimerIndex<Vec<u8>>,
    /// Wakes a wait between attempts when the run is cancelled.
    cancel: CancelSignal,
}

/// One call waiting to be made: the input and where it came from.
struct Call {
    key_bytes: Vec<u8>,
    key: Value,
    record: Option<Record>,
    time: EventTime,
    timer: Option<EventTime>,
}

impl KeyedProcess {
    pub fn new(cfg: KeyedProcessConfig, store: StateStore) -> Self {
        KeyedProcess {
            cfg,
            store,
            timers: TimerIndex::new(),
            cancel: CancelSignal::default(),
        }
    }

    /// Waits between attempts end early when `cancel` fires (the run is being cancelled).
    pub fn with_cancel(mut self, cancel: CancelSignal) -> Self {
        self.cancel = cancel;
        self
    }

    /// Pending timers (for tests and metrics).
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    fn state_err(&self, source: StateError) -> OpError {
        OpError::State {
            step: self.cfg.step.clone(),
            source,
        }
    }

    fn key_group(&self, key_bytes: &[u8]) -> KeyGroup {
        key_group_of(key_bytes, self.cfg.max_parallelism)
    }

    fn state_key(&self, key_bytes: &[u8]) -> Vec<u8> {
        layout::keyed_state_key(self.key_group(key_bytes), self.cfg.op_id, key_bytes)
    }

    fn timer_key(&self, key_bytes: &[u8], time: EventTime) -> Vec<u8> {
        layout::timer_key(self.key_group(key_bytes), self.cfg.op_id, time, key_bytes)
    }

    /// Makes `calls` key by key in order (see the module docs); returns the outputs. A
    /// round holds the next call of every key that is ready: a call that failed
    /// transiently waits for its next attempt in its key's queue, the key's later calls
    /// behind it, while the other keys' calls go on (`queues.rs`).
    fn run(&mut self, calls: Vec<Call>, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = Vec::with_capacity(calls.len());
        let mut queues = Queues::new(calls, self.cfg.retry);
        while !queues.is_empty() {
            let now = std::time::Instant::now();
            let round = queues.take_ready(now);
            if round.is_empty() {
                let Some(at) = queues.earliest_due() else {
                    break;
                };
                if self.cancel.wait_until(at) {
                    // Cancelled: the run is being torn down and its calls with it; the
                    // keys' state is as the last successful calls left it.
                    tracing::debug!(step = %self.cfg.step, "retries abandoned: the run is cancelled");
                    break;
                }
                continue;
            }
            let outcomes = self.invoke(round.iter().map(|(_, c)| c))?;
            let mut wb = StateBatch::new();
            let mut gave_up = Vec::new();
            let mut exhausted = Vec::new();
            for ((q, call), outcome) in round.into_iter().zip(outcomes) {
                match outcome {
                    Ok(result) => {
                        // A record ends in the key's state; what the function emits is new.
                        ctx.absorbed += u64::from(call.record.is_some());
                        ctx.created += result.outputs.len() as u64;
                        self.apply(&call, result, &mut wb, &mut out);
                        queues.done(q);
                    }
                    Err(err) if err.class == ErrorClass::Transient => {
                        if let Some(call) = queues.failed(q, call, now) {
                            exhausted.push((q, call, err));
                        }
                    }
                    Err(err) => {
                        let t = queues.tries(q);
                        gave_up.push(GaveUp::new(call, err, t.attempts, t.first_failed_ms));
                        queues.done(q);
                    }
                }
            }
            self.store.write(wb).map_err(|e| self.state_err(e))?;
            if !exhausted.is_empty() {
                match hold(self.cfg.breaker.as_deref(), exhausted.len(), &self.cancel) {
                    Held::TryAgain => {
                        for (q, call, _) in exhausted {
                            queues.try_again(q, call);
                        }
                    }
                    Held::Cancelled => {
                        tracing::debug!(step = %self.cfg.step, calls = exhausted.len(), "held calls abandoned: the run is cancelled");
                        break;
                    }
                    Held::DeadLetter => {
                        for (q, call, err) in exhausted {
                            let t = queues.tries(q);
                            gave_up.push(GaveUp::new(call, err, t.attempts, t.first_failed_ms));
                            queues.done(q);
                        }
                    }
                }
            }
            // A repaired record is the key's next call, before the key's next record.
            self.remediate(gave_up, ctx, &mut out)?;
        }
        Ok(out)
    }

    /// Calls the function once for each of `calls` (at most one per key), with each key's
    /// state as stored now.
    fn invoke<'a>(
        &self,
        calls: impl ExactSizeIterator<Item = &'a Call>,
    ) -> Result<Vec<crate::udf::KeyedOutcome>, OpError> {
        let n = calls.len();
        let inputs = calls
            .map(|c| -> Result<KeyedInput, OpError> {
                Ok(KeyedInput {
                    key: c.key.clone(),
                    value: c.record.as_ref().map(|r| r.value().clone()),
                    time: c.time,
                    state: self
                        .store
                        .get(&self.state_key(&c.key_bytes))
                        .map_err(|e| self.state_err(e))?,
                    timer: c.timer,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = self
            .cfg
            .runtime
            .invoke_keyed(&self.cfg.function, inputs)
            .map_err(|e| OpError::Udf {
                step: self.cfg.step.clone(),
                message: e.to_string(),
            })?;
        if outcomes.len() != n {
            return Err(OpError::Udf {
                step: self.cfg.step.clone(),
                message: format!("runtime returned {} results for {n} calls", outcomes.len()),
            });
        }
        if let Some(b) = &self.cfg.breaker {
            let failed = outcomes
                .iter()
                .filter(|o| matches!(o, Err(e) if e.class == ErrorClass::Transient))
                .count();
            b.record(failed, outcomes.len() - failed);
        }
        Ok(outcomes)
    }

    /// Makes a round's calls (one per key), retrying transient failures in place; returns
    /// the calls it gave up on. (Repaired records go this way: a remediation's result gets
    /// its attempts at once, in its key's place.)
    fn run_round(
        &mut self,
        round: Vec<Call>,
        ctx: &mut Context,
        out: &mut Batch,
    ) -> Result<Vec<GaveUp>, OpError> {
        let started = crate::dlq::now_ms();
        let mut gave_up = Vec::new();
        let mut retry = self.cfg.retry.start(round.len() as u64);
        let mut pending = round;
        while !pending.is_empty() {
            let outcomes = self.invoke(pending.iter())?;
            let mut wb = StateBatch::new();
            let mut again = Vec::new();
            let mut exhausted = Vec::new();
            for (call, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    Ok(result) => {
                        // A record ends in the key's state; what the function emits is new.
                        ctx.absorbed += u64::from(call.record.is_some());
                        ctx.created += result.outputs.len() as u64;
                        self.apply(&call, result, &mut wb, out)
                    }
                    Err(err) if err.class == ErrorClass::Transient && !retry.is_exhausted() => {
                        again.push(call)
                    }
                    Err(err) if err.class == ErrorClass::Transient => exhausted.push((call, err)),
                    Err(err) => gave_up.push(GaveUp::new(call, err, retry.attempt(), started)),
                }
            }
            self.store.write(wb).map_err(|e| self.state_err(e))?;
            pending = again;
            if !exhausted.is_empty() {
                // The round's calls share their attempts: none is left in `pending`.
                match hold(self.cfg.breaker.as_deref(), exhausted.len(), &self.cancel) {
                    Held::TryAgain => {
                        pending = exhausted.into_iter().map(|(c, _)| c).collect();
                        retry = self.cfg.retry.start(pending.len() as u64);
                        continue;
                    }
                    Held::Cancelled => {
                        tracing::debug!(step = %self.cfg.step, calls = exhausted.len(), "held calls abandoned: the run is cancelled");
                        break;
                    }
                    Held::DeadLetter => {
                        for (call, err) in exhausted {
                            gave_up.push(GaveUp::new(call, err, retry.attempt(), started));
                        }
                    }
                }
            }
            if !pending.is_empty() && retry.wait_for_next(&self.cancel) != WaitOutcome::Due {
                // Cancelled: the run is being torn down and its in-flight calls with it;
                // their keys' state is as the last successful call left it.
                tracing::debug!(step = %self.cfg.step, calls = pending.len(), "retry abandoned: the run is cancelled");
                break;
            }
        }
        Ok(gave_up)
    }

    fn apply(&mut self, call: &Call, result: KeyedResult, wb: &mut StateBatch, out: &mut Batch) {
        let skey = self.state_key(&call.key_bytes);
        match result.state {
            StateUpdate::Keep => {}
            StateUpdate::Set(bytes) => wb.put(&skey, bytes),
            StateUpdate::Clear => wb.delete(&skey),
        }
        for t in result.timers {
            if self.timers.insert(t, call.key_bytes.clone()) {
                wb.put(self.timer_key(&call.key_bytes, t), []);
            }
        }
        let origin = call.record.as_ref().map(|r| r.origin).unwrap_or_default();
        for value in result.outputs {
            out.push(Record::new(value, call.time, origin).with_key(Some(call.key.clone())));
        }
    }

    /// Sends the records of calls given up on to the step's remediation, if any: a repaired
    /// record is called once more (with retries) in the key's place, a dropped one counted;
    /// the rest, timer calls (no record to repair) and repaired records that fail again go
    /// to the DLQ.
    fn remediate(
        &mut self,
        gave_up: Vec<GaveUp>,
        ctx: &mut Context,
        out: &mut Batch,
    ) -> Result<(), OpError> {
        let remedy = match &self.cfg.remedy {
            Some(r) if !gave_up.is_empty() => r.clone(),
            _ => {
                for g in &gave_up {
                    self.dead(ctx, g, None);
                }
                return Ok(());
            }
        };
        let (records, timers): (Vec<GaveUp>, Vec<GaveUp>) =
            gave_up.into_iter().partition(|g| g.call.record.is_some());
        for g in &timers {
            self.dead(ctx, g, None);
        }
        let asks: Vec<Failed> = records
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let record = g.call.record.clone()?;
                Some(Failed::new(
                    i,
                    record,
                    g.error.clone(),
                    g.attempts,
                    g.first_failed_ms,
                ))
            })
            .collect();
        let verdicts = remedy.judge(&self.cfg.step, &asks);
        let mut repaired = Vec::new();
        for (mut g, verdict) in records.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Repaired(value) => {
                    if let Some(r) = g.call.record.as_mut() {
                        r.set_value(value);
                    }
                    repaired.push(g.call);
                }
                Verdict::Dropped => ctx.remediation_dropped += 1,
                Verdict::GaveUp(why) => self.dead(ctx, &g, Some(&why)),
            }
        }
        if repaired.is_empty() {
            return Ok(());
        }
        ctx.remediated += repaired.len() as u64;
        let note = format!(
            "the remediation udf `{}` repaired this record (what is shown) and it failed again",
            remedy.udf
        );
        for g in self.run_round(repaired, ctx, out)? {
            self.dead(ctx, &g, Some(&note));
        }
        Ok(())
    }

    /// Dead-letters a call given up on; `note` (why a remediation did not save it) goes after
    /// the error's detail.
    fn dead(&self, ctx: &mut Context, g: &GaveUp, note: Option<&str>) {
        let (call, err) = (&g.call, &g.error);
        // A timer call has no record: its dead letter is a new one.
        ctx.created += u64::from(call.record.is_none());
        let record = call.record.clone().unwrap_or_else(|| {
            Record::new(Value::Null, call.time, Origin::default()).with_key(Some(call.key.clone()))
        });
        let message = match call.timer {
            Some(t) => format!(
                "timer at {t} for key {}: {}",
                call.key.to_json_string(),
                err.message
            ),
            None => err.message.clone(),
        };
        let mut dl = dead_letter_for(&record, &self.cfg.step, err.class, message);
        gave_up(
            &mut dl,
            err,
            note,
            g.attempts,
            g.first_failed_ms,
            self.cfg.runtime.as_ref(),
        );
        ctx.dead.push(dl);
    }
}

/// A call the step gave up on, with why and after how many attempts.
struct GaveUp {
    call: Call,
    error: FunctionError,
    attempts: u32,
    /// When its first attempt's failure was seen (ms since the epoch).
    first_failed_ms: i64,
}

impl GaveUp {
    fn new(call: Call, error: FunctionError, attempts: u32, first_failed_ms: i64) -> Self {
        GaveUp {
            call,
            error,
            attempts,
            first_failed_ms,
        }
    }
}

impl Operator for KeyedProcess {
    fn process(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        let calls = batch
            .into_iter()
            .map(|record| {
                let key = record.key.clone().unwrap_or(Value::Null);
                let mut key_bytes = Vec::with_capacity(32);
                key.key_bytes(&mut key_bytes);
                Call {
                    key_bytes,
                    key,
                    time: record.time,
                    record: Some(record),
                    timer: None,
                }
            })
            .collect();
        self.run(calls, ctx)
    }

    fn restore(&mut self, key_groups: (u16, u16), _watermark: EventTime) -> Result<(), OpError> {
        self.timers.clear();
        for kg in key_groups.0..=key_groups.1 {
            let entries = self
                .store
                .scan_prefix(&layout::tag_prefix(kg, self.cfg.op_id, Tag::KeyedTimer))
                .map_err(|e| self.state_err(e))?;
            for (k, _) in entries {
                let Some((time, key_bytes)) = layout::parse_timer_key(&k) else {
                    return Err(self.state_err(StateError::Corrupt(format!(
                        "timer key {k:?} cannot be decoded"
                    ))));
                };
                self.timers.insert(time, key_bytes.to_vec());
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: EventTime, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = Vec::new();
        // Timers may set new timers that are already due: fire until none is, but a function
        // that keeps re-arming a due timer (always so at the end of input) must not loop forever.
        for round in 0.. {
            if round == MAX_TIMER_ROUNDS {
                let left = self.timers.count_due(watermark);
                tracing::warn!(step = %self.cfg.step, left, "timers keep setting due timers; \
                    leaving the rest for the next watermark (at the end of input they are dropped)");
                if watermark == crate::record::WATERMARK_END {
                    let mut wb = StateBatch::new();
                    while let Some((t, key_bytes)) = self.timers.pop_first() {
                        wb.delete(self.timer_key(&key_bytes, t));
                    }
                    self.store.write(wb).map_err(|e| self.state_err(e))?;
                }
                return Ok(out);
            }
            let mut due = Vec::new();
            while let Some(timer) = self.timers.pop_due(watermark) {
                due.push(timer);
            }
            if due.is_empty() {
                return Ok(out);
            }
            let mut wb = StateBatch::new();
            let mut calls = Vec::with_capacity(due.len());
            for (t, key_bytes) in due {
                wb.delete(self.timer_key(&key_bytes, t));
                let key = Value::from_json(&key_bytes)
                    .map_err(|e| self.state_err(StateError::Corrupt(format!("timer key: {e}"))))?;
                calls.push(Call {
                    key_bytes,
                    key,
                    record: None,
                    time: t,
                    timer: Some(t),
                });
            }
            self.store.write(wb).map_err(|e| self.state_err(e))?;
            out.extend(self.run(calls, ctx)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
