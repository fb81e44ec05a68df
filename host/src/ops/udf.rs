//! The UDF step: calls a function through its runtime, a batch at a time. A failing record
//! never fails its batch: transient errors are retried with exponential backoff and jitter,
//! then remediated or sent to the DLQ; permanent errors at once. A batch whose records wait
//! for a retry is parked (`udf/in_flight.rs`): the batches after it are called meanwhile and
//! leave behind it, in order; taking outcomes apart is `udf/settle.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::record::{Batch, EventTime, Record};
use crate::udf::{FunctionKind, UdfRuntime};
use crate::value::Value;

use super::breaker::Breaker;
use super::remedy::{gave_up, Failed, Remedy};
use super::retry::{CancelSignal, RetryPolicy};
use super::{dead_letter_for, Context, OpError, Operator};

/// How a UDF step groups records into calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Call as soon as this many records are waiting.
    pub max_records: usize,
    /// Longest a record waits for others to fill a call; zero calls once per incoming batch.
    pub linger: Duration,
    /// With no linger and a runtime whose functions run elsewhere (worker processes): keep up
    /// to two calls in flight and release their batches in order, one per call
    /// of the step, so the host prepares and takes apart calls while the worker computes. The
    /// task sends each batch's watermark after it, and releases what is in flight before a
    /// barrier and at the end of the input.
    pub pipelined: bool,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_records: 512,
            linger: Duration::ZERO,
            pipelined: false,
        }
    }
}

pub struct UdfStep {
    step: String,
    runtime: Arc<dyn UdfRuntime>,
    function: String,
    kind: FunctionKind,
    retry: RetryPolicy,
    /// The UDF's circuit breaker (shared with its other steps and tasks), if it has one.
    breaker: Option<Arc<Breaker>>,
    /// Wakes a wait between attempts when the run is cancelled.
    cancel: CancelSignal,
    batching: Batching,
    /// Records lingering until a call (only with a non-zero linger).
    waiting: Batch,
    waiting_since: Option<Instant>,
    /// What gets the records the step would dead-letter (`remediate:`), if anything.
    remedy: Option<Remedy>,
    /// Batches taken in and not released yet, oldest first: calls in flight (pipelined
    /// steps), batches parked until a retry, and done batches behind them.
    in_flight: std::collections::VecDeque<InFlight>,
    /// Input batches the chain gave the step (`Operator::note_input_batch`).
    seen: u64,
    /// A parked batch just left: the done batches behind it leave too.
    draining: bool,
}

/// Calls a pipelined step keeps in flight.
const PIPELINE_DEPTH: usize = 2;

impl UdfStep {
    pub fn new(
        step: String,
        runtime: Arc<dyn UdfRuntime>,
        function: String,
        kind: FunctionKind,
        retry: RetryPolicy,
    ) -> Self {
        UdfStep {
            step,
            runtime,
            function,
            kind,
            retry,
            breaker: None,
            cancel: CancelSignal::default(),
            batching: Batching::default(),
            waiting: Vec::new(),
            waiting_since: None,
            in_flight: Default::default(),
            seen: 0,
            draining: false,
            remedy: None,
        }
    }

    /// Waits between attempts end early when `cancel` fires (the run is being cancelled).
    pub fn with_cancel(mut self, cancel: CancelSignal) -> Self {
        self.cancel = cancel;
        self
    }

    /// During an outage (most calls failing transiently) `breaker` holds records instead of
    /// dead-lettering them.
    pub fn with_breaker(mut self, breaker: Option<Arc<Breaker>>) -> Self {
        self.breaker = breaker;
        self
    }

    /// Records the step would dead-letter go to `remedy` first.
    pub fn with_remedy(mut self, remedy: Option<Remedy>) -> Self {
        self.remedy = remedy;
        self
    }

    /// Groups records into calls as `batching` says.
    pub fn with_batching(mut self, batching: Batching) -> Self {
        self.batching = batching;
        self
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = self.finish_in_flight(ctx)?;
        self.waiting_since = None;
        let batch = std::mem::take(&mut self.waiting);
        if !batch.is_empty() {
            out.extend(self.call(batch, ctx)?);
        }
        Ok(out)
    }

    /// Waits for the calls in flight, if any, and returns their batches' outputs.
    fn finish_in_flight(&mut self, ctx: &mut Context) -> Result<Batch, OpError> {
        let mut out = Vec::new();
        while let Some(batch) = self.settle_oldest(ctx)? {
            out.extend(batch);
        }
        Ok(out)
    }

    /// After a batch came in: moves the batches in flight on, releases the done ones at the
    /// front (keeping a pipelined step's calls in flight), and waits for the oldest while
    /// too many are in flight (two calls; more behind a parked batch).
    fn release(&mut self, ctx: &mut Context) -> Result<Batch, OpError> {
        self.advance_all(ctx)?;
        let keep = if self.pipelines() { PIPELINE_DEPTH } else { 0 };
        let mut out = self.release_done(keep);
        let most = if self.has_parked() {
            PARKED_DEPTH
        } else {
            keep
        };
        while self.in_flight.len() > most {
            out.extend(self.settle_oldest(ctx)?.unwrap_or_default());
        }
        Ok(out)
    }

    fn pipelines(&self) -> bool {
        self.batching.pipelined && self.batching.linger.is_zero() && self.runtime.runs_elsewhere()
    }

    /// Dead-letters a failed record; `note` (why a remediation did not save it) goes after
    /// the error's detail.
    fn dead(&self, ctx: &mut Context, f: &Failed, note: Option<&str>) {
        let err = &f.error;
        let mut dl = dead_letter_for(&f.record, &self.step, err.class, err.message.clone());
        gave_up(
            &mut dl,
            err,
            note,
            f.attempts,
            f.first_failed_ms,
            self.runtime.as_ref(),
        );
        ctx.dead.push(dl);
    }

    fn emit(&self, record: &Record, outputs: Vec<Value>, out: &mut Batch) {
        match self.kind {
            FunctionKind::Filter => {
                if !outputs.is_empty() {
                    out.push(record.clone());
                }
            }
            FunctionKind::Map
            | FunctionKind::FlatMap
            | FunctionKind::KeyedProcess
            | FunctionKind::WindowAggregate => {
                for value in outputs {
                    out.push(record.derive(value));
                }
            }
        }
    }
}

impl Operator for UdfStep {
    fn note_input_batch(&mut self) {
        self.seen += 1;
    }

    fn process(&mut self, batch: Batch, ctx: &mut Context) -> Result<Batch, OpError> {
        if self.pipelines() {
            // This batch's call starts before the previous one is taken apart: the worker
            // computes one while the host finishes the other. At most one batch out per call,
            // the oldest, unless parked ones are catching up: the task sends its watermark
            // next.
            let call = self.runtime.submit(&self.function, &batch);
            self.in_flight.push_back(InFlight {
                seq: self.seen,
                parked: false,
                stage: Stage::Called { batch, call },
            });
            return self.release(ctx);
        }
        if self.batching.linger.is_zero() {
            // A batch whose records all answered goes on at once; one with records waiting
            // for a retry is parked (the next batches go on behind it, in order).
            let first = self.runtime.invoke_records(&self.function, &batch);
            let s = self.begin(batch, first)?;
            if self.in_flight.is_empty() && s.is_settled() {
                return self.complete(s, ctx);
            }
            self.queue(s, ctx)?;
            return self.release(ctx);
        }
        let now = Instant::now();
        let since = *self.waiting_since.get_or_insert(now);
        self.waiting.extend(batch);
        if self.waiting.len() >= self.batching.max_records
            || now.duration_since(since) >= self.batching.linger
        {
            return self.flush(ctx);
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark: EventTime, ctx: &mut Context) -> Result<Batch, OpError> {
        // Records are never held past a watermark: it must not overtake them. A task sends a
        // batch's watermark only once the batch is out (`in_flight_batches`), so calls in flight
        // are always behind it; the end of the input takes them all, to be safe.
        let mut out = Vec::new();
        if watermark == crate::record::WATERMARK_END {
            out = self.finish_in_flight(ctx)?;
        }
        self.waiting_since = None;
        let batch = std::mem::take(&mut self.waiting);
        if !batch.is_empty() {
            out.extend(self.call(batch, ctx)?);
        }
        Ok(out)
    }

    fn in_flight_batches(&self) -> usize {
        // Counted from the oldest batch still here: the chain's batches after it that never
        // reached the step (filtered out before it) wait for it too.
        match self.in_flight.front() {
            Some(oldest) => self
                .in_flight
                .len()
                .max((self.seen.saturating_sub(oldest.seq) + 1) as usize),
            None => 0,
        }
    }

    fn release_oldest(&mut self, ctx: &mut Context) -> Result<Option<Batch>, OpError> {
        self.settle_oldest(ctx)
    }

    fn on_tick(&mut self, now: Instant, ctx: &mut Context) -> Result<Batch, OpError> {
        if !self.in_flight.is_empty() {
            self.advance_all(ctx)?;
            return Ok(self.release_done(0));
        }
        match self.waiting_since {
            Some(since) if now.duration_since(since) >= self.batching.linger => self.flush(ctx),
            _ => Ok(Vec::new()),
        }
    }

    fn holds_records(&self) -> bool {
        !self.waiting.is_empty() || !self.in_flight.is_empty()
    }

    fn on_barrier(&mut self, ctx: &mut Context) -> Result<Batch, OpError> {
        self.flush(ctx)
    }
}

mod in_flight;
mod settle;

use in_flight::{InFlight, Stage, PARKED_DEPTH};

#[cfg(test)]
mod parked_tests;

#[cfg(test)]
mod pipelined_tests;

#[cfg(test)]
mod remedy_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::ErrorClass;
    use crate::record::Origin;
    use crate::udf::native::NativeRuntime;
    use crate::udf::FunctionError;
    use headwater_sdk::Function;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky(AtomicU32);
    impl Function for Flaky {
        fn kind(&self) -> FunctionKind {
            FunctionKind::Map
        }
        fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
            if record
                .as_object()
                .and_then(|o| o.get("always_fail"))
                .is_some()
            {
                return Err(FunctionError::transient("still down"));
            }
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(FunctionError::transient("try again"))
            } else {
                Ok(vec![record])
            }
        }
    }

    fn rec(json: &str) -> Record {
        Record::new(
            Value::from_json(json.as_bytes()).expect("json"),
            5,
            Origin::default(),
        )
    }

    /// `batch` through the step, then the end of the input (which waits for parked batches),
    /// as a task does.
    pub(super) fn through(step: &mut UdfStep, batch: Batch, ctx: &mut Context) -> Batch {
        let mut out = step.process(batch, ctx).expect("process");
        out.extend(
            step.on_watermark(crate::record::WATERMARK_END, ctx)
                .expect("end"),
        );
        out
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn transient_errors_are_retried_then_dead_lettered_with_attempts() {
        let mut rt = NativeRuntime::default();
        rt.register("flaky", Flaky(AtomicU32::new(0)));
        let mut step = UdfStep::new(
            "steps[0] udf f".into(),
            Arc::new(rt),
            "flaky".into(),
            FunctionKind::Map,
            fast_retry(),
        );
        let mut ctx = Context::default();
        let out = through(
            &mut step,
            vec![rec(r#"{"a":1}"#), rec(r#"{"always_fail":true}"#)],
            &mut ctx,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(ctx.dead.len(), 1);
        assert_eq!(ctx.dead[0].attempts, 4);
        assert_eq!(ctx.dead[0].error_class, ErrorClass::Transient);
    }

    #[test]
    fn retried_records_keep_their_place_in_the_output() {
        let mut rt = NativeRuntime::default();
        rt.register("flaky", Flaky(AtomicU32::new(0)));
        let mut step = UdfStep::new(
            "steps[0] udf f".into(),
            Arc::new(rt),
            "flaky".into(),
            FunctionKind::Map,
            fast_retry(),
        );
        // Flaky fails its first two calls: record 1 and 2 fail once and are retried, record 3
        // succeeds at once; the output must still read 1, 2, 3.
        let mut ctx = Context::default();
        let out = through(
            &mut step,
            vec![rec(r#"{"n":1}"#), rec(r#"{"n":2}"#), rec(r#"{"n":3}"#)],
            &mut ctx,
        );
        let texts: Vec<String> = out.iter().map(|r| r.value().to_json_string()).collect();
        assert_eq!(texts, vec![r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
        assert!(ctx.dead.is_empty());
    }

    #[test]
    fn lingering_holds_records_until_full_a_tick_or_a_watermark() {
        let rt = NativeRuntime::with_builtins();
        let mut step = UdfStep::new(
            "steps[0] udf id".into(),
            Arc::new(rt),
            "identity".into(),
            FunctionKind::Map,
            fast_retry(),
        )
        .with_batching(Batching {
            max_records: 3,
            linger: Duration::from_secs(3600),
            pipelined: false,
        });
        let mut ctx = Context::default();
        assert!(step
            .process(vec![rec("{}"), rec("{}")], &mut ctx)
            .expect("p")
            .is_empty());
        assert!(step.holds_records());
        assert!(
            step.on_tick(Instant::now(), &mut ctx)
                .expect("tick")
                .is_empty(),
            "not yet"
        );
        assert_eq!(
            step.process(vec![rec("{}")], &mut ctx).expect("p").len(),
            3,
            "full"
        );
        assert!(step
            .process(vec![rec("{}")], &mut ctx)
            .expect("p")
            .is_empty());
        let later = Instant::now() + Duration::from_secs(3601);
        assert_eq!(
            step.on_tick(later, &mut ctx).expect("tick").len(),
            1,
            "linger elapsed"
        );
        assert!(step
            .process(vec![rec("{}")], &mut ctx)
            .expect("p")
            .is_empty());
        assert_eq!(
            step.on_watermark(10, &mut ctx).expect("wm").len(),
            1,
            "watermark flushes"
        );
        assert!(!step.holds_records());
    }

    #[test]
    fn a_cancelled_run_does_not_wait_out_the_backoff() {
        let mut rt = NativeRuntime::default();
        rt.register("flaky", Flaky(AtomicU32::new(0)));
        let cancel = CancelSignal::new();
        let mut step = UdfStep::new(
            "steps[0] udf f".into(),
            Arc::new(rt),
            "flaky".into(),
            FunctionKind::Map,
            RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_secs(60),
                max_backoff: Duration::from_secs(60),
            },
        )
        .with_cancel(cancel.clone());
        cancel.cancel();
        let started = Instant::now();
        let mut ctx = Context::default();
        let out = step
            .process(vec![rec(r#"{"always_fail":true}"#)], &mut ctx)
            .expect("process");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(out.is_empty());
        assert!(
            ctx.dead.is_empty(),
            "an abandoned retry is not a dead letter"
        );
    }

    #[test]
    fn permanent_errors_go_to_dlq_and_the_rest_pass() {
        let rt = NativeRuntime::with_builtins();
        let mut step = UdfStep::new(
            "steps[1] udf geo".into(),
            Arc::new(rt),
            "geohash".into(),
            FunctionKind::Map,
            fast_retry(),
        );
        let mut ctx = Context::default();
        let out = step
            .process(
                vec![rec(r#"{"lat":1,"lon":2}"#), rec(r#"{"lat":1}"#)],
                &mut ctx,
            )
            .expect("process");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].time, 5, "outputs keep the input's event time");
        assert_eq!(ctx.dead.len(), 1);
        assert_eq!(ctx.dead[0].attempts, 1);
    }
}

/// The UDF step and its circuit breaker together: an outage of the function.
#[cfg(test)]
mod breaker_tests {
    use super::*;
    use crate::config::spec::BreakerSpec;
    use crate::record::Origin;
    use crate::udf::native::NativeRuntime;
    use crate::udf::FunctionError;
    use headwater_sdk::Function;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// Fails every record transiently while `down` is set; counts its calls.
    struct Outage {
        down: Arc<AtomicBool>,
        calls: Arc<AtomicU32>,
    }

    impl Function for Outage {
        fn kind(&self) -> FunctionKind {
            FunctionKind::Map
        }
        fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                Err(FunctionError::transient("connection refused"))
            } else {
                Ok(vec![record])
            }
        }
    }

    fn step(breaker: BreakerSpec) -> (UdfStep, Arc<AtomicBool>, Arc<AtomicU32>, Arc<Breaker>) {
        let down = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicU32::new(0));
        let mut rt = NativeRuntime::default();
        rt.register(
            "call_service",
            Outage {
                down: down.clone(),
                calls: calls.clone(),
            },
        );
        let b = Arc::new(Breaker::new("svc", breaker));
        let retry = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        let step = UdfStep::new(
            "steps[0] udf svc".into(),
            Arc::new(rt),
            "call_service".into(),
            FunctionKind::Map,
            retry,
        )
        .with_breaker(Some(b.clone()));
        (step, down, calls, b)
    }

    fn records(n: i64) -> Batch {
        (0..n)
            .map(|i| Record::new(Value::Int(i), i, Origin::default()))
            .collect()
    }

    fn spec(enabled: bool) -> BreakerSpec {
        BreakerSpec {
            enabled,
            failure_percent: 50,
            min_records: 10,
            cool_down: Duration::from_millis(20),
            max_pause: Duration::from_secs(60),
        }
    }

    #[test]
    fn an_outage_holds_the_batch_until_the_function_recovers_and_loses_nothing() {
        let (mut step, down, calls, breaker) = step(spec(true));
        // The service comes back once the records were held through a few pauses.
        let watcher = {
            let (calls, down) = (calls.clone(), down.clone());
            std::thread::spawn(move || {
                while calls.load(Ordering::SeqCst) < 50 * 6 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                down.store(false, Ordering::SeqCst);
            })
        };
        let mut ctx = Context::default();
        let out = super::tests::through(&mut step, records(50), &mut ctx);
        watcher.join().expect("watcher");
        assert!(
            ctx.dead.is_empty(),
            "nothing dead-lettered: {:?}",
            ctx.dead.len()
        );
        let got: Vec<Value> = out.into_iter().map(|r| r.into_value()).collect();
        assert_eq!(
            got,
            (0..50).map(Value::Int).collect::<Vec<_>>(),
            "all, in order"
        );
        let status = breaker.status();
        assert_eq!(status.openings.load(Ordering::SeqCst), 1);
        assert!(
            status.held.load(Ordering::SeqCst) >= 100,
            "held through at least two pauses"
        );
        assert!(
            !status.open.load(Ordering::SeqCst),
            "closed once the records went through"
        );
    }

    #[test]
    fn without_the_breaker_an_outage_dead_letters_every_record() {
        let (mut step, _down, calls, breaker) = step(spec(false));
        let mut ctx = Context::default();
        let out = super::tests::through(&mut step, records(50), &mut ctx);
        assert!(out.is_empty());
        assert_eq!(ctx.dead.len(), 50);
        assert_eq!(ctx.dead[0].attempts, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 100, "two attempts each");
        assert_eq!(breaker.status().openings.load(Ordering::SeqCst), 0);
    }
}
