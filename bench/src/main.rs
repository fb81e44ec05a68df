//! Headwater benchmarks: one entry point that runs named benchmarks and prints one JSON line
//! per result (name, events/s, events/s per task, build profile, machine).
//!
//!   headwater-bench                      # every benchmark
//!   headwater-bench q0 q5 --events 2000000
//!
//! Each Nexmark query runs on the generator source through the real runtime. The baseline
//! `nexmark_generator` measures the bare generator in the same run, so each query's figure can
//! be read as a ratio of it. `python` compares Python UDF runtimes with a plain Python loop
//! (see `python_udf.rs`); `wasm` compares Wasm UDFs from Rust and Go with native ones (see
//! `wasm_udf.rs`). `kafka` compares exactly-once and at-least-once Kafka sinks on a real
//! broker (see `kafka.rs`). `unaligned` compares checkpoint durations under backpressure with
//! aligned and unaligned barriers (see `unaligned.rs`). `go` compares Go UDFs on sidecar workers
//! with a plain Go loop (see `go_udf.rs`).

mod checkpoint;
mod dlq;
mod dlq_hot_key;
mod go_udf;
mod kafka;
mod python_udf;
mod recovery;
mod unaligned;
mod wasm_udf;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use headwater::config;

/// mimalloc: records are allocated on source threads and freed on sink threads, a pattern
/// glibc's per-thread arenas handle poorly.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use headwater::runtime::{self, RunControl, RunOptions};

#[derive(Parser)]
#[command(about = "Run Headwater benchmarks; prints one JSON line per result")]
struct Args {
    /// Benchmarks to run (default: all): generator, q0, q1, q5, q11, python, go, wasm, dlq,
    /// checkpoint, recovery, checkpointed, unaligned, kafka.
    names: Vec<String>,
    /// State sizes (MB) for the `checkpoint` benchmark.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,2000")]
    state_mb: Vec<u64>,
    /// State sizes (MB) for the `recovery` benchmark (a restart timed as a user sees it).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    recovery_mb: Vec<u64>,
    /// Records for the Python UDF benchmark.
    #[arg(long, default_value_t = 200_000)]
    python_records: u64,
    /// Records for the Go UDF benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    go_records: u64,
    /// Records for the Wasm UDF benchmark.
    #[arg(long, default_value_t = 200_000)]
    wasm_records: u64,
    /// Records for the `dlq` benchmark (transient failures).
    #[arg(long, default_value_t = 100_000)]
    dlq_records: u64,
    /// Events per Nexmark benchmark.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Records for the `kafka` throughput runs.
    #[arg(long, default_value_t = 2_000_000)]
    kafka_events: u64,
    /// Kafka bootstrap servers for the `kafka` benchmark (else $HEADWATER_KAFKA_BROKERS, else
    /// a broker started with integration/kafka/kafka.sh for the run).
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Seconds of measured load per `kafka` latency run (after a 3 s warm-up).
    #[arg(long, default_value_t = 15)]
    kafka_latency_secs: u64,
    /// Interleaved rounds of each `kafka` throughput run (figures are medians).
    #[arg(long, default_value_t = 2)]
    kafka_rounds: usize,
    /// Records/s for the `kafka` latency runs (default: half the measured exactly-once
    /// throughput).
    #[arg(long)]
    kafka_latency_rate: Option<f64>,
    /// Parallel tasks (default: number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
}

const ALL: [&str; 14] = [
    "generator",
    "q0",
    "q1",
    "q5",
    "q11",
    "python",
    "go",
    "wasm",
    "dlq",
    "checkpoint",
    "recovery",
    "checkpointed",
    "unaligned",
    "kafka",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let names: Vec<String> = if args.names.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.names.clone()
    };
    let parallelism = args.parallelism.unwrap_or_else(cores);
    let work = tempfile_dir()?;
    let mut baseline: Option<f64> = None;
    let emit = |mut line: serde_json::Value| {
        line["profile"] = json!(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        });
        line["machine"] = machine();
        println!("{line}");
    };
    // One failing benchmark does not stop the others: its error is printed as a JSON line and
    // the exit status says that something failed.
    let mut failed = Vec::new();
    for name in &names {
        let result = run_one(name, &args, parallelism, &work, &mut baseline, &emit);
        if let Err(e) = result {
            eprintln!("benchmark `{name}` failed: {e:#}");
            emit(json!({ "name": name, "error": format!("{e:#}") }));
            failed.push(name.clone());
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if !failed.is_empty() {
        bail!(
            "{} benchmark(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs the benchmark `name`, printing its JSON lines.
fn run_one(
    name: &str,
    args: &Args,
    parallelism: usize,
    work: &std::path::Path,
    baseline: &mut Option<f64>,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    match name {
        "python" => return python_udf::run(work, args.python_records, cores(), emit),
        "go" => return go_udf::run(work, args.go_records, cores(), emit),
        "wasm" => return wasm_udf::run(work, args.wasm_records, emit),
        "dlq" => return dlq::run(args.dlq_records, emit),
        "checkpoint" => return checkpoint::run(work, &args.state_mb, emit),
        "recovery" => return recovery::run(work, &args.recovery_mb, parallelism, emit),
        "kafka" => {
            let opts = kafka::Options {
                events: args.kafka_events,
                brokers: args.kafka_brokers.clone(),
                latency_secs: args.kafka_latency_secs,
                latency_rate: args.kafka_latency_rate,
                rounds: args.kafka_rounds,
                parallelism,
            };
            return kafka::run(work, &opts, emit);
        }
        "unaligned" => return unaligned::run(work, args.events, parallelism, emit),
        "checkpointed" => {
            for q in ["q5", "q11"] {
                bench_checkpointed(q, args.events, parallelism, work, emit)?;
            }
            return Ok(());
        }
        _ => {}
    }
    let (events, secs) = match name {
        "generator" => bench_generator(args.events, parallelism),
        q => bench_query(q, args.events, parallelism, work)?,
    };
    let eps = events as f64 / secs;
    if name == "generator" {
        *baseline = Some(eps);
    }
    emit(json!({
        "name": format!("nexmark_{name}"),
        "events": events,
        "seconds": round3(secs),
        "events_per_sec": eps.round(),
        "events_per_sec_per_task": (eps / parallelism as f64).round(),
        "events_per_sec_per_core": (eps / cores().min(parallelism) as f64).round(),
        "ratio_to_generator": baseline.filter(|_| name != "generator").map(|b| round3(eps / b)),
        "parallelism": parallelism,
    }));
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    json!({ "cores": cores(), "cpu": cpu, "os": std::env::consts::OS, "arch": std::env::consts::ARCH })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("headwater-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the benchmark work folder")?;
    Ok(dir)
}

/// The bare generator, one thread per partition, converting events to records: the ceiling
/// for every query.
fn bench_generator(events: u64, parallelism: usize) -> (u64, f64) {
    let spec = nexmark_spec(events, parallelism);
    let started = Instant::now();
    let threads: Vec<_> = (0..parallelism)
        .map(|i| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let mut parts =
                    headwater::connectors::open_source(&spec, 0, "bench").unwrap_or_default();
                let mut part = parts.remove(i);
                let (mut out, mut dead, mut n) = (Vec::new(), Vec::new(), 0u64);
                loop {
                    out.clear();
                    match part.poll(&mut out, &mut dead, 1024) {
                        Ok(headwater::sources::Poll::End) | Err(_) => break,
                        _ => n += out.len() as u64,
                    }
                }
                n + out.len() as u64
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    (total, started.elapsed().as_secs_f64())
}

fn nexmark_spec(events: u64, partitions: usize) -> headwater::config::spec::SourceSpec {
    let yaml = format!(
        "name: gen\nsources:\n  bids: {{ type: nexmark, events: {events}, partitions: {partitions}, only: bid }}\nsinks:\n  x: {{ type: blackhole }}\noutput: x\n"
    );
    match config::load_str(&yaml, "generator.yaml", headwater::udf::runtimes()) {
        Ok(mut spec) => spec.sources.remove(0),
        Err(e) => panic!("benchmark pipeline is invalid: {e}"),
    }
}

fn query_steps(q: &str) -> Result<&'static str> {
    Ok(match q {
        // Pass-through.
        "q0" => "[]",
        // Currency conversion (dollars to euros).
        "q1" => {
            r#"
  - map:
      compute: { price: "price * 0.908" }"#
        }
        // Hot items: bids per auction over sliding windows, then the top count per window.
        "q5" => {
            r#"
  - key_by: auction
  - window:
      type: sliding
      size: 10s
      slide: 2s
      aggregates: { bids: count() }
  - key_by: window_end
  - window:
      type: tumbling
      size: 2s
      aggregates: { top_bids: max(bids), auctions: count() }"#
        }
        // Bids per bidder per session (gap 10s).
        "q11" => {
            r#"
  - key_by: bidder
  - window:
      type: session
      gap: 10s
      aggregates: { bids: count() }"#
        }
        other => bail!("unknown benchmark `{other}`; known: {}", ALL.join(", ")),
    })
}

fn run_yaml(q: &str, yaml: &str) -> Result<(f64, runtime::RunSummary)> {
    let spec = config::load_str(yaml, &format!("{q}.yaml"), headwater::udf::runtimes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let summary = runtime::run(
        &spec,
        RunControl::new(),
        RunOptions {
            start: headwater::checkpoint::recovery::StartMode::Fresh,
            ..RunOptions::default()
        },
    )
    .with_context(|| format!("running {q}"))?;
    Ok((started.elapsed().as_secs_f64(), summary))
}

/// The same stateful query into a file sink, without checkpoints (at-least-once) and with a
/// checkpoint every second (exactly-once: state snapshots, manifests, two-phase file
/// commits), interleaved over three rounds; prints both medians and their ratio.
fn bench_checkpointed(
    q: &str,
    events: u64,
    parallelism: usize,
    work: &std::path::Path,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    let steps = query_steps(q)?;
    let events = events.min(1_000_000);
    let yaml = |checkpoint: &str, tag: &str| {
        let dir = work.join(format!("{q}-{tag}"));
        format!(
            "name: bench-{q}-{tag}\nparallelism: {parallelism}\nsources:\n  bids:\n    type: nexmark\n    events: {events}\n    partitions: {parallelism}\n    only: bid\nsteps: {steps}\nsinks:\n  x: {{ type: file, path: {} }}\noutput: x\nstate: {{ dir: {} }}\ndlq: {{ path: {} }}\ncheckpoint: {checkpoint}\ntuning: {{ progress_interval: 0s }}\n",
            dir.join("out/x.jsonl").display(),
            dir.join("state").display(),
            dir.join("dlq.jsonl").display(),
        )
    };
    let off = yaml("{ enabled: false }", "off");
    let on = yaml(
        &format!(
            "{{ interval: 1s, location: \"file://{}\" }}",
            work.join(format!("{q}-ckpt")).display()
        ),
        "on",
    );
    let (mut plain, mut exact, mut checkpoints) = (Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        plain.push(events as f64 / run_yaml(q, &off)?.0);
        let (secs, summary) = run_yaml(q, &on)?;
        exact.push(events as f64 / secs);
        checkpoints = summary.checkpoints.map(|c| c.completed).unwrap_or(0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (plain, exact) = (median(&mut plain), median(&mut exact));
    emit(json!({
        "name": format!("checkpointed_{q}"),
        "events": events,
        "parallelism": parallelism,
        "events_per_sec_unchecked": plain.round(),
        "events_per_sec_checkpoint_every_1s": exact.round(),
        "checkpoints_in_last_run": checkpoints,
        "ratio": round3(exact / plain),
    }));
    Ok(())
}

fn bench_query(
    q: &str,
    events: u64,
    parallelism: usize,
    work: &std::path::Path,
) -> Result<(u64, f64)> {
    let steps = query_steps(q)?;
    let events = match q {
        // Stateful queries do a RocksDB read-modify-write per window per record.
        "q5" | "q11" => events.min(1_000_000),
        _ => events,
    };
    let yaml = format!(
        "name: bench-{q}\nparallelism: {parallelism}\nsources:\n  bids:\n    type: nexmark\n    events: {events}\n    partitions: {parallelism}\n    only: bid\nsteps: {steps}\nsinks:\n  x: {{ type: blackhole }}\noutput: x\nstate: {{ dir: {} }}\ndlq: {{ path: {} }}\ncheckpoint: {{ enabled: false }}\ntuning: {{ progress_interval: 0s }}\n",
        work.join(format!("{q}-state")).display(),
        work.join(format!("{q}-dlq.jsonl")).display(),
    );
    let (secs, summary) = run_yaml(q, &yaml)?;
    if summary.totals.records_in != events {
        bail!(
            "{q}: read {} events, expected {events}",
            summary.totals.records_in
        );
    }
    Ok((events, secs))
}
