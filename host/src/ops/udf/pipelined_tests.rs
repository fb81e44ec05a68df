//! A pipelined UDF step: calls stay in flight while the next batches arrive, and come out in
//! order, one batch per call (so the task can send each batch's watermark after it): when a
//! third is started, on a tick once answered, when the task asks, before a barrier and at the
//! end of the input.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use super::*;
use crate::record::Origin;
use crate::udf::{FunctionError, FunctionInfo, PendingCall, RecordOutcome, RuntimeError};

/// A runtime whose functions "run elsewhere": a call's answer is ready once `answered` is
/// set (or when waited for). `invoke` (retries) answers at once. The function adds `seen`;
/// a record with `"flaky": true` fails transiently on its first call.
#[derive(Default)]
struct Remote {
    answered: Arc<AtomicBool>,
    waits: AtomicU32,
    flaked: AtomicBool,
}

struct Call {
    outcomes: Vec<RecordOutcome>,
    answered: Arc<AtomicBool>,
}

impl PendingCall for Call {
    fn is_ready(&self) -> bool {
        self.answered.load(Ordering::SeqCst)
    }
    fn wait(self: Box<Self>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Ok(self.outcomes)
    }
}

impl Remote {
    fn answer(&self, v: &Value) -> RecordOutcome {
        let obj = v.as_object().cloned().unwrap_or_default();
        if obj.get("flaky").is_some() && !self.flaked.swap(true, Ordering::SeqCst) {
            return Err(FunctionError::transient("not now"));
        }
        let mut obj = obj;
        obj.insert("seen", Value::Bool(true));
        Ok(vec![Value::Object(obj)])
    }
}

impl UdfRuntime for Remote {
    fn name(&self) -> &str {
        "remote"
    }
    fn functions(&self) -> Vec<FunctionInfo> {
        Vec::new()
    }
    fn invoke(&self, _: &str, inputs: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Ok(inputs.iter().map(|v| self.answer(v)).collect())
    }
    fn runs_elsewhere(&self) -> bool {
        true
    }
    fn submit(&self, _: &str, inputs: &[Record]) -> Box<dyn PendingCall> {
        self.waits.fetch_add(1, Ordering::SeqCst);
        Box::new(Call {
            outcomes: inputs.iter().map(|r| self.answer(r.value())).collect(),
            answered: self.answered.clone(),
        })
    }
}

fn rec(n: i64) -> Record {
    let v = Value::from_json(format!("{{\"n\":{n}}}").as_bytes()).expect("json");
    Record::new(v, n, Origin::default())
}

fn batch(ns: std::ops::Range<i64>) -> Batch {
    ns.map(rec).collect()
}

fn step(rt: Arc<Remote>, pipelined: bool) -> UdfStep {
    UdfStep::new(
        "steps[0] udf remote".into(),
        rt,
        "f".into(),
        FunctionKind::Map,
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        },
    )
    .with_batching(Batching {
        pipelined,
        ..Batching::default()
    })
}

fn ns(out: &Batch) -> Vec<i64> {
    out.iter()
        .map(|r| {
            assert_eq!(
                r.value().as_object().and_then(|o| o.get("seen")),
                Some(&Value::Bool(true)),
                "every output went through the function"
            );
            match r.value().as_object().and_then(|o| o.get("n")) {
                Some(Value::Int(n)) => *n,
                other => panic!("no n: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn batches_come_out_in_order_after_the_calls_behind_them_started() {
    let rt = Arc::new(Remote::default());
    let mut step = step(rt.clone(), true);
    let mut ctx = Context::default();
    assert!(step.process(batch(0..3), &mut ctx).expect("1").is_empty());
    assert!(step.process(batch(3..6), &mut ctx).expect("2").is_empty());
    assert_eq!(step.in_flight_batches(), 2);
    // A third call in flight is one too many: the oldest is settled, and only it, even
    // when the next is answered too.
    rt.answered.store(true, Ordering::SeqCst);
    let out = step.process(batch(6..9), &mut ctx).expect("3");
    assert_eq!(ns(&out), vec![0, 1, 2]);
    assert!(step.holds_records());
    assert_eq!(step.in_flight_batches(), 2);
    // The task takes the rest a batch at a time (before a barrier, at the end).
    let out = step.release_oldest(&mut ctx).expect("release");
    assert_eq!(ns(&out.expect("a batch")), vec![3, 4, 5]);
    // A barrier takes everything still in flight, in order.
    let out = step.on_barrier(&mut ctx).expect("barrier");
    assert_eq!(ns(&out), vec![6, 7, 8]);
    assert!(!step.holds_records());
    assert_eq!(step.in_flight_batches(), 0);
    assert!(step.release_oldest(&mut ctx).expect("none").is_none());
    assert!(ctx.dead.is_empty());
}

#[test]
fn answered_calls_come_out_on_a_tick_and_unanswered_ones_wait() {
    let rt = Arc::new(Remote::default());
    let mut step = step(rt.clone(), true);
    let mut ctx = Context::default();
    assert!(step.process(batch(0..2), &mut ctx).expect("p").is_empty());
    assert!(step.process(batch(2..4), &mut ctx).expect("p").is_empty());
    assert!(step
        .on_tick(Instant::now(), &mut ctx)
        .expect("tick")
        .is_empty());
    rt.answered.store(true, Ordering::SeqCst);
    // Both are answered; a tick releases one batch, the next tick the other.
    let out = step.on_tick(Instant::now(), &mut ctx).expect("tick");
    assert_eq!(ns(&out), vec![0, 1]);
    let out = step.on_tick(Instant::now(), &mut ctx).expect("tick");
    assert_eq!(ns(&out), vec![2, 3]);
    assert!(!step.holds_records());
}

#[test]
fn a_watermark_leaves_calls_in_flight_and_the_end_of_the_input_takes_them() {
    let rt = Arc::new(Remote::default());
    let mut step = step(rt.clone(), true);
    let mut ctx = Context::default();
    step.process(batch(0..3), &mut ctx).expect("1");
    step.process(batch(10..13), &mut ctx).expect("2");
    // The task sends a batch's watermark only once the batch is out: a watermark never
    // releases calls in flight.
    assert!(step.on_watermark(50, &mut ctx).expect("wm").is_empty());
    assert_eq!(step.in_flight_batches(), 2);
    // The end of the input releases everything.
    let out = step
        .on_watermark(crate::record::WATERMARK_END, &mut ctx)
        .expect("end");
    assert_eq!(ns(&out), vec![0, 1, 2, 10, 11, 12]);
}

#[test]
fn a_transient_failure_in_a_pipelined_call_is_retried_in_place() {
    let rt = Arc::new(Remote::default());
    let mut step = step(rt.clone(), true);
    let mut ctx = Context::default();
    let mut first = batch(0..3);
    first[1].set_value(Value::from_json(br#"{"n":1,"flaky":true}"#).expect("json"));
    step.process(first, &mut ctx).expect("1");
    let out = step.on_barrier(&mut ctx).expect("barrier");
    assert_eq!(ns(&out), vec![0, 1, 2], "retried, and still in its place");
    assert!(ctx.dead.is_empty());
}

#[test]
fn a_step_not_pipelined_answers_each_batch_at_once() {
    let rt = Arc::new(Remote::default());
    let mut step = step(rt.clone(), false);
    let mut ctx = Context::default();
    let out = step.process(batch(0..3), &mut ctx).expect("p");
    assert_eq!(ns(&out), vec![0, 1, 2]);
    assert!(!step.holds_records());
    assert_eq!(rt.waits.load(Ordering::SeqCst), 0, "invoke, not submit");
}

#[test]
fn a_runtime_in_the_callers_thread_is_never_pipelined() {
    let rt = crate::udf::native::NativeRuntime::with_builtins();
    let mut step = UdfStep::new(
        "steps[0] udf id".into(),
        Arc::new(rt),
        "identity".into(),
        FunctionKind::Map,
        RetryPolicy::default(),
    )
    .with_batching(Batching {
        pipelined: true,
        ..Batching::default()
    });
    let mut ctx = Context::default();
    assert_eq!(step.process(batch(0..3), &mut ctx).expect("p").len(), 3);
    assert!(!step.holds_records());
}
