//! A `udf` step with a remediation: repaired records take their place in the output, dropped
//! ones are counted, what the remediation gives up on (or what fails again) is dead-lettered
//! with the reason, and the remediation is never asked twice about a record.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::*;
use crate::ops::remedy::Remedy;
use crate::record::Origin;
use crate::udf::native::NativeRuntime;
use crate::udf::FunctionError;
use headwater_sdk::Function;

/// Fails records without `fixed` whose `n` is a multiple of 3 (`bad n`); passes the rest.
struct Picky;
impl Function for Picky {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        let o = record.as_object().cloned().unwrap_or_default();
        match o.get("n") {
            Some(Value::Int(n)) if n % 3 == 0 && o.get("fixed").is_none() => {
                Err(FunctionError::permanent(format!("bad n {n}")))
            }
            Some(Value::Int(n)) if *n == 99 => Err(FunctionError::permanent("never 99")),
            _ => Ok(vec![record]),
        }
    }
}

/// Gets `{record, error}`: repairs n % 2 == 0 (adds `fixed`; n 6 becomes 99, which fails
/// again), drops n % 9 == 3, gives up on the rest; counts its calls.
struct Fix(Arc<AtomicU32>);
impl Function for Fix {
    fn kind(&self) -> FunctionKind {
        FunctionKind::FlatMap
    }
    fn call(&self, req: Value) -> Result<Vec<Value>, FunctionError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let o = req.as_object().cloned().unwrap_or_default();
        let error = o
            .get("error")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            error.get("step"),
            Some(&Value::Str("steps[0] udf picky".into()))
        );
        assert!(error.get("fingerprint").is_some() && error.get("attempts").is_some());
        let record = o.get("record").cloned().unwrap_or_default();
        let n = match record.as_object().and_then(|r| r.get("n")) {
            Some(Value::Int(n)) => *n,
            _ => return Err(FunctionError::permanent("no n")),
        };
        if n % 2 == 0 {
            let mut fixed = record.as_object().cloned().unwrap_or_default();
            fixed.insert("fixed", Value::Bool(true));
            if n == 6 {
                fixed.insert("n", Value::Int(99));
            }
            Ok(vec![Value::Object(fixed)])
        } else if n % 9 == 3 {
            Ok(Vec::new())
        } else {
            Err(FunctionError::permanent(format!("cannot fix {n}")))
        }
    }
}

fn rec(n: i64) -> Record {
    let v = Value::from_json(format!("{{\"n\":{n}}}").as_bytes()).expect("json");
    Record::new(v, n, Origin::default())
}

#[test]
fn repaired_records_take_their_place_dropped_ones_are_counted_and_the_rest_dead_lettered() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut rt = NativeRuntime::default();
    rt.register("picky", Picky);
    rt.register("fix", Fix(calls.clone()));
    let rt: Arc<dyn UdfRuntime> = Arc::new(rt);
    let mut step = UdfStep::new(
        "steps[0] udf picky".into(),
        rt.clone(),
        "picky".into(),
        FunctionKind::Map,
        RetryPolicy::default(),
    )
    .with_remedy(Some(Remedy {
        udf: "fix".into(),
        runtime: rt,
        function: "fix".into(),
        kind: FunctionKind::FlatMap,
    }));
    let mut ctx = Context::default();
    // 0: repaired; 3: dropped; 6: repaired into 99, fails again; 9: given up; 12: repaired.
    let out = step
        .process((0..14).map(rec).collect(), &mut ctx)
        .expect("process");
    let seen: Vec<(i64, bool)> = out
        .iter()
        .map(|r| {
            let o = r.value().as_object().expect("object");
            let n = match o.get("n") {
                Some(Value::Int(n)) => *n,
                _ => -1,
            };
            (n, o.get("fixed").is_some())
        })
        .collect();
    let mut want: Vec<(i64, bool)> = (0..14)
        .filter(|n| ![3, 6, 9].contains(n))
        .map(|n| (n, n % 3 == 0))
        .collect();
    want.sort();
    assert_eq!(seen, want, "repaired records in their places");
    assert_eq!(out[0].time, 0, "a repaired record keeps its event time");
    assert_eq!((ctx.remediated, ctx.remediation_dropped), (3, 1));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "one question per failure, never twice"
    );
    for d in &ctx.dead {
        assert_eq!(d.tier, Some("remediation"), "{d:?}");
        assert_eq!(d.udf_version.as_deref(), Some("native"), "{d:?}");
        assert!(
            d.first_failed_at_ms.is_some_and(|t| t <= d.failed_at_ms),
            "{d:?}"
        );
    }
    let dead: Vec<(String, String)> = ctx
        .dead
        .iter()
        .map(|d| (d.error.clone(), d.detail.clone().unwrap_or_default()))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter().any(|(e, d)| e == "never 99"
            && d.contains("the remediation udf `fix` repaired this record")),
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|(e, d)| e == "bad n 9"
            && d.contains("the remediation udf `fix` gave up: cannot fix 9")),
        "{dead:?}"
    );
}
