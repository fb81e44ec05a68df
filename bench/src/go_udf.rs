//! Go UDF benchmarks: the same maps as the Python UDF benchmark (`python_udf.rs`) over the same
//! 100-byte JSON records, written with the Go SDK (`bench/go-udf/`), run
//! (a) through the sidecar runtime (a worker process over gRPC, `runtime: go`), and
//! (c) as a plain Go loop in one process (`bench/go-udf/loop`: a buffered scanner,
//! `json.Unmarshal` into the function's input type, the call, a `json.Encoder` writing to a
//! buffered output file): the best loop a user would write with the standard library,
//! for a trivial map and a JSON-enrich map; prints records/s and the ratio a/c.
//! Both are timed over the same span: from starting them (the host run, the Go process) to
//! their last record written, so process and worker start-up count for both.
//! Both Go programs are built (`go build`) into the run's work folder at the start, and every
//! pipeline run starts fresh (`StartMode::Fresh`: no checkpoint is resumed).
//! Then the sidecar's per-batch latency (p50/p99) at half its measured maximum rate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use headwater::checkpoint::recovery::StartMode;
use headwater::config;
use headwater::runtime::{self, RunControl, RunOptions};
use headwater::udf::go;
use headwater::udf::UdfRuntime;
use headwater::value::Value;

/// The Go module of the benchmark's programs: `udfs/` (the functions), `worker/` (the
/// sidecar worker serving them), `loop/` (the plain loop calling them).
const GO_MODULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/go-udf");

/// Records per request to the sidecar (the runtime's default).
const BATCH: usize = 512;

/// Interleaved measurement rounds per variant; figures are medians.
const ROUNDS: usize = 3;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `go` command: `$HEADWATER_GO`, else `go` on the PATH (as the host does).
fn go_command() -> PathBuf {
    std::env::var_os("HEADWATER_GO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("go"))
}

/// Builds the worker and the plain loop into `work`; returns their paths.
fn build(work: &Path) -> Result<(PathBuf, PathBuf)> {
    let go = go_command();
    let mut built = Vec::new();
    for program in ["worker", "loop"] {
        let binary = work.join(format!("go-{program}"));
        let out = Command::new(&go)
            .args(["build", "-buildvcs=false", "-o"])
            .arg(&binary)
            .arg(format!("./{program}"))
            .current_dir(GO_MODULE)
            // The go.mod `go` line never makes the go command fetch another toolchain.
            .env("GOTOOLCHAIN", "local")
            .output()
            .with_context(|| {
                format!(
                    "cannot run `{}`: the Go benchmark needs Go 1.24 or newer on the PATH, or $HEADWATER_GO (scripts/setup.sh: setup_go)",
                    go.display()
                )
            })?;
        if !out.status.success() {
            bail!(
                "`go build ./{program}` in {GO_MODULE} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        built.push(binary);
    }
    let lp = built.pop().context("the loop was built")?;
    let worker = built.pop().context("the worker was built")?;
    Ok((worker, lp))
}

/// Writes `n` records of about 100 bytes each as JSON lines (those of `python_udf.rs`).
fn write_records(path: &Path, n: u64) -> Result<()> {
    let mut text = String::with_capacity(n as usize * 110);
    for i in 0..n {
        text.push_str(&format!(
            "{{\"ts\":{},\"item\":{},\"price\":{:.2},\"name\":\"item-{}-blue\",\"user\":\"u{:06}\"}}\n",
            1_767_261_600_000u64 + i,
            i % 1000,
            (i % 9973) as f64 / 97.0,
            i % 5000,
            i % 100_000
        ));
    }
    std::fs::write(path, text).context("writing benchmark records")
}

/// Runs the plain loop; returns the records it wrote and the process's wall time.
fn run_loop(work: &Path, lp: &Path, input: &Path, function: &str) -> Result<(u64, f64)> {
    let started = Instant::now();
    let out = Command::new(lp)
        .arg(input)
        .arg(function)
        .arg(work.join("loop-out.jsonl"))
        .output()
        .context("running the plain Go loop")?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "plain loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["records"].as_u64().unwrap_or(0), wall))
}

fn pipeline_yaml(
    work: &Path,
    input: &Path,
    worker: &Path,
    function: &str,
    workers: usize,
    parallelism: usize,
) -> String {
    format!(
        "name: bench-go\nparallelism: {parallelism}\nsources:\n  r: {{ type: file, path: '{}', event_time: {{ field: ts }} }}\n\
udfs:\n  f: {{ runtime: go, binary: '{}', function: {function}, workers: {workers}, batch_size: {batch} }}\n\
steps:\n  - udf: f\nsinks:\n  x: {{ type: blackhole }}\noutput: x\nstate: {{ dir: '{}' }}\ndlq: {{ path: '{}' }}\ntuning: {{ progress_interval: 0s }}\n",
        input.display(),
        worker.display(),
        work.join("state").display(),
        work.join("dlq.jsonl").display(),
        batch = BATCH,
    )
}

fn run_pipeline(yaml: &str, expected: u64) -> Result<f64> {
    let spec = config::load_str(yaml, "bench-go.yaml", headwater::udf::runtimes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    // Fresh: the previous round's checkpoints must not make this run resume (and read nothing).
    let fresh = RunOptions {
        start: StartMode::Fresh,
        ..RunOptions::default()
    };
    let summary = runtime::run(&spec, RunControl::new(), fresh)?;
    let secs = started.elapsed().as_secs_f64();
    if summary.totals.records_out != expected {
        bail!(
            "the pipeline wrote {} records, expected {expected} (DLQ: {})",
            summary.totals.records_out,
            summary.totals.dead_letters
        );
    }
    Ok(secs)
}

/// Runs the a/c comparison and the latency measurement; prints JSON lines.
pub fn run(
    work: &Path,
    records: u64,
    cores: usize,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    let (worker, lp) = build(work)?;
    let input = work.join("go-records.jsonl");
    write_records(&input, records)?;
    let mut enrich_max = 0.0f64;
    let wide = cores.max(2);
    for function in ["trivial", "enrich"] {
        // Interleaved rounds, medians: a noisy neighbour then hits every variant alike.
        let (mut a, mut c, mut a2) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (n, loop_secs) = run_loop(work, &lp, &input, function)?;
            if n != records {
                bail!("plain loop processed {n} records, expected {records}");
            }
            c.push(records as f64 / loop_secs);
            let sidecar = pipeline_yaml(work, &input, &worker, function, 1, 1);
            a.push(records as f64 / run_pipeline(&sidecar, records)?);
            let scaled = pipeline_yaml(work, &input, &worker, function, wide, wide);
            a2.push(records as f64 / run_pipeline(&scaled, records)?);
        }
        let (a, c, a2) = (median(a), median(c), median(a2));
        if function == "enrich" {
            enrich_max = a;
        }
        emit(json!({
            "name": format!("go_udf_{function}"),
            "records": records,
            "record_bytes": 100,
            "rounds": ROUNDS,
            "a_sidecar_records_per_sec": a.round(),
            "c_plain_loop_records_per_sec": c.round(),
            "ratio_a_to_c": (a / c * 1000.0).round() / 1000.0,
            "sidecar_workers": 1,
            format!("a_sidecar_{wide}_workers_records_per_sec"): a2.round(),
        }));
    }
    emit(latency(work, &input, &worker, enrich_max / 2.0)?);
    Ok(())
}

/// Sends batches of 64 records to one sidecar worker at `rate` records/s (half of what one
/// worker sustained on the enrich map); the latency of each batch is what every record in it
/// waited for its result.
fn latency(work: &Path, input: &Path, worker: &Path, rate: f64) -> Result<serde_json::Value> {
    let yaml = pipeline_yaml(work, input, worker, "enrich", 1, 1);
    let spec = config::load_str(&yaml, "bench-go.yaml", headwater::udf::runtimes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(spec) = spec.udfs[0].runtime.options::<go::GoSpec>() else {
        bail!("expected a go udf");
    };
    let rt = go::start("latency", spec)?;
    let batch = 64usize;
    let record = Value::from_json(
        br#"{"ts":1767261600000,"item":17,"price":12.5,"name":"item-17-blue","user":"u000017"}"#,
    )?;
    let interval = Duration::from_secs_f64(batch as f64 / rate.max(1.0));
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut next = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        let t = Instant::now();
        let out = rt.invoke("enrich", vec![record.clone(); batch])?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        if out.len() != batch || out.iter().any(|o| o.is_err()) {
            bail!("the enrich function failed during the latency run");
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok(json!({
        "name": "go_udf_sidecar_latency",
        "rate_records_per_sec": rate.round(),
        "batch_records": batch,
        "batches": samples.len(),
        "p50_ms": (pct(0.50) * 1000.0).round() / 1000.0,
        "p99_ms": (pct(0.99) * 1000.0).round() / 1000.0,
    }))
}
