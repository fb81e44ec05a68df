//! Property test of the failure tiers end to end: random mixes of good, malformed,
//! transiently failing (N times, then fine), permanently failing, repairable and droppable
//! records go through a real Python udf step with a remediation, after a `key_by`, at
//! parallelism 2, while the run is killed (SIGKILL) at random moments and resumed. Whatever
//! the mix and the kills:
//!
//! - every record that can succeed (good, transient, repaired) is in the output exactly once,
//!   and each key's records are there in the order they were read;
//! - every record that cannot (malformed, permanent) is in the DLQ exactly once, with the
//!   tier that gave up; a dropped one is nowhere;
//! - every run that reaches its end balances its record accounting (the test harness sets
//!   `HEADWATER_CHECK_ACCOUNTING`, which fails a run that does not).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

mod common;
use common::udf::{dead_letters, output_lines};

const UDFS: &str = r#"
import time
import headwater as hw

_attempts = {}

@hw.map
def check(r):
    time.sleep(0.004)  # long enough a run for the kills to land in
    mode = r["mode"]
    if mode.startswith("transient:"):
        n = _attempts.get(r["n"], 0) + 1
        _attempts[r["n"]] = n
        if n <= int(mode.split(":")[1]):
            raise hw.TransientError(f"service busy for {r['n']}")
    elif mode in ("permanent", "fixable", "droppable") and not r.get("fixed"):
        raise ValueError(f"bad {mode} record {r['n']}")
    return {"n": r["n"], "k": r["k"], "fixed": bool(r.get("fixed"))}

@hw.flat_map
def fix(req):
    r = req["record"]
    if r["mode"] == "fixable":
        yield {**r, "fixed": True}
    elif r["mode"] == "droppable":
        return
    else:
        raise ValueError(f"cannot fix {r['n']}")
"#;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Good,
    Malformed,
    Transient(u8),
    Permanent,
    Fixable,
    Droppable,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => Just(Kind::Good),
        1 => Just(Kind::Malformed),
        2 => (1u8..=2).prop_map(Kind::Transient),
        1 => Just(Kind::Permanent),
        1 => Just(Kind::Fixable),
        1 => Just(Kind::Droppable),
    ]
}

fn mode(k: Kind) -> String {
    match k {
        Kind::Good | Kind::Malformed => "good".into(),
        Kind::Transient(n) => format!("transient:{n}"),
        Kind::Permanent => "permanent".into(),
        Kind::Fixable => "fixable".into(),
        Kind::Droppable => "droppable".into(),
    }
}

const KEYS: usize = 5;

fn write_case(dir: &Path, kinds: &[Kind]) {
    std::fs::write(dir.join("my_udfs.py"), UDFS).expect("udfs");
    let mut input = String::new();
    for (n, k) in kinds.iter().enumerate() {
        let line = match k {
            Kind::Malformed => format!("{{\"ts\":{n},\"n\":{n},\"k\":"),
            k => format!(
                "{{\"ts\":{n},\"n\":{n},\"k\":\"k{}\",\"mode\":\"{}\"}}",
                n % KEYS,
                mode(*k)
            ),
        };
        input.push_str(&line);
        input.push('\n');
    }
    std::fs::write(dir.join("input.jsonl"), input).expect("input");
    std::fs::write(
        dir.join("pipeline.yaml"),
        "name: mix\nparallelism: 2\n\
sources:\n  in: { type: file, path: input.jsonl, event_time: { field: ts } }\n\
udfs:\n  check: { runtime: python, module: my_udfs, function: check }\n  fix: { runtime: python, module: my_udfs, function: fix, kind: flat_map }\n\
retry: { max_attempts: 4, initial_backoff: 2ms }\n\
steps:\n  - key_by: k\n  - { udf: check, remediate: fix }\n\
sinks:\n  out: { type: file, path: out.jsonl }\noutput: out\n\
checkpoint: { interval: 100ms }\ntuning: { batch_size: 16, progress_interval: 0s }\n",
    )
    .expect("pipeline");
}

/// Runs the case, killed after each of `kills` (ms), then to its end; returns how many
/// kills landed while the run was going.
fn run_with_kills(dir: &Path, kills: &[u64]) -> usize {
    let env = vec![(
        "HEADWATER_PYTHON".to_string(),
        common::python().display().to_string(),
    )];
    let mut landed = 0;
    for &ms in kills {
        let (status, killed, stderr) = common::run_once(
            dir,
            Path::new("pipeline.yaml"),
            2,
            Some(Duration::from_millis(ms)),
            None,
            &env,
        );
        assert!(killed || status.success(), "{stderr}");
        landed += usize::from(killed);
    }
    let (status, _, stderr) =
        common::run_once(dir, Path::new("pipeline.yaml"), 2, None, None, &env);
    assert!(status.success(), "{stderr}");
    landed
}

fn check(dir: &Path, kinds: &[Kind]) {
    // Output: the records that can succeed, once each, in read order per key.
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut fixed: Vec<i64> = Vec::new();
    for v in output_lines(dir) {
        let n = v["n"].as_i64().expect("n");
        per_key
            .entry(v["k"].as_str().expect("k").to_string())
            .or_default()
            .push(n);
        if v["fixed"] == true {
            fixed.push(n);
        }
    }
    for (k, ns) in &per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "key {k} out of order or twice: {ns:?}"
        );
    }
    let mut got: Vec<i64> = per_key.values().flatten().copied().collect();
    got.sort_unstable();
    let want: Vec<i64> = (0..kinds.len() as i64)
        .filter(|&n| {
            matches!(
                kinds[n as usize],
                Kind::Good | Kind::Transient(_) | Kind::Fixable
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "the output holds each record that can succeed once"
    );
    fixed.sort_unstable();
    let want_fixed: Vec<i64> = (0..kinds.len() as i64)
        .filter(|&n| kinds[n as usize] == Kind::Fixable)
        .collect();
    assert_eq!(fixed, want_fixed, "repaired by the remediation");

    // DLQ: the records that cannot, once each, with who gave up.
    let mut dead: BTreeMap<u64, (String, serde_json::Value)> = BTreeMap::new();
    for d in dead_letters(dir, "mix") {
        let line = d["offset"].as_u64().expect("offset");
        let prev = dead.insert(
            line,
            (d["step"].as_str().unwrap_or("").into(), d["tier"].clone()),
        );
        assert!(prev.is_none(), "line {line} dead-lettered twice");
    }
    for (n, k) in kinds.iter().enumerate() {
        let line = n as u64 + 1;
        match k {
            Kind::Malformed => assert_eq!(
                dead.get(&line).map(|(s, _)| s.as_str()),
                Some("decode"),
                "line {line}"
            ),
            Kind::Permanent => assert_eq!(
                dead.get(&line),
                Some(&(
                    "steps[1] udf check".to_string(),
                    serde_json::json!("remediation")
                )),
                "line {line}"
            ),
            _ => assert!(!dead.contains_key(&line), "line {line} ({k:?}) in the DLQ"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 4, ..ProptestConfig::default() })]

    #[test]
    fn every_record_ends_once_and_keys_keep_their_order_across_kills(
        kinds in prop::collection::vec(kind(), 20..300),
        kills in prop::collection::vec(200u64..1200, 0..3),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        write_case(dir.path(), &kinds);
        let landed = run_with_kills(dir.path(), &kills);
        eprintln!("{} records, {landed} of {} kills landed", kinds.len(), kills.len());
        check(dir.path(), &kinds);
    }
}
