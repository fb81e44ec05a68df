//! What the UDF tests (Python, Go, Wasm) share: numbered input, the committed output of the
//! file sink `out.jsonl`, dead letters, the oracles of the keyed-process and window-aggregate
//! cases, and the workers a host started.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::bin::processes_matching;

/// The committed output of sink file `out.jsonl` in `dir`, one JSON value a record.
pub fn output_lines(dir: &Path) -> Vec<serde_json::Value> {
    headwater::connectors::files::read_committed(&dir.join("out.jsonl"))
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// How many times each `n` was committed.
pub fn output_ns(dir: &Path) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for v in output_lines(dir) {
        *counts.entry(v["n"].as_i64().expect("n")).or_default() += 1;
    }
    counts
}

/// The dead letters of pipeline `name` in `dir` (none when it wrote no DLQ file).
pub fn dead_letters(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!(".headwater/{name}/dlq.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("dlq line is JSON"))
        .collect()
}

/// The `n` of a dead letter's record.
pub fn dead_n(d: &serde_json::Value) -> i64 {
    let raw: serde_json::Value =
        serde_json::from_str(d["raw"].as_str().expect("raw")).expect("raw json");
    raw["n"].as_i64().expect("n")
}

/// The committed output as `(key fields) -> (value fields)`, all integers; a key emitted
/// twice fails the test.
pub fn committed_pairs(
    dir: &Path,
    key: [&str; 2],
    value: [&str; 2],
) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut got = BTreeMap::new();
    for v in output_lines(dir) {
        let int = |f: &str| v[f].as_i64().unwrap_or_else(|| panic!("{f} in {v}"));
        let k = (int(key[0]), int(key[1]));
        let prev = got.insert(k, (int(value[0]), int(value[1])));
        assert!(prev.is_none(), "{k:?} emitted twice");
    }
    got
}

/// The buckets `bucket_totals` emitted, as committed; a bucket emitted twice fails the test.
pub fn committed_buckets(dir: &Path) -> BTreeMap<(i64, i64), (i64, i64)> {
    committed_pairs(dir, ["user", "bucket_end"], ["total", "count"])
}

/// Per (user, 100-ms bucket end): the sum and count of n, for `n` in `0..records` (ts == n).
pub fn bucket_oracle(records: u64) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut expected: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for n in 0..records as i64 {
        let e = expected.entry((n % 7, n / 100 * 100 + 99)).or_default();
        e.0 += n;
        e.1 += 1;
    }
    expected
}

/// The steps of the window-aggregate case: users `n % 5`, 100-ms tumbling windows with a
/// count and the UDF aggregate `spread`.
pub const SPREAD_STEPS: &str = "  - map: { compute: { user: \"n % 5\" } }\n  - key_by: user\n  - window: { type: tumbling, size: 100ms, aggregates: { count: count(), spread: \"udf(spread)\" } }\n";

/// Per (user, 100-ms window): the count and max - min of n, for `n` in `0..records` (ts == n).
pub fn spread_oracle(records: u64) -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut expected: BTreeMap<(i64, i64), (i64, i64, i64)> = BTreeMap::new();
    for n in 0..records as i64 {
        let e = expected
            .entry((n % 5, n / 100 * 100))
            .or_insert((0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 = e.1.min(n);
        e.2 = e.2.max(n);
    }
    expected
        .into_iter()
        .map(|(k, (c, lo, hi))| (k, (c, hi - lo)))
        .collect()
}

/// The committed windows of the spread case: (user, window start) -> (count, spread).
pub fn committed_spreads(dir: &Path) -> BTreeMap<(i64, i64), (i64, i64)> {
    committed_pairs(dir, ["user", "window_start"], ["count", "spread"])
}

/// Turns `dir`'s `pipeline.yaml` into the session case (key `k`, 300-ms gap, the same
/// aggregates, 10 s of allowed disorder) over `input`.
pub fn use_session_windows(dir: &Path, input: &str) {
    std::fs::write(dir.join("input.jsonl"), input).expect("input");
    let pipeline = std::fs::read_to_string(dir.join("pipeline.yaml")).expect("read");
    let start = pipeline.find("steps:\n").expect("steps");
    let end = pipeline.find("sinks:\n").expect("sinks");
    let pipeline = format!(
        "{}steps:\n  - key_by: k\n  - window: {{ type: session, gap: 300ms, aggregates: {{ count: count(), spread: \"udf(spread)\" }} }}\n{}",
        &pipeline[..start],
        &pipeline[end..]
    )
    .replace("event_time: { field: ts }", "event_time: { field: ts, max_out_of_orderness: 10s }");
    std::fs::write(dir.join("pipeline.yaml"), pipeline).expect("write");
}

/// The committed session windows: (k, start, end, count, spread), sorted.
pub fn committed_sessions(dir: &Path) -> Vec<(String, i64, i64, i64, i64)> {
    let mut sessions: Vec<(String, i64, i64, i64, i64)> = output_lines(dir)
        .iter()
        .map(|v| {
            (
                v["k"].as_str().expect("k").to_string(),
                v["window_start"].as_i64().expect("start"),
                v["window_end"].as_i64().expect("end"),
                v["count"].as_i64().expect("count"),
                v["spread"].as_i64().expect("spread"),
            )
        })
        .collect();
    sessions.sort();
    sessions
}

/// Waits up to 10 s until no process matches any of `patterns` (workers of killed hosts must
/// exit by themselves); fails the test naming those left.
pub fn assert_gone(patterns: &[String]) {
    let mut left = Vec::new();
    let gone = |left: &mut Vec<String>| {
        *left = patterns
            .iter()
            .map(|p| (p, processes_matching(p)))
            .filter(|(_, pids)| !pids.is_empty())
            .map(|(p, pids)| format!("{p}: {pids}"))
            .collect();
        left.is_empty()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gone(&mut left) {
        assert!(
            std::time::Instant::now() < deadline,
            "workers outlived their killed host: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
