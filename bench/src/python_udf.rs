//! Python UDF benchmarks: the same map over the same 100-byte JSON records, run
//! (a) through the sidecar runtime (worker processes over gRPC),
//! (b) in-process (CPython embedded with pyo3), and
//! (c) as a plain Python loop in one process (read the file, `json.loads`, call, encode with
//! one reused `json.JSONEncoder`, write the output file): the best loop a user would write
//! with the standard library, and
//! (d) the same loop with msgspec's reused `Decoder`/`Encoder` (the fast library the SDK's
//! worker uses): the best loop a user would write,
//! for a trivial map and a JSON-enrich map; prints records/s and the ratios to c and to d.
//! Every variant is timed over the same span: from starting it (the host run, the Python
//! process) to its last record written, so interpreter and worker start-up count for all.
//! Each pipeline run starts fresh (`StartMode::Fresh`: no checkpoint is resumed).
//! Then the sidecar's per-batch latency (p50/p99) at half its measured maximum rate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use headwater::checkpoint::recovery::StartMode;
use headwater::config;
use headwater::runtime::{self, RunControl, RunOptions};
use headwater::udf::python;
use headwater::udf::UdfRuntime;
use headwater::value::Value;

const UDFS: &str = r#"
import headwater as hw

CATEGORIES = ["books", "garden", "games", "music", "sports", "tools", "toys", "video"]

@hw.map
def trivial(r):
    return r

@hw.map
def enrich(r):
    out = dict(r)
    out["category"] = CATEGORIES[r["item"] % len(CATEGORIES)]
    out["price_eur"] = round(r["price"] * 0.908, 2)
    out["tags"] = r["name"].split("-")
    out["expensive"] = r["price"] > 50
    return out
"#;

/// The plain-loop baseline: the same functions, the same records, no host; one encoder and
/// the module-level decoder reused for every record, output written like a sink would.
/// `seconds` is the loop alone (reported for reference); the figure compared is the process's
/// wall time, the span the pipelines are timed over.
const LOOP: &str = r#"
import json, sys, time
started = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import bench_udfs
f = getattr(bench_udfs, sys.argv[3])
if sys.argv[5] == "msgspec":
    import msgspec
    loads = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
else:
    loads = json.loads
    _encode = json.JSONEncoder(separators=(",", ":")).encode
    encode = lambda v: _encode(v).encode()
n = 0
with open(sys.argv[2], "rb") as fh, open(sys.argv[4], "wb") as out:
    write = out.write
    for line in fh:
        write(encode(f(loads(line))))
        write(b"\n")
        n += 1
elapsed = time.perf_counter() - started
print(json.dumps({"records": n, "seconds": elapsed}))
"#;

/// Records per request to the sidecar (the runtime's default).
const BATCH: usize = 512;

/// Interleaved measurement rounds per variant; figures are medians.
const ROUNDS: usize = 3;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn python() -> Result<PathBuf> {
    std::env::var_os("HEADWATER_PYTHON")
        .map(PathBuf::from)
        .context("HEADWATER_PYTHON is not set: run the Python benchmarks through `./dev bench`")
}

/// Writes `n` records of about 100 bytes each as JSON lines.
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

/// Runs the plain loop with `library` (`json` or `msgspec`); returns the records it wrote
/// and the process's wall time.
fn run_loop(work: &Path, input: &Path, function: &str, library: &str) -> Result<(u64, f64)> {
    let script = work.join("loop.py");
    std::fs::write(&script, LOOP)?;
    let started = Instant::now();
    let out = Command::new(python()?)
        .arg(&script)
        .arg(work)
        .arg(input)
        .arg(function)
        .arg(work.join("loop-out.jsonl"))
        .arg(library)
        .output()
        .context("running the plain Python loop")?;
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
    runtime: &str,
    function: &str,
    workers: usize,
    parallelism: usize,
) -> String {
    format!(
        "name: bench-py\nparallelism: {parallelism}\nsources:\n  r: {{ type: file, path: '{}', event_time: {{ field: ts }} }}\n\
udfs:\n  f: {{ runtime: {runtime}, module: bench_udfs, function: {function}, path: '{}', workers: {workers}, batch_size: {batch} }}\n\
steps:\n  - udf: f\nsinks:\n  x: {{ type: blackhole }}\noutput: x\nstate: {{ dir: '{}' }}\ndlq: {{ path: '{}' }}\ntuning: {{ progress_interval: 0s }}\n",
        input.display(),
        work.display(),
        work.join("state").display(),
        work.join("dlq.jsonl").display(),
        batch = BATCH,
    )
}

fn run_pipeline(yaml: &str, expected: u64) -> Result<f64> {
    let spec = config::load_str(yaml, "bench-py.yaml", headwater::udf::runtimes())
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

/// Runs the a/b/c comparison and the latency measurement; prints JSON lines.
pub fn run(
    work: &Path,
    records: u64,
    cores: usize,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    std::fs::write(work.join("bench_udfs.py"), UDFS)?;
    let input = work.join("records.jsonl");
    write_records(&input, records)?;
    let mut sidecar_max = 0.0f64;
    let wide = cores.max(2);
    for function in ["trivial", "enrich"] {
        // Interleaved rounds, medians: a noisy neighbour then hits every variant alike.
        let (mut a, mut b, mut c, mut d, mut a2) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for (library, rates) in [("json", &mut c), ("msgspec", &mut d)] {
                let (n, loop_secs) = run_loop(work, &input, function, library)?;
                if n != records {
                    bail!("plain {library} loop processed {n} records, expected {records}");
                }
                rates.push(records as f64 / loop_secs);
            }
            let sidecar = pipeline_yaml(work, &input, "python", function, 1, 1);
            a.push(records as f64 / run_pipeline(&sidecar, records)?);
            let inproc = pipeline_yaml(work, &input, "python-inproc", function, 1, 1);
            b.push(records as f64 / run_pipeline(&inproc, records)?);
            let scaled = pipeline_yaml(work, &input, "python", function, wide, wide);
            a2.push(records as f64 / run_pipeline(&scaled, records)?);
        }
        let (a, b, c, d, a2) = (median(a), median(b), median(c), median(d), median(a2));
        if function == "trivial" {
            sidecar_max = a;
        }
        emit(json!({
            "name": format!("python_udf_{function}"),
            "records": records,
            "record_bytes": 100,
            "rounds": ROUNDS,
            "a_sidecar_records_per_sec": a.round(),
            "b_inproc_records_per_sec": b.round(),
            "c_plain_loop_records_per_sec": c.round(),
            "d_fast_loop_records_per_sec": d.round(),
            "ratio_a_to_c": (a / c * 1000.0).round() / 1000.0,
            "ratio_b_to_c": (b / c * 1000.0).round() / 1000.0,
            "ratio_a_to_d": (a / d * 1000.0).round() / 1000.0,
            "ratio_b_to_d": (b / d * 1000.0).round() / 1000.0,
            "sidecar_workers": 1,
            format!("a_sidecar_{wide}_workers_records_per_sec"): a2.round(),
        }));
    }
    emit(latency(work, sidecar_max / 2.0)?);
    Ok(())
}

/// Sends batches of 64 records to one sidecar worker at `rate` records/s; the latency of each
/// batch is what every record in it waited for its result.
fn latency(work: &Path, rate: f64) -> Result<serde_json::Value> {
    let yaml = pipeline_yaml(work, &work.join("records.jsonl"), "python", "enrich", 1, 1);
    let spec = config::load_str(&yaml, "bench-py.yaml", headwater::udf::runtimes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(py) = spec.udfs[0].runtime.options::<python::PythonSpec>() else {
        bail!("expected a python udf");
    };
    let rt = python::start("latency", py)?;
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
        if out.iter().any(|o| o.is_err()) {
            bail!("the enrich function failed during the latency run");
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok(json!({
        "name": "python_udf_sidecar_latency",
        "rate_records_per_sec": rate.round(),
        "batch_records": batch,
        "batches": samples.len(),
        "p50_ms": (pct(0.50) * 1000.0).round() / 1000.0,
        "p99_ms": (pct(0.99) * 1000.0).round() / 1000.0,
    }))
}
