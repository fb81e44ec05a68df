//! `headwater dlq replay` end to end with real Python workers: a group of dead letters sent
//! back after the fix enters the pipeline at its step exactly once (across SIGKILLs too),
//! and a second replay of the same group, or one of unchanged code, is refused.

use std::path::Path;
use std::time::Duration;

mod common;
use common::python_case::*;
use common::udf::*;

const RECORDS: u64 = 1000;

/// The records `enrich` fails (`n % 97 == 13`) among `0..records`.
fn failing(records: u64) -> Vec<i64> {
    (0..records as i64).filter(|n| n % 97 == 13).collect()
}

/// Rewrites `my_udfs.py` so that `enrich` takes every record (a failing one after `sleep`
/// seconds, giving `square` 0 so the test can tell them apart).
fn fix_enrich(dir: &Path, sleep: f64) {
    let fixed = UDFS.replace(
        "raise ValueError(f\"bad record {r['n']}\")",
        &format!("time.sleep({sleep}); return {{\"n\": r[\"n\"], \"square\": 0}}"),
    );
    assert_ne!(fixed, UDFS);
    std::fs::write(dir.join("my_udfs.py"), fixed).expect("fix");
}

/// `headwater dlq ARGS... pipeline.yaml`, its exit code, stdout and stderr.
fn dlq_cmd(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = headwater(dir)
        .arg("dlq")
        .args(args)
        .output()
        .expect("headwater dlq");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn replay(dir: &Path, group: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["replay", "pipeline.yaml", "--group", group];
    args.extend_from_slice(extra);
    dlq_cmd(dir, &args)
}

/// The states of the pipeline's replays (`dlq replays --json`).
fn replay_states(dir: &Path) -> Vec<String> {
    let (code, out, err) = dlq_cmd(dir, &["replays", "pipeline.yaml", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["replays"]
        .as_array()
        .expect("replays")
        .iter()
        .map(|r| r["state"].as_str().expect("state").to_string())
        .collect()
}

/// Runs the pipeline on from its checkpoint (not fresh) to its end.
fn resume(dir: &Path) {
    common::run_ok(headwater(dir).args(["run", "pipeline.yaml", "-q"]));
}

/// Every `n` of the input committed exactly once; the replayed ones by the fixed code.
fn assert_each_once(dir: &Path, records: u64) {
    let ns = output_ns(dir);
    let wrong: Vec<_> = (0..records as i64)
        .filter(|n| ns.get(n) != Some(&1))
        .map(|n| (n, ns.get(&n).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} n not committed once; (n, times) of the first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    assert_eq!(ns.len() as u64, records);
    for v in output_lines(dir) {
        let n = v["n"].as_i64().expect("n");
        if n % 97 == 13 {
            assert_eq!(v["square"], 0, "replayed through the fixed code: {v}");
        }
    }
}

/// The incident as docs/dlq.md tells it: a group fails at a udf step after a `key_by` (so its
/// records must be routed to their key's task again); a replay of unchanged code is refused;
/// after the fix the replay is queued, the pipeline reads it on its next run and each of the
/// group's records reaches the output exactly once; a second replay of the group is refused
/// and a further run adds nothing.
#[test]
fn a_replay_after_the_fix_sends_the_group_once_and_a_second_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_case(d, RECORDS, "  - key_by: n\n  - udf: enrich\n", "");
    run_ok(d);
    let dead = dlq(d);
    assert_eq!(
        dead.iter().map(dead_n).collect::<Vec<_>>().len(),
        failing(RECORDS).len()
    );
    assert!(
        dead.iter().all(|d| d["key"].is_i64()),
        "envelopes keep the record's key: {}",
        dead[0]
    );
    let group = dead[0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    assert_eq!(
        output_ns(d).len() as u64,
        RECORDS - failing(RECORDS).len() as u64
    );

    // Unchanged code: refused, nothing queued.
    let (code, _, err) = replay(d, &group, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("unchanged") && err.contains("--force"),
        "{err}"
    );
    assert!(replay_states(d).is_empty());

    fix_enrich(d, 0.0);
    let (code, out, err) = replay(d, &group, &["--json"]);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["queued"]["replay"], 1);
    assert_eq!(
        report["queued"]["records"].as_u64(),
        Some(failing(RECORDS).len() as u64)
    );
    assert_eq!(replay_states(d), vec!["waiting"]);

    resume(d);
    assert_each_once(d, RECORDS);
    assert_eq!(replay_states(d), vec!["done"]);
    assert_eq!(dlq(d).len(), dead.len(), "nothing failed again");

    // The same group again: refused, however often asked; another run adds nothing.
    let (code, _, err) = replay(d, &group, &["--force"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("sent back already (replay 1)"), "{err}");
    resume(d);
    assert_each_once(d, RECORDS);
}

/// A replay read by a pipeline that is killed (SIGKILL) again and again, while it also reads
/// new input, still puts each record in the output exactly once: the replay's position is
/// part of the checkpoints like the file's.
#[test]
fn a_replay_survives_sigkills_exactly_once() {
    let first = 50_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_case(d, first, "  - key_by: n\n  - udf: enrich\n", "");
    let pipeline = d.join("pipeline.yaml");
    let mut yaml = std::fs::read_to_string(&pipeline).expect("pipeline");
    yaml.push_str("checkpoint: { interval: 200ms }\n");
    std::fs::write(&pipeline, yaml).expect("pipeline");
    run_ok(d);
    let group = dlq(d)[0]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    // The fix takes 5 ms per record it used to fail: the next run lasts seconds.
    fix_enrich(d, 0.005);
    let (code, _, err) = replay(d, &group, &[]);
    assert_eq!(code, Some(0), "{err}");
    // New input arrives too: the next run reads it beside the replay.
    let total = 2 * first;
    let mut more = String::new();
    for n in first..total {
        more.push_str(&format!("{{\"ts\":{n},\"n\":{n}}}\n"));
    }
    let mut input = std::fs::read_to_string(d.join("input.jsonl")).expect("input");
    input.push_str(&more);
    std::fs::write(d.join("input.jsonl"), input).expect("input");

    // Killed once early (before a checkpoint took the replay in, most likely), then once
    // right after a checkpoint covered the whole replay while the run was still reading
    // the new input: the runs after it must not send the replay again.
    let mut early = headwater(d)
        .args(["run", "pipeline.yaml", "-q"])
        .spawn()
        .expect("run");
    std::thread::sleep(Duration::from_millis(1000));
    early.kill().expect("kill");
    early.wait().expect("wait");
    let mut run = headwater(d)
        .args(["run", "pipeline.yaml", "-q"])
        .spawn()
        .expect("run");
    common::wait_for(
        "a checkpoint that covers the replay",
        Duration::from_secs(120),
        || replay_states(d) == ["done"],
    );
    let still_running = run.try_wait().expect("try_wait").is_none();
    run.kill().expect("kill");
    run.wait().expect("wait");
    assert!(
        still_running,
        "the run ended before it could be killed after the replay's checkpoint"
    );
    resume(d);
    assert_each_once(d, total);
    assert_eq!(replay_states(d), vec!["done"]);
}
