//! Wasm UDF benchmarks: the same maps over the same order records (~105 bytes of JSON), run
//! through `UdfRuntime::invoke_records`, the call the udf step makes, one task, batches of
//! 1024 records. Records are made as the file source makes them when a udf step comes first:
//! values with the lines they were decoded from.
//!
//! - `native`: a function compiled into the host, on the host's record values (what a
//!   built-in costs: a copy of each value for the function, no encoding);
//! - `native_sdk`: the Rust guest's own code compiled natively, called through the module
//!   encoding (records sent as JSON, decoded by the guest, results parsed back), without
//!   Wasm: what the encoding costs, so `wasm_rust` against it is what Wasm itself costs;
//! - `wasm_rust`, `wasm_go`: the guests of `host/tests/wasm/guest-{rust,go}` in the Wasm
//!   runtime (Wasmtime, one instance, one guest call per batch);
//! - `wasm_rust_encoded`: the Rust guest on records an earlier step changed (no source
//!   text: the host encodes each value as JSON);
//! - `encode_only` (trivial only): the host encoding changed records and nothing else.
//!
//! Two maps: `trivial` (the record unchanged, not decoded: the runtime's fixed cost per
//! record) and `realistic` (parse an order, convert its currency, bucket its time, serialize
//! the result). Prints records/s, ns per record, the overhead per record over `native` and
//! the ratios; figures are medians of interleaved rounds. Then the cost of one guest call
//! (batches of one record).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use headwater::record::{Origin, Record};
use headwater::udf::native::NativeRuntime;
use headwater::udf::wasm::{WasmRuntime, WasmSpec};
use headwater::udf::{
    FunctionError, FunctionInfo, FunctionKind, RecordOutcome, RuntimeError, UdfRuntime,
};
use headwater::value::{Object, Value};

const BATCH: usize = 1024;
const ROUNDS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Builds the guests with the project's script; returns (Rust guest, Go guest).
fn build_guests(work: &Path) -> Result<(PathBuf, PathBuf)> {
    let out = work.join("wasm-modules");
    let status = Command::new("scripts/build-wasm-examples.sh")
        .args(["--quiet", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running scripts/build-wasm-examples.sh (run the benchmark from the repository root: ./dev bench wasm)")?;
    if !status.success() {
        bail!("scripts/build-wasm-examples.sh failed");
    }
    Ok((out.join("guest-rust.wasm"), out.join("guest-go.wasm")))
}

/// `n` orders, as the file source makes them when the first step is a udf step: values with
/// the lines they were decoded from.
fn orders(n: usize) -> Vec<Record> {
    const CURRENCIES: [&str; 3] = ["USD", "EUR", "GBP"];
    (0..n)
        .map(|i| {
            let ts = 1_767_225_600_000i64 + i as i64 * 13;
            let text = format!(
                r#"{{"order_id":{i},"customer":"c{:04}","price":{}.{:02},"quantity":{},"currency":"{}","ts":{ts}}}"#,
                i * 7919 % 5000,
                i % 97 + 1,
                i % 100,
                i % 5 + 1,
                CURRENCIES[i % 3],
            );
            let value = Value::from_json(text.as_bytes()).expect("valid json");
            Record::new(value, ts, Origin::default()).with_source_text(text.as_bytes().into())
        })
        .collect()
}

/// The same records after a step that changed them: no source text, so runtimes encode
/// their values.
fn without_text(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .map(|r| Record::new(r.value().clone(), r.time, r.origin))
        .collect()
}

fn field<'a>(o: &'a Object, name: &str) -> Result<&'a Value, FunctionError> {
    o.get(name)
        .ok_or_else(|| FunctionError::permanent(format!("field `{name}` is missing")))
}

fn number(o: &Object, name: &str) -> Result<f64, FunctionError> {
    field(o, name)?
        .as_f64()
        .ok_or_else(|| FunctionError::permanent(format!("field `{name}` is not a number")))
}

fn int(o: &Object, name: &str) -> Result<i64, FunctionError> {
    match field(o, name)? {
        Value::Int(i) => Ok(*i),
        _ => Err(FunctionError::permanent(format!(
            "field `{name}` is not an integer"
        ))),
    }
}

/// The realistic map, written against the host's values (a native UDF would be).
struct Realistic;

impl headwater_sdk::Function for Realistic {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        let o = record
            .as_object()
            .ok_or_else(|| FunctionError::permanent("the record is not an object"))?;
        let rate = match field(o, "currency")?.as_str() {
            Some("USD") => 1.0,
            Some("EUR") => 1.08,
            Some("GBP") => 1.27,
            other => {
                return Err(FunctionError::permanent(format!(
                    "unknown currency {other:?}"
                )))
            }
        };
        let revenue =
            (number(o, "price")? * int(o, "quantity")? as f64 * rate * 100.0).round() / 100.0;
        let mut out = Object::with_capacity(5);
        out.push_unchecked("order_id", Value::Int(int(o, "order_id")?));
        out.push_unchecked("customer", field(o, "customer")?.clone());
        out.push_unchecked("revenue_usd", Value::Float(revenue));
        out.push_unchecked("minute", Value::Int(int(o, "ts")? / 60_000 * 60_000));
        out.push_unchecked("large", Value::Bool(revenue >= 100.0));
        Ok(vec![Value::Object(out)])
    }
}

struct Trivial;

impl headwater_sdk::Function for Trivial {
    fn kind(&self) -> FunctionKind {
        FunctionKind::Map
    }
    fn call(&self, record: Value) -> Result<Vec<Value>, FunctionError> {
        Ok(vec![record])
    }
}

/// The Rust guest's functions compiled into this benchmark, called through the module
/// encoding exactly as the Wasm runtime calls a module (minus Wasm).
struct NativeSdk;

impl UdfRuntime for NativeSdk {
    fn name(&self) -> &str {
        "native_sdk"
    }
    fn functions(&self) -> Vec<FunctionInfo> {
        Vec::new()
    }
    fn invoke(
        &self,
        function: &str,
        inputs: Vec<Value>,
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        Ok(self.call(function, inputs, None))
    }

    fn invoke_records(
        &self,
        function: &str,
        records: &[Record],
    ) -> Result<Vec<RecordOutcome>, RuntimeError> {
        let inputs = records.iter().map(|r| r.value().clone()).collect();
        Ok(self.call(function, inputs, Some(records)))
    }
}

impl NativeSdk {
    /// Writes `inputs` (or `records`, whose source text is sent as it is, like the Wasm
    /// runtime does) as a batch, runs the guest code on it and decodes the results.
    fn call(
        &self,
        function: &str,
        inputs: Vec<Value>,
        records: Option<&[Record]>,
    ) -> Vec<RecordOutcome> {
        let fns = headwater_wasm_test_guest::headwater_functions();
        let index = fns
            .iter()
            .position(|f| f.name() == function)
            .unwrap_or(usize::MAX);
        let mut batch = Vec::with_capacity(64 * inputs.len());
        batch.extend_from_slice(&(inputs.len() as u32).to_le_bytes());
        for (i, v) in inputs.iter().enumerate() {
            let at = batch.len();
            batch.extend_from_slice(&[0; 4]);
            match records {
                Some(records) => records[i].write_json(&mut batch),
                None => v.write_json(&mut batch),
            }
            let len = (batch.len() - at - 4) as u32;
            batch[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        let results = headwater_wasm_guest::call_batch(fns, index, &batch).unwrap_or_default();
        // The same decoding as the Wasm runtime's: one outcome per record (no failures here).
        let mut at = 4;
        let mut out = Vec::with_capacity(inputs.len());
        let u32_at = |b: &[u8], at: usize| -> u32 {
            b.get(at..at + 4)
                .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        for mut input in inputs {
            let status = results.get(at).copied().unwrap_or(2);
            if status != 0 {
                out.push(Err(FunctionError::permanent("the function failed")));
                break;
            }
            let n = u32_at(&results, at + 1);
            at += 5;
            let mut values = Vec::with_capacity(n as usize);
            for i in 0..n {
                let len = u32_at(&results, at);
                at += 4;
                if len == u32::MAX {
                    // As the Wasm runtime: the last use of the input takes it.
                    values.push(Ok(match i + 1 == n {
                        true => std::mem::take(&mut input),
                        false => input.clone(),
                    }));
                    continue;
                }
                let end = at + len as usize;
                values.push(
                    Value::from_json(results.get(at..end).unwrap_or_default())
                        .map_err(|e| FunctionError::permanent(e.to_string())),
                );
                at = end;
            }
            out.push(values.into_iter().collect());
        }
        out
    }
}

/// The host's side of the encoding alone: each batch written as length-prefixed JSON into a
/// reused buffer, the records passed on unchanged. The floor of the trivial map in version 1
/// of the ABI; `wasm_rust` minus this is the Wasm call itself.
struct EncodeOnly(std::sync::Mutex<Vec<u8>>);

impl UdfRuntime for EncodeOnly {
    fn name(&self) -> &str {
        "encode_only"
    }
    fn functions(&self) -> Vec<FunctionInfo> {
        Vec::new()
    }
    fn invoke(&self, _: &str, inputs: Vec<Value>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        if let Ok(mut batch) = self.0.lock() {
            batch.clear();
            batch.extend_from_slice(&(inputs.len() as u32).to_le_bytes());
            for v in &inputs {
                let at = batch.len();
                batch.extend_from_slice(&[0; 4]);
                v.write_json(&mut batch);
                let len = (batch.len() - at - 4) as u32;
                batch[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            std::hint::black_box(&batch);
        }
        Ok(inputs.into_iter().map(|v| Ok(vec![v])).collect())
    }
}

/// Seconds to run every batch through `function`, as the udf step calls it
/// (`invoke_records`: runtimes that need values of their own copy them, inside the time).
fn time(rt: &dyn UdfRuntime, function: &str, batches: &[Vec<Record>]) -> Result<f64> {
    let started = Instant::now();
    for batch in batches {
        let out = rt.invoke_records(function, batch)?;
        ensure!(
            out.len() == batch.len(),
            "{} results for {} records",
            out.len(),
            batch.len()
        );
        if let Some(Err(e)) = out.first() {
            bail!("{function} failed: {}", e.message);
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The outputs of the first batch, as JSON with numbers as floats (Go writes `108` where Rust
/// writes `108.0`).
fn outputs(
    rt: &dyn UdfRuntime,
    function: &str,
    batch: &[Record],
) -> Result<Vec<serde_json::Value>> {
    let out = rt.invoke_records(function, batch)?;
    let mut texts = Vec::new();
    for o in out {
        for v in o.map_err(|e| anyhow::anyhow!("{function}: {}", e.message))? {
            let mut j: serde_json::Value = serde_json::from_str(&v.to_json_string())?;
            if let Some(m) = j.as_object_mut() {
                for x in m.values_mut() {
                    if let Some(f) = x.as_f64() {
                        *x = json!(f);
                    }
                }
            }
            texts.push(j);
        }
    }
    Ok(texts)
}

fn spec(module: &Path) -> WasmSpec {
    WasmSpec {
        module: module.to_path_buf(),
        memory: 256 << 20,
        timeout: Duration::from_secs(10),
        allow_clock: false,
        allow_random: false,
    }
}

pub fn run(work: &Path, records: u64, emit: &dyn Fn(serde_json::Value)) -> Result<()> {
    let (rust_module, go_module) = build_guests(work)?;
    let load = |m: &Path| -> Result<Arc<dyn UdfRuntime>> {
        let bytes = std::fs::read(m).with_context(|| format!("reading {}", m.display()))?;
        Ok(Arc::new(WasmRuntime::from_bytes(
            "bench",
            &bytes,
            &spec(m),
        )?))
    };
    let mut native = NativeRuntime::default();
    native.register("trivial", Trivial);
    native.register("realistic", Realistic);
    let wasm_rust = load(&rust_module)?;
    // (name, runtime, whether records have their source text)
    let variants: Vec<(&str, Arc<dyn UdfRuntime>, bool)> = vec![
        ("native", Arc::new(native), true),
        ("native_sdk", Arc::new(NativeSdk), true),
        ("wasm_rust", wasm_rust.clone(), true),
        ("wasm_go", load(&go_module)?, true),
        ("wasm_rust_encoded", wasm_rust, false),
    ];
    let encode_only = EncodeOnly(std::sync::Mutex::new(Vec::new()));
    let all = orders(records as usize);
    let batches: Vec<Vec<Record>> = all.chunks(BATCH).map(<[Record]>::to_vec).collect();
    let changed: Vec<Vec<Record>> = batches.iter().map(|b| without_text(b)).collect();
    let inputs = |text: bool| if text { &batches } else { &changed };
    let n = all.len() as f64;
    for function in ["trivial", "realistic"] {
        let want = outputs(variants[0].1.as_ref(), function, &batches[0])?;
        for (name, rt, text) in &variants[1..] {
            ensure!(
                outputs(rt.as_ref(), function, &inputs(*text)[0])? == want,
                "{name} {function}: the outputs differ from the native function's"
            );
            time(rt.as_ref(), function, &inputs(*text)[..1])?; // warm up (instances, caches)
        }
        let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); variants.len() + 1];
        for _ in 0..ROUNDS {
            for (i, (_, rt, text)) in variants.iter().enumerate() {
                seconds[i].push(time(rt.as_ref(), function, inputs(*text))?);
            }
            if function == "trivial" {
                seconds[variants.len()].push(time(&encode_only, function, &changed)?);
            }
        }
        let medians: Vec<f64> = seconds
            .into_iter()
            .map(|s| if s.is_empty() { f64::NAN } else { median(s) })
            .collect();
        let ns = |s: f64| s * 1e9 / n;
        let mut line = json!({
            "name": format!("wasm_udf_{function}"),
            "records": records,
            "batch": BATCH,
            "parallelism": 1,
            "rounds": ROUNDS,
        });
        for (i, (name, _, _)) in variants.iter().enumerate() {
            line[name] = json!({
                "records_per_sec": (n / medians[i]).round(),
                "ns_per_record": (ns(medians[i]) * 10.0).round() / 10.0,
                "overhead_ns_over_native": ((ns(medians[i]) - ns(medians[0])) * 10.0).round() / 10.0,
                "ratio_to_native": super::round3(medians[i] / medians[0]),
            });
        }
        line["ratio_wasm_rust_to_native_sdk"] = json!(super::round3(medians[2] / medians[1]));
        if function == "trivial" {
            let s = medians[variants.len()];
            line["encode_only"] = json!({
                "ns_per_record": (ns(s) * 10.0).round() / 10.0,
                "overhead_ns_over_native": ((ns(s) - ns(medians[0])) * 10.0).round() / 10.0,
            });
        }
        emit(line);
    }
    // The fixed cost of a guest call: 20k calls of one record each.
    let single: Vec<Vec<Record>> = all.iter().take(20_000).map(|r| vec![r.clone()]).collect();
    let mut line = json!({ "name": "wasm_udf_call", "calls": single.len() });
    for (name, rt, _) in &variants[2..4] {
        let s = median(
            (0..3)
                .map(|_| time(rt.as_ref(), "trivial", &single))
                .collect::<Result<Vec<_>>>()?,
        );
        line[*name] = json!({ "ns_per_call": (s * 1e9 / single.len() as f64).round() });
    }
    emit(line);
    Ok(())
}
