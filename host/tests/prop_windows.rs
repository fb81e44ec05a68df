//! Property tests: on random out-of-order streams with late records, the window operator
//! (RocksDB state, timers, batch caches, session merges) produces exactly what a brute-force
//! oracle produces, and its late-data output holds exactly the records later than the allowed
//! lateness.
//!
//! The oracle below is written from the semantics, not from the operator: it keeps every
//! window's raw records in a plain vector and recomputes aggregates from scratch.
//!
//! Semantics: watermark W means no record with time <= W is expected. A window [s, e) fires
//! once when W first reaches e - 1, and is expired (gone) once e - 1 + L <= W. A record joins
//! each of its windows that is not expired; a window it joins that already fired emits an
//! updated result at once. A record with no unexpired window is late. Session windows: the
//! record's [t, t + gap) merges with every live session of its key that touches it; if the
//! merged window is expired the record is late and nothing changes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use headwater::config::spec::{AggregateFn, AggregateSpec};
use headwater::ops::window::{LateTarget, WindowConfig, WindowOp};
use headwater::ops::{Context, Operator};
use headwater::record::{Origin, Record};
use headwater::state::StateStore;
use headwater::time::WindowAssigner;
use headwater::value::{split_path, Value};

#[derive(Clone, Debug)]
struct Rec {
    key: String,
    t: i64,
    v: i64,
    u: String,
}

#[derive(Clone, Debug)]
enum Event {
    Batch(Vec<Rec>),
    Watermark(i64),
}

impl Rec {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "k": self.key, "t": self.t, "v": self.v, "u": self.u })
    }
}

// ---------------------------------------------------------------- the oracle

struct OracleWindow {
    key: String,
    start: i64,
    end: i64,
    recs: Vec<Rec>,
    /// Fires when the watermark reaches end - 1 (false once fired, or if born already fired).
    pending: bool,
}

struct Oracle {
    assigner: WindowAssigner,
    lateness: i64,
    watermark: i64,
    windows: Vec<OracleWindow>,
    outputs: Vec<String>,
    late: Vec<String>,
}

fn result(w: &OracleWindow) -> String {
    let n = w.recs.len() as i64;
    let total: i64 = w.recs.iter().map(|r| r.v).sum();
    let lo = w.recs.iter().map(|r| r.v).min();
    let hi = w.recs.iter().map(|r| r.v).max();
    let mut users: Vec<&str> = w.recs.iter().map(|r| r.u.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    serde_json::json!({
        "k": w.key, "window_start": w.start, "window_end": w.end,
        "n": n, "total": total, "lo": lo, "hi": hi,
        "mean": total as f64 / n as f64, "users": users.len(),
    })
    .to_string()
}

impl Oracle {
    fn new(assigner: WindowAssigner, lateness: i64) -> Self {
        Oracle {
            assigner,
            lateness,
            watermark: i64::MIN,
            windows: Vec::new(),
            outputs: Vec::new(),
            late: Vec::new(),
        }
    }

    fn expired(&self, end: i64) -> bool {
        (end - 1).saturating_add(self.lateness) <= self.watermark
    }

    /// Every window [s, s + size) with s a multiple of `slide` that contains t.
    fn fixed_windows(size: i64, slide: i64, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut s = t.div_euclid(slide) * slide;
        while s + size > t {
            out.push((s, s + size));
            s -= slide;
        }
        out
    }

    fn process(&mut self, r: &Rec) {
        match self.assigner {
            WindowAssigner::Session { gap } => self.process_session(r, gap),
            WindowAssigner::Tumbling { size } => self.process_fixed(r, size, size),
            WindowAssigner::Sliding { size, slide } => self.process_fixed(r, size, slide),
        }
    }

    fn process_fixed(&mut self, r: &Rec, size: i64, slide: i64) {
        let mut accepted = false;
        for (start, end) in Self::fixed_windows(size, slide, r.t) {
            if self.expired(end) {
                continue;
            }
            accepted = true;
            let wm = self.watermark;
            let idx = match self
                .windows
                .iter()
                .position(|w| w.key == r.key && w.start == start && w.end == end)
            {
                Some(i) => i,
                None => {
                    self.windows.push(OracleWindow {
                        key: r.key.clone(),
                        start,
                        end,
                        recs: Vec::new(),
                        pending: wm < end - 1,
                    });
                    self.windows.len() - 1
                }
            };
            self.windows[idx].recs.push(r.clone());
            if wm >= end - 1 {
                self.outputs.push(result(&self.windows[idx]));
            }
        }
        if !accepted {
            self.late.push(r.json().to_string());
        }
    }

    fn process_session(&mut self, r: &Rec, gap: i64) {
        let (mut start, mut end) = (r.t, r.t + gap);
        let touching: Vec<usize> = (0..self.windows.len())
            .filter(|&i| {
                let w = &self.windows[i];
                w.key == r.key && w.start <= r.t + gap && r.t <= w.end
            })
            .collect();
        for &i in &touching {
            start = start.min(self.windows[i].start);
            end = end.max(self.windows[i].end);
        }
        if self.expired(end) {
            self.late.push(r.json().to_string());
            return;
        }
        let mut recs = vec![r.clone()];
        for &i in touching.iter().rev() {
            recs.extend(self.windows.remove(i).recs);
        }
        let w = OracleWindow {
            key: r.key.clone(),
            start,
            end,
            recs,
            pending: self.watermark < end - 1,
        };
        if self.watermark >= end - 1 {
            self.outputs.push(result(&w));
        }
        self.windows.push(w);
    }

    fn advance(&mut self, wm: i64) {
        if wm <= self.watermark {
            return;
        }
        for w in &mut self.windows {
            if w.pending && w.end - 1 <= wm {
                w.pending = false;
                self.outputs.push(result(w));
            }
        }
        self.watermark = wm;
        let lateness = self.lateness;
        self.windows
            .retain(|w| (w.end - 1).saturating_add(lateness) > wm);
    }
}

// ---------------------------------------------------------------- the operator under test

fn operator(store: StateStore, assigner: WindowAssigner, lateness: i64) -> WindowOp {
    let agg = |func, field: Option<&str>, name: &str| AggregateSpec {
        func,
        field: field.map(split_path),
        name: name.into(),
        udf: None,
    };
    WindowOp::new(
        WindowConfig {
            step: "steps[1] window".into(),
            op_id: 1,
            assigner,
            allowed_lateness_ms: lateness,
            aggregates: vec![
                agg(AggregateFn::Count, None, "n"),
                agg(AggregateFn::Sum, Some("v"), "total"),
                agg(AggregateFn::Min, Some("v"), "lo"),
                agg(AggregateFn::Max, Some("v"), "hi"),
                agg(AggregateFn::Avg, Some("v"), "mean"),
                agg(AggregateFn::CountDistinct, Some("u"), "users"),
            ],
            key_names: vec!["k".into()],
            late: LateTarget::Sink(0),
            max_parallelism: 128,
            udfs: vec![None; 6],
        },
        store,
    )
}

fn to_string(v: Value) -> String {
    serde_json::Value::from(v).to_string()
}

struct Outcome {
    outputs: Vec<String>,
    late: Vec<String>,
}

fn run_operator(events: &[Event], assigner: WindowAssigner, lateness: i64) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open_fresh(&dir.path().join("state")).expect("store");
    let mut op = operator(store.clone(), assigner, lateness);
    let mut ctx = Context::default();
    let mut outputs = Vec::new();
    let check_time = |rec: &Record| {
        let end = rec
            .value()
            .as_object()
            .and_then(|o| o.get("window_end"))
            .and_then(Value::as_f64)
            .expect("window_end");
        assert_eq!(
            rec.time,
            end as i64 - 1,
            "a result's event time is its window's end - 1"
        );
    };
    for e in events
        .iter()
        .chain(std::iter::once(&Event::Watermark(i64::MAX)))
    {
        let out = match e {
            Event::Batch(recs) => {
                let batch = recs
                    .iter()
                    .map(|r| {
                        Record::new(Value::from(r.json()), r.t, Origin::default())
                            .with_key(Some(Value::from(r.key.as_str())))
                    })
                    .collect();
                op.process(batch, &mut ctx).expect("process")
            }
            Event::Watermark(w) => op.on_watermark(*w, &mut ctx).expect("watermark"),
        };
        for rec in out {
            check_time(&rec);
            outputs.push(to_string(rec.into_value()));
        }
    }
    let late: Vec<String> = ctx
        .side
        .drain(..)
        .map(|(sink, v)| {
            assert_eq!(sink, 0);
            to_string(v)
        })
        .collect();
    assert_eq!(
        ctx.late as usize,
        late.len(),
        "every late record is counted"
    );
    assert!(ctx.dead.is_empty());
    assert!(
        store.scan_prefix(&[]).expect("scan").is_empty(),
        "all window state is deleted after the final watermark"
    );
    Outcome { outputs, late }
}

fn run_oracle(events: &[Event], assigner: WindowAssigner, lateness: i64) -> Outcome {
    let mut o = Oracle::new(assigner, lateness);
    for e in events {
        match e {
            Event::Batch(recs) => recs.iter().for_each(|r| o.process(r)),
            Event::Watermark(w) => o.advance(*w),
        }
    }
    o.advance(i64::MAX);
    Outcome {
        outputs: o.outputs,
        late: o.late,
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------- random streams

/// Records arrive roughly in time order with bounded disorder (up to ±`jitter`); after random
/// batches the source emits a bounded-out-of-orderness watermark, with a bound smaller than
/// the disorder so that some records really are late.
fn stream(jitter: i64) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (
            0..3usize,
            0..=2 * jitter,
            -5..20i64,
            0..4usize,
            any::<bool>(),
        ),
        1..120,
    )
    .prop_map(move |raw| {
        let bound = jitter / 3;
        let mut events = Vec::new();
        let mut batch = Vec::new();
        let mut max_seen = i64::MIN;
        for (i, (key, j, v, u, cut)) in raw.into_iter().enumerate() {
            let t = i as i64 * 3 + j - jitter;
            max_seen = max_seen.max(t);
            batch.push(Rec {
                key: ["a", "b", "c"][key].to_string(),
                t,
                v,
                u: format!("u{u}"),
            });
            if cut {
                events.push(Event::Batch(std::mem::take(&mut batch)));
                events.push(Event::Watermark(max_seen - bound - 1));
            }
        }
        if !batch.is_empty() {
            events.push(Event::Batch(batch));
        }
        events
    })
}

fn check(events: &[Event], assigner: WindowAssigner, lateness: i64) -> Result<(), TestCaseError> {
    let got = run_operator(events, assigner, lateness);
    let want = run_oracle(events, assigner, lateness);
    prop_assert_eq!(
        sorted(got.outputs),
        sorted(want.outputs),
        "window results differ"
    );
    prop_assert_eq!(sorted(got.late), sorted(want.late), "late records differ");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn tumbling_windows_match_the_oracle(events in stream(30), lateness in prop::sample::select(vec![0i64, 12])) {
        check(&events, WindowAssigner::Tumbling { size: 20 }, lateness)?;
    }

    #[test]
    fn sliding_windows_match_the_oracle(events in stream(30), lateness in prop::sample::select(vec![0i64, 9])) {
        check(&events, WindowAssigner::Sliding { size: 24, slide: 8 }, lateness)?;
    }

    #[test]
    fn session_windows_with_merges_match_the_oracle(events in stream(30), lateness in prop::sample::select(vec![0i64, 10])) {
        check(&events, WindowAssigner::Session { gap: 7 }, lateness)?;
    }
}

/// The generator really produces the cases the properties are about.
#[test]
fn streams_contain_late_records_updates_and_session_merges() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut late, mut merges, mut updates) = (0, 0, 0);
    for _ in 0..50 {
        let events = stream(30).new_tree(&mut runner).expect("tree").current();
        late += run_oracle(&events, WindowAssigner::Tumbling { size: 20 }, 0)
            .late
            .len();
        let fixed = run_oracle(&events, WindowAssigner::Tumbling { size: 20 }, 12).outputs;
        let mut per_window: BTreeMap<String, usize> = BTreeMap::new();
        for o in &fixed {
            let v: serde_json::Value = serde_json::from_str(o).expect("json");
            *per_window
                .entry(format!("{}{}", v["k"], v["window_start"]))
                .or_default() += 1;
        }
        updates += per_window.values().filter(|n| **n > 1).count();
        let sessions = run_oracle(&events, WindowAssigner::Session { gap: 7 }, 0).outputs;
        merges += sessions
            .iter()
            .filter(|o| {
                serde_json::from_str::<serde_json::Value>(o).expect("json")["window_end"]
                    .as_i64()
                    .unwrap_or(0)
                    - serde_json::from_str::<serde_json::Value>(o).expect("json")["window_start"]
                        .as_i64()
                        .unwrap_or(0)
                    > 7
            })
            .count();
    }
    assert!(late > 10, "late records: {late}");
    assert!(updates > 10, "updated results within lateness: {updates}");
    assert!(merges > 10, "merged sessions: {merges}");
}
