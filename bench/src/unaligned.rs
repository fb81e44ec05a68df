//! `unaligned`: checkpoint duration under backpressure, aligned against unaligned barriers.
//!
//! Three pipelines whose sources outrun a later step, so queues in front of it stay full:
//! - `sink`: Nexmark bids converted (q1) into one file sink, which is the bottleneck (every
//!   task writes into the one file);
//! - `windows`: bids per bidder in session windows (q11), where the windows' RocksDB
//!   read-modify-write per record is the bottleneck;
//! - `python`: bids keyed by bidder through a Python UDF (sidecar workers), the bottleneck.
//!
//! Each runs with a checkpoint every 100 ms, aligned and unaligned, interleaved over two
//! rounds. From every manifest of a run (all kept) it reads the checkpoint's duration and the
//! in-flight data it stored, and prints per mode the median, 90th percentile and largest
//! duration, the checkpoints completed, the run's throughput and the largest in-flight data
//! of a checkpoint, with the unaligned/aligned ratios. Aligned barriers wait behind every
//! queue; unaligned ones overtake the queues, whose content goes into the checkpoint.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use headwater::checkpoint::storage::CheckpointStorage;

/// What one run of one mode measured.
struct Measured {
    events_per_sec: f64,
    durations_ms: Vec<u64>,
    /// The largest in-flight data one checkpoint stored (bytes).
    in_flight_max: u64,
}

pub fn run(
    work: &Path,
    events: u64,
    parallelism: usize,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    std::fs::write(work.join("unaligned_udfs.py"), UDFS)?;
    let python_steps = format!(
        "\n  - key_by: bidder\n  - udf: tag\nudfs:\n  tag: {{ runtime: python, module: unaligned_udfs, function: tag, path: '{}', workers: 2 }}",
        work.display()
    );
    for (scenario, query, steps, events) in [
        (
            "sink",
            "q1",
            crate::query_steps("q1")?.to_string(),
            events.min(3_000_000),
        ),
        (
            "windows",
            "q11",
            crate::query_steps("q11")?.to_string(),
            events.min(1_000_000),
        ),
        ("python", "python-udf", python_steps, events.min(400_000)),
    ] {
        let mut aligned = Vec::new();
        let mut unaligned = Vec::new();
        for round in 0..2 {
            aligned.push(run_mode(
                work,
                scenario,
                &steps,
                events,
                parallelism,
                "aligned",
                round,
            )?);
            unaligned.push(run_mode(
                work,
                scenario,
                &steps,
                events,
                parallelism,
                "unaligned",
                round,
            )?);
        }
        let a = summarize(&aligned);
        let u = summarize(&unaligned);
        let ratio = |key: &str| {
            let (x, y) = (u[key].as_f64(), a[key].as_f64());
            match (x, y) {
                (Some(x), Some(y)) if y > 0.0 => json!(crate::round3(x / y)),
                _ => serde_json::Value::Null,
            }
        };
        emit(json!({
            "name": format!("unaligned_{scenario}"),
            "query": query,
            "events": events,
            "parallelism": parallelism,
            "checkpoint_interval_ms": 100,
            "aligned": a,
            "unaligned": u,
            "ratio_checkpoint_median": ratio("checkpoint_ms_median"),
            "ratio_checkpoint_p90": ratio("checkpoint_ms_p90"),
            "ratio_throughput": ratio("events_per_sec"),
        }));
    }
    Ok(())
}

/// A Python map a little more than trivial.
const UDFS: &str = r#"
import headwater as hw

@hw.map
def tag(r):
    out = dict(r)
    out["price_eur"] = round(r["price"] * 0.908, 2)
    return out
"#;

fn run_mode(
    work: &Path,
    scenario: &str,
    steps: &str,
    events: u64,
    parallelism: usize,
    mode: &str,
    round: usize,
) -> Result<Measured> {
    let dir = work.join(format!("unaligned-{scenario}-{mode}-{round}"));
    let location = dir.join("checkpoints");
    let yaml = format!(
        "name: bench-unaligned-{scenario}-{mode}\nparallelism: {parallelism}\nsources:\n  bids:\n    type: nexmark\n    events: {events}\n    partitions: {parallelism}\n    only: bid\nsteps: {steps}\nsinks:\n  x: {{ type: file, path: {} }}\noutput: x\nstate: {{ dir: {} }}\ndlq: {{ path: {} }}\ncheckpoint: {{ interval: 100ms, mode: {mode}, retain: 100000, location: \"file://{}\" }}\ntuning: {{ progress_interval: 0s }}\n",
        dir.join("out/x.jsonl").display(),
        dir.join("state").display(),
        dir.join("dlq.jsonl").display(),
        location.display(),
    );
    let (secs, _) = crate::run_yaml(&format!("unaligned-{scenario}-{mode}"), &yaml)?;
    let storage = CheckpointStorage::open(&format!("file://{}", location.display()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut durations_ms = Vec::new();
    let mut in_flight_max = 0;
    for id in storage
        .list_checkpoints()
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        let m = storage
            .read_manifest(id)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading manifest {id} of {}", location.display()))?;
        durations_ms.push(m.duration_ms);
        let in_flight: u64 = m
            .tasks
            .iter()
            .filter_map(|t| t.channel.as_ref())
            .chain(m.sink_channels.iter().map(|c| &c.file))
            .map(|f| f.size)
            .sum();
        in_flight_max = in_flight_max.max(in_flight);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measured {
        events_per_sec: events as f64 / secs,
        durations_ms,
        in_flight_max,
    })
}

/// Medians over the rounds of throughput and checkpoint count; percentiles over every
/// checkpoint of every round.
fn summarize(runs: &[Measured]) -> serde_json::Value {
    let mut all: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.durations_ms.iter().copied())
        .collect();
    all.sort_unstable();
    let at = |q: f64| -> Option<u64> {
        (!all.is_empty()).then(|| all[((all.len() - 1) as f64 * q).round() as usize])
    };
    let mut eps: Vec<f64> = runs.iter().map(|r| r.events_per_sec).collect();
    eps.sort_by(|a, b| a.total_cmp(b));
    json!({
        "events_per_sec": eps.get(eps.len() / 2).map(|e| e.round()),
        "checkpoints_per_run": runs.iter().map(|r| r.durations_ms.len()).collect::<Vec<_>>(),
        "checkpoint_ms_median": at(0.5),
        "checkpoint_ms_p90": at(0.9),
        "checkpoint_ms_max": all.last(),
        "in_flight_bytes_max": runs.iter().map(|r| r.in_flight_max).max(),
    })
}
