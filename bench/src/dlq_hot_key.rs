//! One failing hot key (`./dev bench dlq`, after the transient-failure shares): a tenth of
//! the records belong to one key, and each of them fails transiently once, then succeeds.
//! Measured through a keyed process step (RocksDB state: a count per key), where a key's
//! calls are strictly sequential, and through a udf map step, against the same step with no
//! failures, in the same run (medians of interleaved rounds). Checks that every record came
//! through once and none was dead-lettered.
//!
//! A keyed step queues a batch's calls by key: while the hot key's record waits for its
//! retry, the other keys' records of the batch are called; the batch ends when the hot key's
//! records are done.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{ensure, Result};
use serde_json::json;

use headwater::ops::keyed::{KeyedProcess, KeyedProcessConfig};
use headwater::ops::retry::RetryPolicy;
use headwater::ops::{Context, Operator};
use headwater::record::{Origin, Record, WATERMARK_END};
use headwater::state::StateStore;
use headwater::udf::{
    FunctionError, FunctionInfo, FunctionKind, KeyedInput, KeyedOutcome, KeyedResult,
    RecordOutcome, RuntimeError, StateUpdate, UdfRuntime,
};
use headwater::value::Value;

const BATCH: usize = 512;
const ROUNDS: usize = 3;

/// The key of record `n`: every tenth record is the hot key 0.
fn key_of(n: i64) -> i64 {
    if n % 10 == 0 {
        0
    } else {
        1 + n % 997
    }
}

/// Counts records per key in the key's state; the hot key's records fail once first.
struct Counter {
    hot_fails: bool,
    failed: Mutex<HashSet<i64>>,
}

impl UdfRuntime for Counter {
    fn name(&self) -> &str {
        "bench"
    }
    fn functions(&self) -> Vec<FunctionInfo> {
        vec![FunctionInfo {
            name: "count".into(),
            kind: FunctionKind::KeyedProcess,
        }]
    }
    fn invoke(&self, _: &str, _: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Ok(Vec::new())
    }
    fn invoke_keyed(
        &self,
        _: &str,
        inputs: Vec<KeyedInput>,
    ) -> Result<Vec<KeyedOutcome>, RuntimeError> {
        Ok(inputs
            .into_iter()
            .map(|i| {
                let n = match &i.value {
                    Some(Value::Int(n)) => *n,
                    _ => 0,
                };
                if self.hot_fails
                    && key_of(n) == 0
                    && self.failed.lock().map(|mut f| f.insert(n)).unwrap_or(false)
                {
                    return Err(FunctionError::transient("hot shard busy"));
                }
                let count: u64 = i
                    .state
                    .as_deref()
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
                    .unwrap_or(0);
                Ok(KeyedResult {
                    outputs: i.value.into_iter().collect(),
                    state: StateUpdate::Set((count + 1).to_string().into_bytes()),
                    timers: Vec::new(),
                })
            })
            .collect())
    }
}

fn batches(records: usize) -> Vec<Vec<Record>> {
    (0..records as i64)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| {
            c.iter()
                .map(|&n| {
                    Record::new(Value::Int(n), n, Origin::default())
                        .with_key(Some(Value::Int(key_of(n))))
                })
                .collect()
        })
        .collect()
}

/// Seconds to run `records` through a fresh keyed step.
fn keyed_run(records: usize, hot_fails: bool) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("headwater-bench-hot-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::open_fresh(&dir)?;
    let mut op = KeyedProcess::new(
        KeyedProcessConfig {
            step: "steps[1] udf count".into(),
            op_id: 1,
            runtime: Arc::new(Counter {
                hot_fails,
                failed: Mutex::new(HashSet::new()),
            }),
            function: "count".into(),
            max_parallelism: 128,
            retry: RetryPolicy::default(),
            breaker: None,
            remedy: None,
        },
        store,
    );
    let input = batches(records);
    let mut ctx = Context::default();
    let mut out = 0usize;
    let started = Instant::now();
    for batch in input {
        out += op.process(batch, &mut ctx)?.len();
    }
    out += op.on_watermark(WATERMARK_END, &mut ctx)?.len();
    let secs = started.elapsed().as_secs_f64();
    drop(op);
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        out == records && ctx.dead.is_empty(),
        "keyed, hot key failing {hot_fails}: {out} of {records} came out, {} dead",
        ctx.dead.len()
    );
    Ok(secs)
}

pub fn run(
    records: u64,
    map_run: &dyn Fn(usize, u64) -> Result<f64>,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    // The keyed step is slower per record (a RocksDB read and write each): fewer records.
    let keyed_records = (records as usize / 5).max(BATCH);
    let map_records = records as usize;
    let mut keyed = [Vec::new(), Vec::new()];
    let mut map = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        keyed[0].push(keyed_run(keyed_records, false)?);
        keyed[1].push(keyed_run(keyed_records, true)?);
        map[0].push(map_run(map_records, 0)?);
        map[1].push(map_run(map_records, 10)?);
    }
    let median = |xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    for (step, records, secs) in [
        ("keyed_process", keyed_records, &keyed),
        ("udf_map", map_records, &map),
    ] {
        let base = records as f64 / median(&secs[0]);
        let rps = records as f64 / median(&secs[1]);
        emit(json!({
            "name": "dlq_hot_key",
            "step": step,
            "hot_key_share_percent": 10,
            "records": records,
            "batch": BATCH,
            "records_per_sec_no_failures": base.round(),
            "records_per_sec": rps.round(),
            "ratio_to_no_failures": (rps / base * 1000.0).round() / 1000.0,
            "rounds": ROUNDS,
        }));
    }
    Ok(())
}
