//! Unaligned checkpoints are exactly-once in the shapes users run: keyed windows at
//! parallelism 2 and 3 (the window tasks capture records in flight from several source
//! tasks) and selective pipelines whose sink is fast (the sink captures results in flight),
//! each crashed at a chosen point of a checkpoint and resumed, and a chaos run with many
//! SIGKILLs; the committed output must equal an independent oracle.
//!
//! `HEADWATER_TEST_BARRIER_LAG=MS` makes every source task but the first pass each barrier on
//! MS ms late while it goes on sending records: receivers then capture in-flight data for a
//! long time, from senders whose barrier has not arrived yet (the case that once lost records).

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::*;

/// A keyed tumbling-window count (`name.yaml`), unaligned checkpoints every 50 ms (all kept).
fn windows_pipeline(dir: &Path, name: &str) -> PathBuf {
    windows_pipeline_with(dir, name, "")
}

/// Like [`windows_pipeline`], with more `checkpoint` settings (`, key: value`).
fn windows_pipeline_with(dir: &Path, name: &str, checkpoint: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nparallelism: 2\nsources:\n  events:\n    type: file\n    path: input/*.jsonl\n    event_time: {{ field: ts, max_out_of_orderness: 5s }}\n\
steps:\n  - key_by: user\n  - window:\n      type: tumbling\n      size: 10s\n      aggregates: {{ n: count(), total: sum(v) }}\n\
sinks:\n  out: {{ type: file, path: out/{name}.jsonl }}\noutput: out\n\
checkpoint: {{ interval: 50ms, mode: unaligned, retain: 1000{checkpoint} }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("write pipeline");
    p
}

/// A selective pass-through (`name.yaml`): 5% of the records reach the sink, which is then
/// faster than its senders and often waits for them.
fn selective_pipeline(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nparallelism: 2\nsources:\n  events:\n    type: file\n    path: input/*.jsonl\n    event_time: {{ field: ts, max_out_of_orderness: 5s }}\n\
steps:\n  - filter: \"v < 5\"\n  - map: {{ compute: {{ w: \"v * 2\" }} }}\n\
sinks:\n  out: {{ type: file, path: out/{name}.jsonl }}\noutput: out\n\
checkpoint: {{ interval: 50ms, mode: unaligned, retain: 1000 }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("write pipeline");
    p
}

/// How many kept manifests stored in-flight data of `key` (`"channel"`: a window task's,
/// `"sink_channels"`: a sink's).
fn manifests_with(dir: &Path, name: &str, key: &str) -> usize {
    let manifests = dir.join(format!(".headwater/{name}/checkpoints/manifests"));
    std::fs::read_dir(&manifests)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains(&format!("\"{key}\""))
                })
                .count()
        })
        .unwrap_or(0)
}

/// [`common::crash_then_resume`] with the second source task's barriers 40 ms late.
fn crash_then_resume(dir: &Path, pipeline: &Path, p: usize, point: &str) {
    common::crash_then_resume(dir, pipeline, p, point, &barrier_lag(40));
}

#[test]
fn unaligned_keyed_windows_resume_exactly_once_at_parallelism_2_and_3() {
    for (p, point) in [
        (2, "manifest-written:3"),
        (3, "manifest-written:3"),
        (2, "uploaded:4"),
        (3, "uploaded:4"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = write_input(dir.path(), 4, 250_000, 0x5eed_0100 + p as u64);
        let pipeline = windows_pipeline(dir.path(), "win");
        crash_then_resume(dir.path(), &pipeline, p, point);
        assert!(
            manifests_with(dir.path(), "win", "channel") > 0,
            "p={p} {point}: no checkpoint stored records in flight to a window task"
        );
        assert_no_dead_letters(dir.path(), "win");
        assert_same(
            &committed_rows(dir.path(), "win"),
            &tumbling_oracle(&input, 10_000),
            &format!("unaligned windows, parallelism {p}, crash at {point}"),
        );
    }
}

#[test]
fn unaligned_sinks_resume_exactly_once_when_their_senders_barriers_arrive_apart() {
    for (p, point) in [
        (2, "manifest-written:3"),
        (2, "uploaded:4"),
        (3, "manifest-written:2"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = write_input(dir.path(), 4, 250_000, 0x5eed_0200 + p as u64);
        let pipeline = selective_pipeline(dir.path(), "sel");
        crash_then_resume(dir.path(), &pipeline, p, point);
        assert!(
            manifests_with(dir.path(), "sel", "sink_channels") > 0,
            "p={p} {point}: no checkpoint stored results in flight to the sink"
        );
        let mut want: Vec<(String, i64, i64)> = input
            .into_iter()
            .filter(|(_, _, _, v)| *v < 5)
            .map(|(_, user, t, v)| (user, t, v))
            .collect();
        want.sort();
        let got = committed_passthrough(dir.path(), "sel");
        assert_eq!(
            got.len(),
            want.len(),
            "p={p} {point}: committed lines vs the input's selected records"
        );
        assert!(got == want, "p={p} {point}: committed lines differ");
    }
}

#[test]
fn unaligned_keyed_windows_survive_many_sigkills_exactly_once() {
    // The shape a user runs, without any injected lag: keyed windows, parallelism 2 and 3,
    // killed at random moments long enough after the start for several checkpoints to pass.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 4, 750_000, 0x5eed_0300);
    let pipeline = windows_pipeline(dir.path(), "chaos");
    let mut rng = Rng(0x0c4a05);
    let mut landed = 0;
    for attempt in 0..60 {
        if landed >= 25 {
            break;
        }
        let p = [2, 3][attempt % 2];
        let after = Duration::from_millis(100 + rng.below(300));
        let (status, killed, stderr) = run_once(dir.path(), &pipeline, p, Some(after), None, &[]);
        if !killed {
            assert!(status.success(), "run failed: {stderr}");
            break;
        }
        landed += 1;
    }
    let (status, _, stderr) = run_once(dir.path(), &pipeline, 2, None, None, &[]);
    assert!(status.success(), "final run failed: {stderr}");
    assert!(landed >= 20, "only {landed} kills landed");
    assert!(
        manifests_with(dir.path(), "chaos", "channel") > 0,
        "no checkpoint stored records in flight; the test did not exercise unaligned captures"
    );
    assert_no_dead_letters(dir.path(), "chaos");
    assert_same(
        &committed_rows(dir.path(), "chaos"),
        &tumbling_oracle(&input, 10_000),
        &format!("unaligned windows after {landed} SIGKILLs"),
    );
}

#[test]
fn checkpoints_start_aligned_and_switch_to_unaligned_after_the_aligned_timeout() {
    // The second source task's barriers come 40 ms late. With `aligned_timeout: 2s` every
    // checkpoint aligns in time: nothing is stored in flight. With 10 ms the wait times out and
    // the checkpoint goes unaligned, storing records in flight. Both resume exactly once.
    for (timeout, unaligned_expected) in [("2s", false), ("10ms", true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = write_input(dir.path(), 4, 250_000, 0x5eed_0400);
        let pipeline = windows_pipeline_with(
            dir.path(),
            "adapt",
            &format!(", aligned_timeout: {timeout}"),
        );
        crash_then_resume(dir.path(), &pipeline, 2, "manifest-written:3");
        let with_channel = manifests_with(dir.path(), "adapt", "channel");
        assert_eq!(
            with_channel > 0,
            unaligned_expected,
            "aligned_timeout {timeout}: {with_channel} checkpoints stored records in flight"
        );
        assert_no_dead_letters(dir.path(), "adapt");
        assert_same(
            &committed_rows(dir.path(), "adapt"),
            &tumbling_oracle(&input, 10_000),
            &format!("aligned_timeout {timeout}"),
        );
    }
}
