//! Parked retries: a batch whose records wait for their next attempt does not hold up the
//! batches after it; they are called meanwhile and leave behind it, in order, and the task's
//! count of batches in flight covers every batch read since the parked one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::expr::Expr;
use crate::ops::stateless::Filter;
use crate::ops::Chain;
use crate::record::{Origin, WATERMARK_END};
use crate::udf::native::NativeRuntime;
use crate::udf::FunctionError;
use headwater_sdk::Function;

/// Fails record 1 transiently the first time; logs every record it is called with.
struct FailsOneOnce(Arc<Mutex<Vec<i64>>>);

impl Function for FailsOneOnce {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        let n = number(&record);
        let mut log = self.0.lock().expect("log");
        let first = !log.contains(&n);
        log.push(n);
        if n == 1 && first {
            return Err(FunctionError::transient("busy"));
        }
        Ok(vec![record])
    }
}

fn step(log: Arc<Mutex<Vec<i64>>>) -> UdfStep {
    let mut rt = NativeRuntime::default();
    rt.register("f", FailsOneOnce(log));
    UdfStep::new(
        "steps[1] udf f".into(),
        Arc::new(rt),
        "f".into(),
        FunctionKind::Map,
        RetryPolicy {
            max_attempts: 4,
            // Long enough that nothing is due before the test ends the input.
            initial_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_millis(300),
        },
    )
}

/// Records `{"n": N}`.
fn batch(ns: &[i64]) -> Batch {
    ns.iter()
        .map(|&n| {
            let v = Value::from_json(format!(r#"{{"n":{n}}}"#).as_bytes()).expect("json");
            Record::new(v, n, Origin::default())
        })
        .collect()
}

fn number(v: &Value) -> i64 {
    v.as_object()
        .and_then(|o| o.get("n"))
        .and_then(Value::as_f64)
        .map_or(-1, |n| n as i64)
}

fn values(out: &Batch) -> Vec<i64> {
    out.iter().map(|r| number(r.value())).collect()
}

#[test]
fn the_batches_after_a_parked_one_are_called_at_once_and_leave_behind_it_in_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut step = step(log.clone());
    let mut ctx = Context::default();
    assert!(step
        .process(batch(&[1, 2]), &mut ctx)
        .expect("a")
        .is_empty());
    assert!(step
        .process(batch(&[3, 4]), &mut ctx)
        .expect("b")
        .is_empty());
    assert!(step.process(batch(&[5]), &mut ctx).expect("c").is_empty());
    assert_eq!(
        *log.lock().expect("log"),
        [1, 2, 3, 4, 5],
        "the later batches were called without waiting for record 1's retry"
    );
    assert_eq!(step.in_flight_batches(), 3);
    assert!(step.holds_records(), "the task keeps ticking it");
    // A tick before the retry is due releases nothing: the batches stay in order.
    assert!(step
        .on_tick(Instant::now(), &mut ctx)
        .expect("tick")
        .is_empty());
    // The end of the input waits for the retry, then everything leaves, in order.
    let out = step.on_watermark(WATERMARK_END, &mut ctx).expect("end");
    assert_eq!(values(&out), [1, 2, 3, 4, 5]);
    assert_eq!(*log.lock().expect("log"), [1, 2, 3, 4, 5, 1]);
    assert!(ctx.dead.is_empty());
    assert_eq!(step.in_flight_batches(), 0);
}

#[test]
fn a_barrier_waits_for_parked_records() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut step = step(log);
    let mut ctx = Context::default();
    assert!(step
        .process(batch(&[1, 2]), &mut ctx)
        .expect("a")
        .is_empty());
    let out = step.on_barrier(&mut ctx).expect("barrier");
    assert_eq!(values(&out), [1, 2], "everything before the barrier is out");
    assert!(!step.holds_records());
}

#[test]
fn batches_filtered_out_before_the_step_count_as_in_flight_behind_a_parked_one() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let filter = Filter::new(
        "steps[0] filter".into(),
        Expr::parse("n != 99").expect("expr"),
    );
    let mut chain = Chain::new(vec![Box::new(filter), Box::new(step(log))]);
    let mut ctx = Context::default();
    assert!(chain.process(batch(&[1]), &mut ctx).expect("a").is_empty());
    // Filtered out whole: it never reaches the udf step, but its watermark comes after
    // batch 1's, so it must wait too.
    assert!(chain.process(batch(&[99]), &mut ctx).expect("b").is_empty());
    assert_eq!(chain.in_flight_batches(), 2);
    let out = chain.release_oldest(&mut ctx).expect("release");
    assert_eq!(values(&out.unwrap_or_default()), [1]);
    assert_eq!(chain.in_flight_batches(), 0);
}

/// Fails its first two calls (transiently), then answers.
struct FailsTwice(std::sync::atomic::AtomicU32);

impl Function for FailsTwice {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            return Err(FunctionError::transient("connection refused"));
        }
        Ok(vec![record])
    }
}

#[test]
fn records_parked_through_an_outage_that_ended_start_over_instead_of_the_dlq() {
    use crate::config::spec::BreakerSpec;
    use crate::ops::breaker::Breaker;
    let mut rt = NativeRuntime::default();
    rt.register("svc", FailsTwice(Default::default()));
    let breaker = Arc::new(Breaker::new(
        "svc",
        BreakerSpec {
            enabled: true,
            failure_percent: 50,
            min_records: 10,
            cool_down: Duration::from_millis(5),
            max_pause: Duration::from_secs(60),
        },
    ));
    let mut step = UdfStep::new(
        "steps[0] udf svc".into(),
        Arc::new(rt),
        "svc".into(),
        FunctionKind::Map,
        RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        },
    )
    .with_breaker(Some(breaker.clone()));
    let mut ctx = Context::default();
    assert!(step.process(batch(&[1]), &mut ctx).expect("a").is_empty());
    // Meanwhile the service had an outage and other calls saw it end (a probe went through):
    // the breaker is closed and its window forgotten when the parked record's last attempt
    // fails.
    breaker.record(20, 0);
    assert_eq!(
        breaker.verdict(20),
        crate::ops::breaker::Verdict::HoldFor(Duration::from_millis(5))
    );
    breaker.record(0, 5);
    assert_eq!(breaker.recoveries(), 1);
    let out = step.on_watermark(WATERMARK_END, &mut ctx).expect("end");
    assert_eq!(values(&out), [1], "tried afresh, not dead-lettered");
    assert!(ctx.dead.is_empty());
}
