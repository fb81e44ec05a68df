//! Unit tests of the window step.

use super::state_access::{parse_window_key, window_key};
use super::*;
use crate::config::spec::{AggregateFn, AggregateSpec};
use crate::record::{Origin, Record};
use crate::value::{split_path, Value};

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = StateStore::open_fresh(&dir.path().join("state")).expect("open");
    (dir, s)
}

fn op(store: StateStore, assigner: WindowAssigner, lateness: i64, late: LateTarget) -> WindowOp {
    WindowOp::new(
        WindowConfig {
            step: "steps[1] window".into(),
            op_id: 1,
            assigner,
            allowed_lateness_ms: lateness,
            aggregates: vec![
                AggregateSpec {
                    func: AggregateFn::Count,
                    field: None,
                    name: "n".into(),
                    udf: None,
                },
                AggregateSpec {
                    func: AggregateFn::Sum,
                    field: Some(split_path("v")),
                    name: "total".into(),
                    udf: None,
                },
                AggregateSpec {
                    func: AggregateFn::CountDistinct,
                    field: Some(split_path("u")),
                    name: "users".into(),
                    udf: None,
                },
            ],
            key_names: vec!["k".into()],
            late,
            max_parallelism: 128,
            udfs: vec![None, None, None],
        },
        store,
    )
}

fn rec(key: &str, t: i64, v: i64, u: &str) -> Record {
    let value =
        Value::from_json(format!(r#"{{"k":"{key}","v":{v},"u":"{u}"}}"#).as_bytes()).expect("json");
    Record::new(value, t, Origin::default()).with_key(Some(Value::from(key)))
}

fn lines(batch: &Batch) -> Vec<String> {
    let mut v: Vec<String> = batch.iter().map(|r| r.value().to_json_string()).collect();
    v.sort();
    v
}

#[test]
fn tumbling_fires_at_watermark_and_cleans_up() {
    let (_d, s) = store();
    let mut w = op(
        s.clone(),
        WindowAssigner::Tumbling { size: 10 },
        0,
        LateTarget::Drop,
    );
    let mut ctx = Context::default();
    let out = w
        .process(
            vec![
                rec("a", 1, 2, "x"),
                rec("a", 5, 3, "x"),
                rec("a", 12, 1, "y"),
                rec("b", 3, 1, "z"),
            ],
            &mut ctx,
        )
        .expect("process");
    assert!(out.is_empty());
    assert!(w.on_watermark(8, &mut ctx).expect("wm").is_empty());
    let fired = w.on_watermark(9, &mut ctx).expect("wm");
    assert_eq!(
        lines(&fired),
        [
            r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":5,"users":1}"#,
            r#"{"k":"b","window_start":0,"window_end":10,"n":1,"total":1,"users":1}"#
        ]
    );
    assert_eq!(fired[0].time, 9);
    // a record for the fired window is late (no allowed lateness)
    let out = w
        .process(vec![rec("a", 2, 1, "q")], &mut ctx)
        .expect("process");
    assert!(out.is_empty());
    assert_eq!(ctx.late, 1);
    assert_eq!(w.open_windows(), 1);
    let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
    assert_eq!(
        lines(&fired),
        [r#"{"k":"a","window_start":10,"window_end":20,"n":1,"total":1,"users":1}"#]
    );
    assert_eq!(w.open_windows(), 0);
    assert!(
        s.scan_prefix(&[]).expect("scan").is_empty(),
        "all state cleaned up"
    );
}

#[test]
fn allowed_lateness_emits_updates_then_sends_late_records_to_policy() {
    let (_d, s) = store();
    let mut w = op(
        s,
        WindowAssigner::Tumbling { size: 10 },
        5,
        LateTarget::Sink(3),
    );
    let mut ctx = Context::default();
    w.process(vec![rec("a", 1, 1, "x")], &mut ctx)
        .expect("process");
    assert_eq!(w.on_watermark(10, &mut ctx).expect("wm").len(), 1);
    let upd = w
        .process(vec![rec("a", 2, 10, "y")], &mut ctx)
        .expect("process");
    assert_eq!(
        lines(&upd),
        [r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":11,"users":2}"#]
    );
    w.on_watermark(14, &mut ctx).expect("wm");
    let out = w
        .process(vec![rec("a", 3, 1, "z")], &mut ctx)
        .expect("process");
    assert!(out.is_empty());
    assert_eq!(ctx.late, 1);
    assert_eq!(ctx.side.len(), 1);
    assert_eq!(ctx.side[0].0, 3);
}

#[test]
fn late_records_go_to_dlq_when_asked() {
    let (_d, s) = store();
    let mut w = op(s, WindowAssigner::Tumbling { size: 10 }, 0, LateTarget::Dlq);
    let mut ctx = Context::default();
    w.on_watermark(100, &mut ctx).expect("wm");
    w.process(vec![rec("a", 3, 1, "z")], &mut ctx)
        .expect("process");
    assert_eq!(ctx.dead.len(), 1);
    assert!(
        ctx.dead[0].error.starts_with("late record"),
        "{}",
        ctx.dead[0].error
    );
}

#[test]
fn sliding_windows_count_each_record_in_every_window() {
    let (_d, s) = store();
    let mut w = op(
        s,
        WindowAssigner::Sliding { size: 10, slide: 5 },
        0,
        LateTarget::Drop,
    );
    let mut ctx = Context::default();
    w.process(vec![rec("a", 7, 1, "x"), rec("a", 7, 1, "x")], &mut ctx)
        .expect("process");
    let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
    assert_eq!(
        lines(&fired),
        [
            r#"{"k":"a","window_start":0,"window_end":10,"n":2,"total":2,"users":1}"#,
            r#"{"k":"a","window_start":5,"window_end":15,"n":2,"total":2,"users":1}"#
        ]
    );
}

#[test]
fn sessions_merge_and_union_distinct_members() {
    let (_d, s) = store();
    let mut w = op(
        s.clone(),
        WindowAssigner::Session { gap: 10 },
        0,
        LateTarget::Drop,
    );
    let mut ctx = Context::default();
    w.process(vec![rec("a", 0, 1, "x"), rec("a", 30, 1, "y")], &mut ctx)
        .expect("process");
    assert_eq!(w.open_windows(), 2);
    // [15,25) touches neither; [22,32) bridges it with [30,40)
    w.process(vec![rec("a", 15, 1, "x"), rec("a", 22, 1, "z")], &mut ctx)
        .expect("process");
    assert_eq!(w.open_windows(), 2);
    w.process(vec![rec("a", 8, 1, "x")], &mut ctx)
        .expect("process");
    assert_eq!(w.open_windows(), 1);
    let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
    assert_eq!(
        lines(&fired),
        [r#"{"k":"a","window_start":0,"window_end":40,"n":5,"total":5,"users":3}"#]
    );
    assert!(
        s.scan_prefix(&[]).expect("scan").is_empty(),
        "all state cleaned up"
    );
}

#[test]
fn extending_a_session_keeps_its_distinct_count() {
    // Regression: folding the stored accumulator into a fresh one used to reset
    // count_distinct to 0 when a session was extended without a merge.
    let (_d, s) = store();
    let mut w = op(s, WindowAssigner::Session { gap: 7 }, 0, LateTarget::Drop);
    let mut ctx = Context::default();
    w.process(
        vec![
            rec("a", -24, 0, "u0"),
            rec("a", -21, 0, "u0"),
            rec("a", -18, 1, "u1"),
        ],
        &mut ctx,
    )
    .expect("process");
    let fired = w.on_watermark(i64::MAX, &mut ctx).expect("wm");
    assert_eq!(
        lines(&fired),
        [r#"{"k":"a","window_start":-24,"window_end":-11,"n":3,"total":1,"users":2}"#]
    );
}

#[test]
fn window_keys_round_trip_and_sort_by_time() {
    let key = br#""k""#;
    let a = window_key(3, 1, key, &TimeWindow { start: -5, end: 5 });
    let b = window_key(3, 1, key, &TimeWindow { start: 2, end: 12 });
    assert!(a < b);
    assert_eq!(
        parse_window_key(&a),
        Some((Value::from("k"), TimeWindow { start: -5, end: 5 }))
    );
}
