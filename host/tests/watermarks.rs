//! Watermarks end to end: a source task without partitions never holds back the watermark, so
//! which records are late depends on the input alone, not on thread timing.

use std::path::Path;

mod common;
use common::headwater;

/// One input file: time advances 10 ms per record; every 4,000th record is 30 s late.
fn write_late_input(dir: &Path) {
    let mut text = String::new();
    for i in 0..120_000i64 {
        let mut t = 1_767_225_600_000 + i * 10;
        if i % 4_000 == 3_999 {
            t -= 30_000;
        }
        text.push_str(&format!("{{\"ts\":{t},\"user\":\"u{}\"}}\n", i % 50));
    }
    std::fs::write(dir.join("one.jsonl"), text).expect("write input");
    std::fs::write(
        dir.join("wm.yaml"),
        "name: wm\nsources:\n  events: { type: file, path: one.jsonl, event_time: { field: ts, max_out_of_orderness: 5s } }\n\
steps:\n  - key_by: user\n  - window: { type: tumbling, size: 10s, aggregates: { n: count() }, late: { sink: late } }\n\
sinks:\n  out: { type: file, path: out/r.jsonl }\n  late: { type: file, path: out/late.jsonl }\noutput: out\n\
checkpoint: { interval: 20ms }\ntuning: { progress_interval: 0s }\n",
    )
    .expect("write pipeline");
}

/// The late records of a fresh run at `parallelism`, sorted.
fn late_records(dir: &Path, parallelism: usize) -> Vec<String> {
    common::run_ok(headwater().current_dir(dir).args([
        "run",
        "wm.yaml",
        "-q",
        "--fresh",
        "-p",
        &parallelism.to_string(),
    ]));
    let mut late = Vec::new();
    for e in std::fs::read_dir(dir.join("out")).expect("out").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("late-") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(e.path()).expect("read");
            late.extend(text.lines().map(str::to_string));
        }
    }
    late.sort();
    late
}

#[test]
fn a_source_task_without_partitions_leaves_late_data_to_the_input_alone() {
    // One file, two source tasks: the second has nothing to read. Every run must find the same
    // late records as a run with one task (before, the first late record was sometimes on time:
    // the window tasks waited for the idle task's end to raise their watermark).
    let dir = tempfile::tempdir().expect("tempdir");
    write_late_input(dir.path());
    let reference = late_records(dir.path(), 1);
    assert_eq!(
        reference.len(),
        30,
        "every 4,000th of 120,000 records is late"
    );
    for run in 0..20 {
        let late = late_records(dir.path(), 2);
        assert_eq!(
            late.len(),
            reference.len(),
            "run {run} at parallelism 2: {} late records, {} at parallelism 1",
            late.len(),
            reference.len()
        );
        assert_eq!(late, reference, "run {run}: the same records are late");
    }
}
