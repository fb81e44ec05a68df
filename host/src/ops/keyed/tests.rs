//! Keyed process step tests.

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
    let value = Value::from_json(format!(r#"{{"k":"{key}","v":{v}}}"#).as_bytes()).expect("json");
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
        remedy: None,
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
            remedy: None,
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

/// Fails the first attempt of every record of key `hot` transiently; logs each call as
/// `key:v` (the record's value).
struct HotKey {
    log: Mutex<Vec<String>>,
    failed: Mutex<std::collections::HashSet<i64>>,
}

impl UdfRuntime for HotKey {
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
                let key = i.key.as_str().unwrap_or("?").to_string();
                let v = i
                    .value
                    .as_ref()
                    .and_then(|v| v.as_object()?.get("v")?.as_f64())
                    .unwrap_or(0.0) as i64;
                self.log
                    .lock()
                    .map(|mut l| l.push(format!("{key}:{v}")))
                    .ok();
                let first = self.failed.lock().map(|mut f| f.insert(v)).unwrap_or(false);
                if key == "hot" && first {
                    return Err(FunctionError::transient("hot shard busy"));
                }
                Ok(KeyedResult {
                    outputs: i.value.into_iter().collect(),
                    state: StateUpdate::Keep,
                    timers: vec![],
                })
            })
            .collect())
    }
}

/// A key whose records each fail once does not hold the other keys up: while its first
/// record waits for its retry, every other key's records are called (counted in the call
/// log, not timed), and its own records stay in order.
#[test]
fn a_key_waiting_for_a_retry_does_not_stall_the_other_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open_fresh(dir.path()).expect("store");
    let runtime = Arc::new(HotKey {
        log: Mutex::new(Vec::new()),
        failed: Mutex::new(std::collections::HashSet::new()),
    });
    let mut op = KeyedProcess::new(sum_config(runtime.clone()), store);
    let mut ctx = Context::default();
    let mut batch = Vec::new();
    for i in 0..4 {
        batch.push(rec("hot", i, 100 + i));
        for k in ["a", "b", "c"] {
            batch.push(rec(k, i, 10 * i + k.len() as i64));
        }
    }
    let out = op.process(batch, &mut ctx).expect("process");
    assert!(ctx.dead.is_empty());
    let log = runtime.log.lock().expect("log").clone();
    let retry_of_first = log
        .iter()
        .enumerate()
        .filter(|(_, c)| *c == "hot:100")
        .nth(1)
        .map(|(i, _)| i)
        .expect("hot:100 retried");
    let others_before = log[..retry_of_first]
        .iter()
        .filter(|c| !c.starts_with("hot"))
        .count();
    assert_eq!(
        others_before, 12,
        "every other key's record went before the retry: {log:?}"
    );
    let hot_calls: Vec<&String> = log.iter().filter(|c| c.starts_with("hot")).collect();
    assert_eq!(
        hot_calls,
        ["hot:100", "hot:100", "hot:101", "hot:101", "hot:102", "hot:102", "hot:103", "hot:103"],
        "the hot key's records in order, each retried before the next"
    );
    assert_eq!(out.len(), 16, "all came through");
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
            remedy: None,
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

/// A remediation for `Summer`: -1 becomes 10, -2 is dropped, -4 becomes -5 (which fails
/// again), anything else is given up on.
struct Fixer;

impl UdfRuntime for Fixer {
    fn name(&self) -> &str {
        "fixer"
    }
    fn functions(&self) -> Vec<FunctionInfo> {
        Vec::new()
    }
    fn invoke(&self, _: &str, inputs: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Ok(inputs
            .into_iter()
            .map(|req| {
                let record = req.as_object().and_then(|o| o.get("record")).cloned();
                let v = record
                    .as_ref()
                    .and_then(|r| r.as_object()?.get("v")?.as_f64())
                    .unwrap_or(0.0) as i64;
                let key = record
                    .as_ref()
                    .and_then(|r| r.as_object()?.get("k")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                let fixed = |v: i64| {
                    Value::from_json(format!(r#"{{"k":"{key}","v":{v}}}"#).as_bytes())
                        .map_err(|e| FunctionError::permanent(e.to_string()))
                };
                match v {
                    -1 => Ok(vec![fixed(10)?]),
                    -2 => Ok(vec![]),
                    -4 => Ok(vec![fixed(-5)?]),
                    _ => Err(FunctionError::permanent("cannot fix")),
                }
            })
            .collect())
    }
}

#[test]
fn a_remediation_repairs_a_keyed_record_in_its_place_drops_or_gives_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open_fresh(dir.path()).expect("store");
    let mut cfg = sum_config(Arc::new(Summer {
        calls: Mutex::new(Vec::new()),
    }));
    cfg.remedy = Some(Remedy {
        udf: "fix".into(),
        runtime: Arc::new(Fixer),
        function: "fix".into(),
        kind: FunctionKind::FlatMap,
    });
    let mut op = KeyedProcess::new(cfg, store);
    let mut ctx = Context::default();
    let batch = vec![
        rec("a", 1, 1),
        rec("a", 2, -1), // repaired to 10, before a's next record
        rec("a", 3, 100),
        rec("b", 1, -2), // dropped
        rec("b", 2, 7),
        rec("c", 1, -3), // given up on
        rec("c", 2, -4), // repaired to -5, which fails again
    ];
    op.process(batch, &mut ctx).expect("process");
    assert_eq!((ctx.remediated, ctx.remediation_dropped), (2, 1));
    let dead: Vec<(String, Option<&str>, bool)> = ctx
        .dead
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.raw).into_owned(),
                d.tier,
                d.detail
                    .as_deref()
                    .is_some_and(|x| x.contains("repaired this record")),
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            (
                r#"{"k":"c","v":-3}"#.to_string(),
                Some("remediation"),
                false
            ),
            (r#"{"k":"c","v":-5}"#.to_string(), Some("remediation"), true),
        ]
    );
    assert!(ctx
        .dead
        .iter()
        .all(|d| d.udf_version.as_deref() == Some("test")));
    // Each key's total at its first timer: a = 1 + 10 + 100 (the repair in its place), b = 7;
    // a's later timers (from the repaired record and the next) find the state cleared.
    let fired = op.on_watermark(i64::MAX, &mut ctx).expect("fire");
    let texts: Vec<String> = fired.iter().map(|r| r.value().to_json_string()).collect();
    assert_eq!(
        texts,
        vec![
            r#"{"total":111,"at":11}"#,
            r#"{"total":7,"at":12}"#,
            r#"{"total":0,"at":12}"#,
            r#"{"total":0,"at":13}"#
        ]
    );
}
