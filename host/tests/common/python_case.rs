//! The Python UDF tests' case: a module of functions (`my_udfs.py`), a pipeline around
//! chosen steps, and running it with the SDK's interpreter.

use std::path::Path;
use std::process::Command;

use super::python;
use super::udf::dead_letters;

pub fn headwater(dir: &Path) -> Command {
    let mut c = super::headwater_in(dir);
    c.env("HEADWATER_PYTHON", python());
    c
}

/// `headwater dlq replay pipeline.yaml --group GROUP EXTRA...` in `dir`.
pub fn dlq_replay(dir: &Path, group: &str, extra: &[&str]) -> std::process::Output {
    headwater(dir)
        .args(["dlq", "replay", "pipeline.yaml", "--group", group])
        .args(extra)
        .output()
        .expect("headwater dlq replay")
}

/// The dead letters of pipeline `py`.
pub fn dlq(dir: &Path) -> Vec<serde_json::Value> {
    dead_letters(dir, "py")
}

pub const UDFS: &str = r#"
import os, time
import headwater as hw

@hw.map
def enrich(r):
    if r["n"] % 97 == 13:
        raise ValueError(f"bad record {r['n']}")
    return {"n": r["n"], "square": r["n"] * r["n"]}

@hw.filter
def even(r):
    return r["n"] % 2 == 0

@hw.flat_map
def twice(r):
    yield {"n": r["n"], "copy": 1}
    yield {"n": r["n"], "copy": 2}

@hw.map
def enrich_fixable(r):
    if r["n"] % 97 == 13 and not r.get("fixed"):
        raise ValueError(f"bad record {r['n']}")
    return r

@hw.flat_map
def fix(req):
    record, error = req["record"], req["error"]
    if error["error_type"] != "ValueError" or error["step"] != "steps[0] udf enrich_fixable":
        raise RuntimeError(f"unexpected envelope {error}")
    if record["n"] % 2 == 0:
        yield {**record, "fixed": True}
    elif record["n"] % 3 == 0:
        return
    else:
        raise ValueError(f"cannot fix {record['n']}")

@hw.map
def tag(r):
    return {"n": r["n"], "k": "k" + str(r["n"] % 3)}

@hw.map
def slow(r):
    time.sleep(0.0002)
    return r

@hw.keyed_process
def bucket_totals(r, ctx):
    # State: {bucket end: {"total", "count"}} for this key's open buckets.
    buckets = dict(ctx.state or {})
    if r is None:  # a timer fired: emit that bucket and forget it
        done = buckets.pop(str(ctx.timer))
        yield {"user": ctx.key, "bucket_end": ctx.timer, **done}
    else:
        end = r["ts"] // 100 * 100 + 99
        b = buckets.get(str(end), {"total": 0, "count": 0})
        buckets[str(end)] = {"total": b["total"] + r["n"], "count": b["count"] + 1}
        ctx.set_timer(end)
    if buckets:
        ctx.state = buckets
    else:
        ctx.clear()

@hw.keyed_process
def strict_buckets(r, ctx):
    if r is not None and r["n"] % 50 == 7 and not r.get("fixed"):
        raise ValueError(f"unchecked record {r['n']}")
    yield from bucket_totals(r, ctx)

@hw.flat_map
def fix_keyed(req):
    record = req["record"]
    if record["n"] % 100 == 7:
        yield {**record, "fixed": True}
    else:
        raise ValueError("cannot fix")

@hw.window_aggregate(name="spread")
class Spread:
    def create(self):
        return {"lo": None, "hi": None}

    def add(self, acc, r):
        if r.get("poison"):
            raise ValueError(f"poisoned record {r['n']}")
        lo, hi = acc["lo"], acc["hi"]
        return {"lo": r["n"] if lo is None else min(lo, r["n"]), "hi": r["n"] if hi is None else max(hi, r["n"])}

    def merge(self, a, b):
        merged = self.create()
        for acc in (a, b):
            merged = self.add(merged, {"n": acc["lo"]}) if acc["lo"] is not None else merged
            merged = self.add(merged, {"n": acc["hi"]}) if acc["hi"] is not None else merged
        return merged

    def result(self, acc):
        return None if acc["lo"] is None else acc["hi"] - acc["lo"]

@hw.map
def sleepy(r):
    time.sleep(0.002)
    return r

@hw.map
def crash_on_13(r):
    if r["n"] == 13:
        os._exit(1)
    return r

@hw.map
def identity(r):
    return r

def _note_call(r):
    path = os.environ.get("CALLS_FILE", "")
    if path:
        with open(path, "a") as f:
            f.write(f"{r['n']}\n")

@hw.map
def down_on_fives(r):
    # Used twice: the first step fails multiples of 10, the second the other multiples of 5.
    _note_call(r)
    steps = r.get("steps", 0)
    if r["n"] % 5 == 0 and (r["n"] % 10 == 0) == (steps == 0):
        raise hw.TransientError(f"service down for {r['n']}")
    return {**r, "steps": steps + 1}

@hw.map
def call_service(r):
    if os.path.exists(os.environ.get("DOWN_MARKER", "/nonexistent")):
        raise hw.TransientError("connection refused")
    return r

@hw.window_aggregate(name="count_via_service")
class CountViaService:
    def create(self):
        return 0

    def add(self, acc, r):
        if os.path.exists(os.environ.get("DOWN_MARKER", "/nonexistent")):
            raise hw.TransientError("connection refused")
        return acc + 1

    def merge(self, a, b):
        return a + b

    def result(self, acc):
        return acc

@hw.map
def exact(r):
    if r.get("fail"):
        raise ValueError("asked to fail")
    return {"n": r["m"], "exact": r["big"] == 18446744073709551615 and type(r["big"]) is int}

@hw.map
def hang_once(r):
    marker = os.environ.get("HANG_MARKER", "")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(3600)
    return r
"#;

/// The `udf_version` of the functions in `my_udfs.py`: the runtime and the first 16 hex digits
/// of the SHA-256 of the module's name and source, as the Python worker computes it.
pub fn python_code_version() -> String {
    let mut bytes = b"my_udfs\0".to_vec();
    bytes.extend_from_slice(UDFS.as_bytes());
    bytes.push(0);
    let digest = headwater::udf::wasm::sha256_hex(&bytes);
    format!("python:sha256:{}", &digest[..16])
}

pub fn write_case(dir: &Path, records: u64, steps: &str, extra_udf: &str) {
    std::fs::write(dir.join("my_udfs.py"), UDFS).expect("udfs");
    let mut input = String::new();
    for n in 0..records {
        input.push_str(&format!("{{\"ts\":{n},\"n\":{n}}}\n"));
    }
    std::fs::write(dir.join("input.jsonl"), input).expect("input");
    let pipeline = format!(
        "name: py\nparallelism: 2\nsources:\n  in: {{ type: file, path: input.jsonl, event_time: {{ field: ts }} }}\n\
udfs:\n  enrich: {{ runtime: python, module: my_udfs, function: enrich }}\n  even: {{ runtime: python, module: my_udfs, function: even, kind: filter }}\n  twice: {{ runtime: python, module: my_udfs, function: twice, kind: flat_map }}\n  slow: {{ runtime: python, module: my_udfs, function: slow, workers: 2 }}\n{extra_udf}\
steps:\n{steps}sinks:\n  out: {{ type: file, path: out.jsonl }}\noutput: out\ntuning: {{ batch_size: 256, progress_interval: 0s }}\n"
    );
    std::fs::write(dir.join("pipeline.yaml"), pipeline).expect("pipeline");
}

/// Runs `headwater` with `args` in `dir`; fails the test unless it succeeds; its stderr.
pub fn run_for_stderr(dir: &Path, args: &[&str]) -> String {
    let out = headwater(dir).args(args).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Runs `pipeline.yaml` in `dir` quietly from scratch (each case writes new input) and
/// fails the test with the host's stderr if the run fails.
pub fn run_ok(dir: &Path) {
    super::run_ok(headwater(dir).args(["run", "pipeline.yaml", "-q", "--fresh"]));
}
