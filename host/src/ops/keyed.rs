//! The keyed process step (the Stateful Functions model): for each record the host reads the
//! key's state from RocksDB, sends it with the record to the function, and stores the state
//! the function returns; workers hold nothing. Functions may set event-time timers, which
//! call them again for the key when the watermark passes.
//!
//! A key's calls are strictly sequential: a batch is cut into rounds holding at most one
//! record per key (in arrival order), and a round's states are written before the next round
//! reads them. Failed calls change nothing: transient ones are retried (with backoff) before
//! the key's next record is sent, permanent ones go to the DLQ.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dlq::ErrorClass;
use crate::record::{Batch, EventTime, Origin, Record};
use crate::state::layout::{self, Tag};
use crate::state::{key_group_of, KeyGroup, StateBatch, StateError, StateStore, TimerIndex};
use crate::udf::{FunctionError, KeyedInput, KeyedResult, StateUpdate, UdfRuntime};
use crate::value::Value;

use super::breaker::{hold, Breaker, Held};
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

    /// Makes `calls` key by key in order (see the module docs); returns the outputs.
    fn run(&mut self, calls: Vec<Call>, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = Vec::with_capacity(calls.len());
        for round in rounds(calls) {
            let mut retry = self.cfg.retry.start(round.len() as u64);
            let mut pending = round;
            while !pending.is_empty() {
                let inputs = pending
                    .iter()
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
                if outcomes.len() != pending.len() {
                    return Err(OpError::Udf {
                        step: self.cfg.step.clone(),
                        message: format!(
                            "runtime returned {} results for {} calls",
                            outcomes.len(),
                            pending.len()
                        ),
                    });
                }
                let mut wb = StateBatch::new();
                let mut again = Vec::new();
                let mut exhausted = Vec::new();
                if let Some(b) = &self.cfg.breaker {
                    let failed = outcomes
                        .iter()
                        .filter(|o| matches!(o, Err(e) if e.class == ErrorClass::Transient))
                        .count();
                    b.record(failed, outcomes.len() - failed);
                }
                for (call, outcome) in pending.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(result) => self.apply(&call, result, &mut wb, &mut out),
                        Err(err) if err.class == ErrorClass::Transient && !retry.is_exhausted() => {
                            again.push(call)
                        }
                        Err(err) if err.class == ErrorClass::Transient => {
                            exhausted.push((call, err))
                        }
                        Err(err) => self.dead(ctx, &call, &err, retry.attempt()),
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
                                self.dead(ctx, &call, &err, retry.attempt());
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
        }
        Ok(out)
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

    fn dead(&self, ctx: &mut Context, call: &Call, err: &FunctionError, attempts: u32) {
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
        dl.detail = err.detail.clone();
        dl.attempts = attempts;
        ctx.dead.push(dl);
    }
}

/// Cuts calls into rounds with at most one call per key, keeping each key's order.
fn rounds(calls: Vec<Call>) -> Vec<Vec<Call>> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut rounds: Vec<Vec<Call>> = Vec::new();
    for call in calls {
        let n = seen.entry(call.key_bytes.clone()).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(call);
        *n += 1;
    }
    rounds
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
mod tests {
    use super::*;
    use crate::udf::{FunctionInfo, FunctionKind, KeyedOutcome, RecordOutcome, RuntimeError};
    use std::sync::Mutex;

    /// What the test runtime was called with: key, timer, state.
    type SeenCall = (Value, Option<EventTime>, Option<Vec<u8>>);

    /// A running sum per key that emits the total when its timer (ts + 10) fires, and fails
    /// permanently on negative values. Records what it was called with.
    struct Summer {
        calls: Mutex<Vec<SeenCall>>,
    }

    impl UdfRuntime for Summer {
        fn name(&self) -> &str {
            "test"
        }
        fn functions(&self) -> Vec<FunctionInfo> {
            vec![FunctionInfo {
                name: "sum".into(),
                kind: FunctionKind::KeyedProcess,
            }]
        }
        fn invoke(&self, _: &str, _: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
            unreachable!("keyed only")
        }
        fn invoke_keyed(
            &self,
            _: &str,
            inputs: Vec<KeyedInput>,
        ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
            let mut keys = std::collections::HashSet::new();
            Ok(inputs
                .into_iter()
                .map(|i| {
                    assert!(
                        keys.insert(i.key.to_json_string()),
                        "one call per key per round"
                    );
                    self.calls
                        .lock()
                        .map(|mut c| c.push((i.key.clone(), i.timer, i.state.clone())))
                        .ok();
                    let total: i64 = i
                        .state
                        .as_deref()
                        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                        .unwrap_or(0);
                    if let Some(t) = i.timer {
                        return Ok(KeyedResult {
                            outputs: vec![Value::from_json(
                                format!(r#"{{"total":{total},"at":{t}}}"#).as_bytes(),
                            )
                            .map_err(|e| FunctionError::permanent(e.to_string()))?],
                            state: StateUpdate::Clear,
                            timers: vec![],
                        });
                    }
                    let v = i
                        .value
                        .as_ref()
                        .and_then(|v| v.as_object()?.get("v")?.as_f64())
                        .unwrap_or(0.0) as i64;
                    if v < 0 {
                        return Err(FunctionError::permanent("negative"));
                    }
                    Ok(KeyedResult {
                        outputs: vec![],
                        state: StateUpdate::Set((total + v).to_string().into_bytes()),
                        timers: vec![i.time + 10],
                    })
                })
                .collect())
        }
    }

    fn rec(key: &str, t: i64, v: i64) -> Record {
        let value =
            Value::from_json(format!(r#"{{"k":"{key}","v":{v}}}"#).as_bytes()).expect("json");
        Record::new(value, t, Origin::default()).with_key(Some(
            Value::from_json(format!("\"{key}\"").as_bytes()).expect("json"),
        ))
    }

    /// The keyed step `steps[1] udf sum` over `runtime`, with the default retry policy.
    fn sum_config(runtime: Arc<dyn UdfRuntime>) -> KeyedProcessConfig {
        KeyedProcessConfig {
            step: "steps[1] udf sum".into(),
            op_id: 1,
            runtime,
            function: "sum".into(),
            max_parallelism: 128,
            retry: RetryPolicy::default(),
            breaker: None,
        }
    }

    #[test]
    fn state_threads_through_a_keys_records_and_timers_fire_at_the_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_fresh(dir.path()).expect("store");
        let runtime = Arc::new(Summer {
            calls: Mutex::new(Vec::new()),
        });
        let mut op = KeyedProcess::new(sum_config(runtime.clone()), store);
        let mut ctx = Context::default();
        // Three records of key a in one batch: each must see the previous one's state.
        let out = op
            .process(
                vec![
                    rec("a", 1, 1),
                    rec("b", 2, 5),
                    rec("a", 3, 2),
                    rec("a", 4, -1),
                    rec("a", 5, 4),
                ],
                &mut ctx,
            )
            .expect("process");
        assert!(out.is_empty());
        assert_eq!(ctx.dead.len(), 1, "the negative record is dead-lettered");
        assert_eq!(
            op.pending_timers(),
            4,
            "timers at 11, 12, 13, 15 (a) and 12 (b) dedupe by (time, key)"
        );
        // Watermark 12 fires a@11 (total 7), a@13 no, b@12 (5): a's state is cleared at 11.
        let fired = op.on_watermark(12, &mut ctx).expect("fire");
        let texts: Vec<String> = fired.iter().map(|r| r.value().to_json_string()).collect();
        assert_eq!(
            texts,
            vec![r#"{"total":7,"at":11}"#, r#"{"total":5,"at":12}"#]
        );
        let fired = op.on_watermark(i64::MAX, &mut ctx).expect("fire");
        let texts: Vec<String> = fired.iter().map(|r| r.value().to_json_string()).collect();
        assert_eq!(
            texts,
            vec![r#"{"total":0,"at":13}"#, r#"{"total":0,"at":15}"#]
        );
        assert_eq!(op.pending_timers(), 0);
        let calls = runtime.calls.lock().expect("lock");
        let a_states: Vec<Option<String>> = calls
            .iter()
            .filter(|(k, t, _)| k.to_json_string() == "\"a\"" && t.is_none())
            .map(|(_, _, s)| s.clone().map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect();
        assert_eq!(
            a_states,
            vec![None, Some("1".into()), Some("3".into()), Some("3".into())],
            "each call of key a saw the state the previous successful one stored"
        );
    }

    /// Sets a timer at the same time it fired for, forever.
    struct Rearm;

    impl UdfRuntime for Rearm {
        fn name(&self) -> &str {
            "test"
        }
        fn functions(&self) -> Vec<FunctionInfo> {
            Vec::new()
        }
        fn invoke(&self, _: &str, _: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
            unreachable!("keyed only")
        }
        fn invoke_keyed(
            &self,
            _: &str,
            inputs: Vec<KeyedInput>,
        ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
            Ok(inputs
                .into_iter()
                .map(|i| {
                    Ok(KeyedResult {
                        outputs: vec![],
                        state: StateUpdate::Keep,
                        timers: vec![i.timer.unwrap_or(i.time)],
                    })
                })
                .collect())
        }
    }

    #[test]
    fn a_timer_that_rearms_itself_does_not_hang_the_end_of_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_fresh(dir.path()).expect("store");
        let mut op = KeyedProcess::new(
            KeyedProcessConfig {
                step: "steps[1] udf rearm".into(),
                op_id: 1,
                runtime: Arc::new(Rearm),
                function: "rearm".into(),
                max_parallelism: 128,
                retry: RetryPolicy::default(),
                breaker: None,
            },
            store,
        );
        let mut ctx = Context::default();
        op.process(vec![rec("a", 5, 1)], &mut ctx).expect("process");
        assert_eq!(op.pending_timers(), 1);
        op.on_watermark(crate::record::WATERMARK_END, &mut ctx)
            .expect("fire");
        assert_eq!(op.pending_timers(), 0, "dropped at the end of input");
    }

    #[test]
    fn rounds_hold_one_call_per_key_in_order() {
        let call = |k: &str, t| Call {
            key_bytes: k.as_bytes().to_vec(),
            key: Value::Null,
            record: None,
            time: t,
            timer: None,
        };
        let r = rounds(vec![
            call("a", 1),
            call("b", 2),
            call("a", 3),
            call("a", 4),
            call("c", 5),
        ]);
        let times: Vec<Vec<i64>> = r
            .iter()
            .map(|round| round.iter().map(|c| c.time).collect())
            .collect();
        assert_eq!(times, vec![vec![1, 2, 5], vec![3], vec![4]]);
    }

    /// The summer behind a service that is down (every call fails transiently) until its
    /// `calls` reach `up_after`.
    struct DownThenUp {
        inner: Summer,
        calls: std::sync::atomic::AtomicU32,
        up_after: u32,
    }

    impl UdfRuntime for DownThenUp {
        fn name(&self) -> &str {
            "test"
        }
        fn functions(&self) -> Vec<FunctionInfo> {
            self.inner.functions()
        }
        fn invoke(&self, _: &str, _: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
            unreachable!("keyed only")
        }
        fn invoke_keyed(
            &self,
            f: &str,
            inputs: Vec<KeyedInput>,
        ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
            let n = inputs.len() as u32;
            let before = self.calls.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            if before < self.up_after {
                return Ok(inputs
                    .iter()
                    .map(|_| Err(FunctionError::transient("connection refused")))
                    .collect());
            }
            self.inner.invoke_keyed(f, inputs)
        }
    }

    #[test]
    fn an_outage_holds_keyed_calls_until_the_function_recovers_and_state_is_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_fresh(dir.path()).expect("store");
        let runtime = Arc::new(DownThenUp {
            inner: Summer {
                calls: Mutex::new(Vec::new()),
            },
            calls: std::sync::atomic::AtomicU32::new(0),
            up_after: 30 * 5,
        });
        let breaker = Arc::new(Breaker::new(
            "sum",
            crate::config::spec::BreakerSpec {
                enabled: true,
                failure_percent: 50,
                min_records: 10,
                cool_down: std::time::Duration::from_millis(5),
                max_pause: std::time::Duration::from_secs(60),
            },
        ));
        let mut op = KeyedProcess::new(
            KeyedProcessConfig {
                retry: RetryPolicy {
                    max_attempts: 2,
                    initial_backoff: std::time::Duration::from_millis(1),
                    max_backoff: std::time::Duration::from_millis(1),
                },
                breaker: Some(breaker.clone()),
                ..sum_config(runtime.clone())
            },
            store,
        );
        let mut ctx = Context::default();
        // 30 keys, one record each: one round, held through the outage.
        let batch: Batch = (0..30).map(|i| rec(&format!("k{i}"), 1, i)).collect();
        op.process(batch, &mut ctx).expect("process");
        assert!(
            ctx.dead.is_empty(),
            "nothing dead-lettered: {}",
            ctx.dead.len()
        );
        let status = breaker.status();
        assert_eq!(status.openings.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!status.open.load(std::sync::atomic::Ordering::SeqCst));
        // Every key's state holds its value, and its timer fires with it.
        let out = op
            .on_watermark(crate::record::WATERMARK_END, &mut ctx)
            .expect("timers");
        let mut totals: Vec<i64> = out
            .iter()
            .filter_map(|r| r.value().as_object()?.get("total")?.as_f64())
            .map(|t| t as i64)
            .collect();
        totals.sort();
        assert_eq!(totals, (0..30).collect::<Vec<_>>());
    }
}
