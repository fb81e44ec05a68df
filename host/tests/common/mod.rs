//! Helpers shared by the end-to-end tests: inputs and their oracles, reading committed
//! output, and running a pipeline with kills and crash points; in modules of their own,
//! starting the binary (`bin`), polling waits (`wait`), ports, control API runs and requests
//! (`control`), a MinIO server (`s3`) and what the UDF tests share (`udf`).
#![allow(dead_code)] // each test file uses some of them

pub mod bin;
pub mod control;
pub mod ports;
pub mod python_case;
pub mod s3;
pub mod udf;
pub mod wait;

#[allow(unused_imports)] // not every test file uses every helper
pub use bin::*;
#[allow(unused_imports)]
pub use wait::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift), so inputs and kill times are repeatable.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One input record: (file, user, event time ms, value).
pub type Input = (usize, String, i64, i64);

/// Writes `files` JSON-lines files with `per_file` records each. Time advances 10 ms per
/// record per file, with up to 2 s of disorder (the pipelines allow 5 s), so no record is
/// ever late. Users come in bursts (each minute a random subset is active), so session
/// windows open and close.
pub fn write_input(dir: &Path, files: usize, per_file: usize, seed: u64) -> Vec<Input> {
    write_input_with_bad_lines(dir, files, per_file, seed, 0)
}

/// Like [`write_input`], with a line that is not JSON after every `bad_every` records
/// (0: none); each must reach the dead-letter queue exactly once.
pub fn write_input_with_bad_lines(
    dir: &Path,
    files: usize,
    per_file: usize,
    seed: u64,
    bad_every: usize,
) -> Vec<Input> {
    let mut rng = Rng(seed);
    let mut all = Vec::with_capacity(files * per_file);
    std::fs::create_dir_all(dir.join("input")).expect("mkdir");
    for f in 0..files {
        let mut text = String::with_capacity(per_file * 48);
        for i in 0..per_file {
            let base = 1_767_225_600_000 + (i as i64) * 10;
            let t = base + rng.below(2000) as i64;
            let minute = (base / 60_000) as u64;
            let user = (minute * 7 + rng.below(40)) % 400;
            let v = rng.below(100) as i64;
            text.push_str(&format!("{{\"ts\":{t},\"user\":\"u{user}\",\"v\":{v}}}\n"));
            if bad_every > 0 && i % bad_every == bad_every - 1 {
                text.push_str(&format!("not json {f}-{i}\n"));
            }
            all.push((f, format!("u{user}"), t, v));
        }
        std::fs::write(dir.join(format!("input/part-{f}.jsonl")), text).expect("write input");
    }
    all
}

pub fn pipeline(dir: &Path, name: &str, window: &str) -> PathBuf {
    pipeline_at(dir, name, window, "")
}

/// A pipeline whose checkpoints go to `location` (empty: the default local folder).
pub fn pipeline_at(dir: &Path, name: &str, window: &str, location: &str) -> PathBuf {
    let location = if location.is_empty() {
        String::new()
    } else {
        format!(", location: \"{location}\"")
    };
    pipeline_with(dir, name, window, &location)
}

/// A pipeline with extra `checkpoint` settings (`, key: value`).
pub fn pipeline_with(dir: &Path, name: &str, window: &str, location: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nparallelism: 2\nsources:\n  events:\n    type: file\n    path: input/*.jsonl\n    event_time: {{ field: ts, max_out_of_orderness: 5s }}\n\
steps:\n  - key_by: user\n  - window:\n      {window}\n      aggregates: {{ n: count(), total: sum(v) }}\n\
sinks:\n  out: {{ type: file, path: out/{name}.jsonl }}\noutput: out\n\
checkpoint: {{ interval: 100ms{location} }}\ntuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("write pipeline");
    p
}

/// Key → (window start, window end, count, sum), the output rows as a sorted multiset.
pub type Rows = Vec<(String, i64, i64, i64, i64)>;

pub fn tumbling_oracle(input: &[Input], size: i64) -> Rows {
    let mut acc: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for (_, user, t, v) in input {
        let start = t - t.rem_euclid(size);
        let e = acc.entry((user.clone(), start)).or_default();
        e.0 += 1;
        e.1 += v;
    }
    let mut rows: Rows = acc
        .into_iter()
        .map(|((u, s), (n, total))| (u, s, s + size, n, total))
        .collect();
    rows.sort();
    rows
}

pub fn session_oracle(input: &[Input], gap: i64) -> Rows {
    let mut by_user: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (_, user, t, v) in input {
        by_user.entry(user).or_default().push((*t, *v));
    }
    let mut rows = Rows::new();
    for (user, mut events) in by_user {
        events.sort();
        let mut current: Option<(i64, i64, i64, i64)> = None; // start, end, n, total
        for (t, v) in events {
            current = match current {
                Some((s, e, n, total)) if t < e => Some((s, e.max(t + gap), n + 1, total + v)),
                Some(done) => {
                    rows.push((user.to_string(), done.0, done.1, done.2, done.3));
                    Some((t, t + gap, 1, v))
                }
                None => Some((t, t + gap, 1, v)),
            };
        }
        if let Some(done) = current {
            rows.push((user.to_string(), done.0, done.1, done.2, done.3));
        }
    }
    rows.sort();
    rows
}

/// Every committed part of sink file `out/<name>.jsonl`, as rows.
pub fn committed_rows(dir: &Path, name: &str) -> Rows {
    let mut rows = Rows::new();
    let out = dir.join("out");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&out)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    parts.sort();
    for part in parts {
        let file = part
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if !(file.starts_with(&format!("{name}-")) && file.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(&part).expect("read part");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            rows.push((
                v["user"].as_str().expect("user").to_string(),
                v["window_start"].as_i64().expect("start"),
                v["window_end"].as_i64().expect("end"),
                v["n"].as_i64().expect("n"),
                v["total"].as_i64().expect("total"),
            ));
        }
    }
    rows.sort();
    rows
}

/// No record became a dead letter (the inputs have none, and none is ever late).
pub fn assert_no_dead_letters(dir: &Path, name: &str) {
    let dlq = std::fs::read_to_string(dir.join(format!(".headwater/{name}/dlq.jsonl")))
        .unwrap_or_default();
    assert!(
        dlq.is_empty(),
        "{name}: {} dead letters, first: {}",
        dlq.lines().count(),
        dlq.lines().next().unwrap_or_default()
    );
}

pub fn assert_same(got: &Rows, want: &Rows, what: &str) {
    if got == want {
        return;
    }
    let mut extra = got.clone();
    let mut missing = Vec::new();
    for row in want {
        match extra.iter().position(|r| r == row) {
            Some(i) => {
                extra.remove(i);
            }
            None => missing.push(row.clone()),
        }
    }
    panic!(
        "{what}: committed output differs from the oracle: {} rows vs {} expected; {} missing (first: {:?}), {} extra or duplicated (first: {:?}); missing: {:?}",
        got.len(),
        want.len(),
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        missing.iter().take(12).collect::<Vec<_>>()
    );
}

/// Runs to completion, or kills the run after `after`. Returns the exit status and
/// whether the kill landed while it was still running.
pub fn run_once(
    dir: &Path,
    pipeline: &Path,
    parallelism: usize,
    after: Option<Duration>,
    crash_at: Option<&str>,
    env: &[(String, String)],
) -> (ExitStatus, bool, String) {
    let mut cmd = headwater();
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.current_dir(dir)
        .arg("run")
        .arg(pipeline)
        .args(["-q", "-p", &parallelism.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(point) = crash_at {
        cmd.env("HEADWATER_CRASH_AT", point);
    }
    let mut child = cmd.spawn().expect("spawn headwater");
    let killed = after.is_some_and(|after| bin::kill_after(&mut child, after));
    let out = child.wait_with_output().expect("wait");
    (
        out.status,
        killed,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills the pipeline at `kills` random moments (and, every fifth attempt, makes it abort at
/// a chosen point of a checkpoint), restarting it each time, then lets it finish.
pub fn chaos(
    dir: &Path,
    pipeline: &Path,
    kills: usize,
    seed: u64,
    parallelisms: &[usize],
) -> usize {
    chaos_with(dir, pipeline, kills, seed, parallelisms, &[])
}

pub fn chaos_with(
    dir: &Path,
    pipeline: &Path,
    kills: usize,
    seed: u64,
    parallelisms: &[usize],
    env: &[(String, String)],
) -> usize {
    let mut rng = Rng(seed);
    let points = ["uploaded", "manifest-written", "committed-one"];
    let (mut landed, mut attempts, mut injected) = (0usize, 0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "chaos loop took too long");
        let p = parallelisms[attempts % parallelisms.len()];
        attempts += 1;
        if attempts % 5 == 0 && injected < points.len() {
            let point = points[injected];
            injected += 1;
            let (status, _, stderr) = run_once(dir, pipeline, p, None, Some(point), env);
            assert!(
                !status.success() && stderr.contains("aborting on purpose"),
                "the run should have aborted at `{point}`: {status:?} {stderr}"
            );
            continue;
        }
        if landed >= kills {
            break;
        }
        let after = Duration::from_millis(20 + rng.below(130));
        let (status, killed, stderr) = run_once(dir, pipeline, p, Some(after), None, env);
        if killed {
            landed += 1;
        } else {
            assert!(status.success(), "run failed: {status:?}\n{stderr}");
            break; // finished before the kill: the input is done
        }
    }
    let (status, _, stderr) = run_once(dir, pipeline, parallelisms[0], None, None, env);
    assert!(status.success(), "final run failed: {stderr}");
    landed
}

/// A pass-through pipeline (`pass.yaml`, unaligned checkpoints every 100 ms, all kept) whose
/// single file sink is its bottleneck, so results queue in front of it.
pub fn passthrough_pipeline(dir: &Path) -> PathBuf {
    let p = dir.join("pass.yaml");
    std::fs::write(
        &p,
        "name: pass\nparallelism: 2\nsources:\n  events:\n    type: file\n    path: input/*.jsonl\n    event_time: { field: ts, max_out_of_orderness: 5s }\n\
steps:\n  - map: { compute: { w: \"v * 2\" } }\n\
sinks:\n  out: { type: file, path: out/pass.jsonl }\noutput: out\n\
checkpoint: { interval: 100ms, mode: unaligned, retain: 1000 }\ntuning: { progress_interval: 0s }\n",
    )
    .expect("write pipeline");
    p
}

/// Every committed line of sink file `out/<name>.jsonl` of the pass-through pipeline, as
/// (user, event time, value) (checking that `w` is twice `v`), sorted.
pub fn committed_passthrough(dir: &Path, name: &str) -> Vec<(String, i64, i64)> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir.join("out"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    parts.retain(|p| {
        p.file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with(&format!("{name}-")) && f.ends_with(".jsonl"))
    });
    let mut rows = Vec::new();
    for part in parts {
        for line in std::fs::read_to_string(&part).expect("read part").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            let value = v["v"].as_i64().expect("v");
            assert_eq!(v["w"].as_i64(), Some(value * 2), "{line}");
            rows.push((
                v["user"].as_str().expect("user").to_string(),
                v["ts"].as_i64().expect("ts"),
                value,
            ));
        }
    }
    rows.sort();
    rows
}

/// The id of the newest checkpoint of pipeline `name` in `dir` (0: none yet). Old manifests
/// are deleted, so this counts ids, not files.
pub fn newest_checkpoint(dir: &Path, name: &str) -> u64 {
    let manifests = dir.join(format!(".headwater/{name}/checkpoints/manifests"));
    std::fs::read_dir(manifests)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json")?.parse().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The variable that holds the second source task's barriers back by `ms` milliseconds.
pub fn barrier_lag(ms: u64) -> Vec<(String, String)> {
    vec![("HEADWATER_TEST_BARRIER_LAG".into(), ms.to_string())]
}

/// Runs `pipeline` until it aborts at `point` (`POINT:N`), then to the end; both runs at
/// parallelism `p` with `env`.
pub fn crash_then_resume(
    dir: &Path,
    pipeline: &Path,
    p: usize,
    point: &str,
    env: &[(String, String)],
) {
    let (status, _, stderr) = run_once(dir, pipeline, p, None, Some(point), env);
    assert!(
        !status.success() && stderr.contains("aborting on purpose"),
        "the run should have aborted at `{point}`: {status:?} {stderr}"
    );
    let (status, _, stderr) = run_once(dir, pipeline, p, None, None, env);
    assert!(status.success(), "resumed run failed: {stderr}");
}
