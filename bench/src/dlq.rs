//! What transient failures cost the stream (`./dev bench dlq`): one UDF step calling a native
//! map that fails transiently, once, on a chosen share of records (a flaky remote call that
//! succeeds when retried), with the pipeline defaults (4 attempts, 20 ms doubling backoff with
//! jitter, the circuit breaker on), one task, batches of 512 records as a udf step gets them.
//! Prints records/s with 0 %, 1 % and 10 % of records failing once, and each as a ratio to
//! 0 % measured in the same run (medians of interleaved rounds); checks that every record came
//! out once and none was dead-lettered.
//!
//! A batch with a record waiting for its next attempt is parked: the step calls the batches
//! after it meanwhile (up to 64 behind it) and they leave behind it, in order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{ensure, Result};
use serde_json::json;

use headwater::config::spec::BreakerSpec;
use headwater::ops::breaker::Breaker;
use headwater::ops::retry::RetryPolicy;
use headwater::ops::udf::UdfStep;
use headwater::ops::{Context, Operator};
use headwater::record::{Origin, Record};
use headwater::udf::native::NativeRuntime;
use headwater::udf::{FunctionError, FunctionKind};
use headwater::value::Value;

const BATCH: usize = 512;
const ROUNDS: usize = 3;
const PERCENTS: [u64; 3] = [0, 1, 10];

/// Fails each chosen record once (transiently), then passes it through: `percent` % of
/// them spread out, or with `hot_key` the records of the hot key (every tenth).
struct FailsOnce {
    percent: u64,
    hot_key: bool,
    failed: Mutex<HashSet<i64>>,
}

impl headwater_sdk::Function for FailsOnce {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        let n = match &record {
            Value::Int(n) => *n,
            _ => 0,
        };
        // A fixed, spread-out choice of records (not every 100th in a row).
        let chosen = match self.hot_key {
            true => n % 10 == 0,
            false => (n as u64).wrapping_mul(2_654_435_761) % 100 < self.percent,
        };
        if chosen && self.failed.lock().map(|mut f| f.insert(n)).unwrap_or(false) {
            return Err(FunctionError::transient("service busy, try again"));
        }
        Ok(vec![record])
    }
}

/// Seconds to run `records` through a fresh step whose function fails `percent` % once
/// (with `hot_key`: the hot key's records, a tenth of them).
fn one_run(records: usize, percent: u64, hot_key: bool) -> Result<f64> {
    let mut rt = NativeRuntime::default();
    rt.register(
        "flaky",
        FailsOnce {
            percent,
            hot_key,
            failed: Mutex::new(HashSet::new()),
        },
    );
    let mut step = UdfStep::new(
        "steps[0] udf flaky".into(),
        Arc::new(rt),
        "flaky".into(),
        FunctionKind::Map,
        RetryPolicy::default(),
    )
    .with_breaker(Some(Arc::new(Breaker::new(
        "flaky",
        BreakerSpec::default(),
    ))));
    let batches: Vec<Vec<Record>> = (0..records)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| {
            c.iter()
                .map(|&i| Record::new(Value::Int(i as i64), i as i64, Origin::default()))
                .collect()
        })
        .collect();
    let mut ctx = Context::default();
    let mut out = 0usize;
    let started = Instant::now();
    for batch in batches {
        out += step.process(batch, &mut ctx)?.len();
    }
    // The end of the input, as a task gives it: batches still parked for a retry come out.
    out += step
        .on_watermark(headwater::record::WATERMARK_END, &mut ctx)?
        .len();
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        out == records && ctx.dead.is_empty(),
        "{percent}%: {out} of {records} records came out, {} dead-lettered",
        ctx.dead.len()
    );
    Ok(secs)
}

pub fn run(records: u64, emit: &dyn Fn(serde_json::Value)) -> Result<()> {
    let records = records as usize;
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); PERCENTS.len()];
    for _ in 0..ROUNDS {
        for (i, p) in PERCENTS.iter().enumerate() {
            secs[i].push(one_run(records, *p, false)?);
        }
    }
    let median = |xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let base = records as f64 / median(&secs[0]);
    for (i, p) in PERCENTS.iter().enumerate() {
        let rps = records as f64 / median(&secs[i]);
        emit(json!({
            "name": "dlq_transient_failures",
            "failing_percent": p,
            "records": records,
            "batch": BATCH,
            "records_per_sec": rps.round(),
            "ratio_to_no_failures": (rps / base * 1000.0).round() / 1000.0,
            "rounds": ROUNDS,
        }));
    }
    // One failing hot key, through a keyed process step and through this udf step.
    let map_run = |records: usize, hot: u64| one_run(records, 0, hot > 0);
    crate::dlq_hot_key::run(records as u64, &map_run, emit)
}
