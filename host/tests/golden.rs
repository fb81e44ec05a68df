//! Golden tests: example pipelines with input files and expected output files, run through
//! the real `headwater` binary.
//!
//! Each case is a folder (under `host/tests/golden/`, plus every `examples/*` that has an
//! `expected/` folder) holding `pipeline.yaml`, its inputs, and `expected/`:
//! - `expected/<file>.jsonl`: must equal `out/<file>.jsonl` after the run, compared as sorted
//!   lines (the order of results across keys is not defined);
//! - `expected/dlq.jsonl`: must equal the dead-letter file, ignoring `failed_at`;
//! - `expected/stdout.jsonl`: must equal what the run printed on stdout (sorted lines);
//! - `expected/exit_code`: the expected exit code (default 0);
//! - `expected/stderr_contains.txt`: each non-empty line must appear in stderr.
//!
//! The case folder is copied to a temporary folder first, so runs never write into the repo.

use std::fs;
use std::path::{Path, PathBuf};

mod common;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn cases() -> Vec<PathBuf> {
    let root = repo_root();
    let mut dirs = Vec::new();
    for parent in [root.join("host/tests/golden"), root.join("examples")] {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().join("expected").is_dir() && e.path().join("pipeline.yaml").is_file() {
                dirs.push(e.path());
            }
        }
    }
    dirs.sort();
    dirs
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for e in fs::read_dir(from).expect("read dir").flatten() {
        let name = e.file_name();
        if name == "out" || name == ".headwater" {
            continue;
        }
        let target = to.join(&name);
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else if name == "go.mod" {
            // A Go module of the case (a `package:` UDF) may reach this checkout's SDK through
            // a relative `replace`: keep it pointing at the original place.
            let text = fs::read_to_string(e.path()).expect("read go.mod");
            fs::write(&target, absolute_replaces(&text, from)).expect("write go.mod");
        } else {
            fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

/// `go.mod` text with each relative `replace ... => ./path` made absolute against `dir`.
fn absolute_replaces(text: &str, dir: &Path) -> String {
    text.lines()
        .map(|line| match line.split_once("=> ") {
            Some((head, path))
                if line.trim_start().starts_with("replace") && path.starts_with('.') =>
            {
                format!("{head}=> {}", dir.join(path.trim()).display())
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Parses JSON lines and removes fields that differ between runs.
fn normalized_dlq(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("dlq line is JSON");
            if let Some(o) = v.as_object_mut() {
                o.remove("failed_at");
                o.remove("first_failed_at");
            }
            v.to_string()
        })
        .collect();
    out.sort();
    out
}

fn run_case(case: &Path) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let work = tmp.path().join("case");
    copy_dir(case, &work);
    let output = common::headwater()
        .arg("run")
        .arg("pipeline.yaml")
        .arg("--quiet")
        .current_dir(&work)
        .output()
        .map_err(|e| format!("cannot start headwater: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let expected_dir = case.join("expected");
    let expected_code: i32 = fs::read_to_string(expected_dir.join("exit_code"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let code = output.status.code().unwrap_or(-1);
    if code != expected_code {
        return Err(format!(
            "exit code {code}, expected {expected_code}\nstderr:\n{stderr}"
        ));
    }
    for e in fs::read_dir(&expected_dir)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let expected = fs::read_to_string(e.path()).map_err(|e| e.to_string())?;
        match name.as_str() {
            "exit_code" => {}
            "stderr_contains.txt" => {
                for needle in expected.lines().filter(|l| !l.trim().is_empty()) {
                    if !stderr.contains(needle) {
                        return Err(format!("stderr lacks `{needle}`; stderr was:\n{stderr}"));
                    }
                }
            }
            "stdout.jsonl" => {
                if sorted_lines(&stdout) != sorted_lines(&expected) {
                    return Err(format!(
                        "stdout differs:\n--- got\n{stdout}\n--- expected\n{expected}"
                    ));
                }
            }
            "dlq.jsonl" => {
                let dlq = fs::read_to_string(
                    work.join(".headwater")
                        .join(pipeline_name(&work))
                        .join("dlq.jsonl"),
                )
                .map_err(|e| format!("reading the DLQ: {e}"))?;
                if normalized_dlq(&dlq) != normalized_dlq(&expected) {
                    return Err(format!(
                        "DLQ differs:\n--- got\n{dlq}\n--- expected\n{expected}"
                    ));
                }
            }
            other => {
                let got =
                    headwater::connectors::files::read_committed(&work.join("out").join(other))
                        .map_err(|e| format!("reading out/{other}: {e}"))?;
                if sorted_lines(&got) != sorted_lines(&expected) {
                    return Err(format!(
                        "out/{other} differs:\n--- got\n{got}\n--- expected\n{expected}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn pipeline_name(work: &Path) -> String {
    let text = fs::read_to_string(work.join("pipeline.yaml")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|n| n.trim().to_string())
        .unwrap_or_default()
}

/// Builds the Wasm modules the examples load (examples/mixed's `risk`): a fresh clone has
/// none, and cargo and go keep their own caches, so an unchanged module costs a second or two.
fn build_wasm_modules() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-modules");
    let built = std::process::Command::new(format!("{root}/scripts/build-wasm-examples.sh"))
        .args(["--quiet", "--out"])
        .arg(&out)
        .output()
        .expect("run scripts/build-wasm-examples.sh");
    assert!(
        built.status.success(),
        "building the examples' Wasm modules failed (they need the wasm32-wasip1 Rust target \
         and Go 1.24+; ./dev test sets both up):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

#[test]
fn golden_pipelines_produce_their_expected_outputs() {
    build_wasm_modules();
    let cases = cases();
    assert!(
        cases.len() >= 3,
        "expected golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(case) {
            failures.push(format!("{}: {e}", case.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden case(s) failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
