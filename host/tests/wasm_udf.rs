//! Wasm UDFs end to end: the real `headwater` binary runs modules built from this checkout's
//! guest SDKs (`host/tests/wasm/guest-rust` with `headwater-wasm-guest`, `guest-go` with
//! `sdk-go/wasm`, built by `scripts/build-wasm-examples.sh`), the examples, and hand-written
//! hostile modules (`host/tests/wasm/*.wat`). The same cases as the Go and Python runtimes'
//! tests where they apply, from both languages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::kill_after;
use common::udf::*;

const WAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wasm");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The built modules.
struct Modules {
    rust: PathBuf,
    go: PathBuf,
}

/// Builds the guests once per test process (cargo and go keep their own caches, so an
/// unchanged guest costs a second or two).
fn modules() -> &'static Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-modules");
        let started = Instant::now();
        let built = Command::new(format!("{ROOT}/scripts/build-wasm-examples.sh"))
            .args(["--quiet", "--out"])
            .arg(&out)
            .output()
            .expect("run scripts/build-wasm-examples.sh");
        assert!(
            built.status.success(),
            "building the Wasm guests failed (they need the wasm32-wasip1 Rust target and Go 1.24+; \
             ./dev test sets both up):\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        eprintln!("Wasm guests built in {:.1?}", started.elapsed());
        Modules {
            rust: out.join("guest-rust.wasm"),
            go: out.join("guest-go.wasm"),
        }
    })
}

fn guests() -> [(&'static str, &'static Path); 2] {
    let m = modules();
    [("rust", &m.rust), ("go", &m.go)]
}

fn headwater(dir: &Path) -> Command {
    let mut c = common::headwater_in(dir);
    c.env(
        "HEADWATER_CACHE",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
    );
    c
}

/// A `udfs:` entry for function `function` of `module`, with `extra` options.
fn udf(name: &str, module: &Path, function: &str, extra: &str) -> String {
    format!(
        "  {name}: {{ runtime: wasm, module: '{}', function: {function}{extra} }}\n",
        module.display()
    )
}

/// `records` records `{"ts": n, "n": n}` (with `"s": "!"` for those in `bang`).
fn write_case(dir: &Path, records: u64, bang: &[u64], steps: &str, udfs: &str) {
    let mut input = String::new();
    for n in 0..records {
        let s = if bang.contains(&n) { "!" } else { "ok" };
        input.push_str(&format!("{{\"ts\":{n},\"n\":{n},\"s\":\"{s}\"}}\n"));
    }
    std::fs::write(dir.join("input.jsonl"), input).expect("input");
    let pipeline = format!(
        "name: wasm\nparallelism: 2\nsources:\n  in: {{ type: file, path: input.jsonl, event_time: {{ field: ts }} }}\n\
udfs:\n{udfs}steps:\n{steps}sinks:\n  out: {{ type: file, path: out.jsonl }}\noutput: out\n\
tuning: {{ batch_size: 256, progress_interval: 0s }}\n"
    );
    std::fs::write(dir.join("pipeline.yaml"), pipeline).expect("pipeline");
}

fn run_ok(dir: &Path) -> String {
    common::run_ok(headwater(dir).args(["run", "pipeline.yaml", "-q", "--fresh"]))
}

/// The dead letters of pipeline `wasm`.
fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    common::udf::dead_letters(dir, "wasm")
}

#[test]
fn map_filter_and_flat_map_from_rust_and_go_give_the_same_results() {
    for (lang, module) in guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let udfs = udf("enrich", module, "enrich", "")
            + &udf("even", module, "even", ", kind: filter")
            + &udf("twice", module, "twice", ", kind: flat_map");
        write_case(
            dir.path(),
            1000,
            &[],
            "  - udf: enrich\n  - udf: even\n  - udf: twice\n",
            &udfs,
        );
        run_ok(dir.path());
        let failing: Vec<i64> = (0..1000).filter(|n| n % 97 == 13).collect();
        let expected: BTreeMap<i64, usize> = (0..1000)
            .filter(|n| n % 2 == 0 && !failing.contains(n))
            .map(|n| (n, 2))
            .collect();
        assert_eq!(output_ns(dir.path()), expected, "{lang}");
        for v in output_lines(dir.path()) {
            let copy = v["copy"].as_i64().expect("copy");
            assert!(copy == 1 || copy == 2, "{lang}: {v}");
        }
        let dead = dead_letters(dir.path());
        let mut ns: Vec<i64> = dead.iter().map(dead_n).collect();
        ns.sort();
        assert_eq!(ns, failing, "{lang}");
        for d in &dead {
            assert_eq!(d["step"], "steps[0] udf enrich", "{lang}");
            assert_eq!(d["error_class"], "permanent", "{lang}");
            assert_eq!(d["attempts"], 1, "{lang}");
            assert_eq!(d["tier"], "retry", "{lang}");
            let version = d["udf_version"].as_str().unwrap_or("");
            assert!(
                version.starts_with("wasm:sha256:") && version.len() == 12 + 64,
                "{lang}: {d}"
            );
            assert_eq!(d["error"], format!("bad record {}", dead_n(d)), "{lang}");
        }
    }
}

fn write_bucket_case(dir: &Path, records: u64, module: &Path) {
    write_case(
        dir,
        records,
        &[],
        "  - map: { compute: { user: \"n % 7\" } }\n  - key_by: user\n  - udf: buckets\n",
        &udf("buckets", module, "bucket_totals", ", kind: keyed_process"),
    );
}

#[test]
fn keyed_process_state_and_timers_match_an_oracle_in_both_languages() {
    for (lang, module) in guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_bucket_case(dir.path(), 3000, module);
        run_ok(dir.path());
        assert_eq!(committed_buckets(dir.path()), bucket_oracle(3000), "{lang}");
        assert!(dead_letters(dir.path()).is_empty(), "{lang}");
    }
}

#[test]
fn a_panic_fails_only_its_record_in_both_languages() {
    let panicking: Vec<i64> = (0..600).filter(|n| n % 89 == 7).collect();
    for (lang, module) in guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_case(
            dir.path(),
            600,
            &[],
            "  - udf: explode\n",
            &udf("explode", module, "explode", ""),
        );
        run_ok(dir.path());
        let expected: BTreeMap<i64, usize> = (0..600)
            .filter(|n| !panicking.contains(n))
            .map(|n| (n, 1))
            .collect();
        assert_eq!(output_ns(dir.path()), expected, "{lang}");
        let dead = dead_letters(dir.path());
        assert_eq!(dead.len(), panicking.len(), "{lang}: {dead:?}");
        for d in &dead {
            assert_eq!(d["error_class"], "permanent", "{lang}: {d}");
            let error = d["error"].as_str().unwrap_or("");
            if lang == "rust" {
                // Rust aborts on a panic: the instance traps, the host isolates the record and
                // keeps what the panic printed.
                assert!(
                    error.contains("wasm trap: wasm `unreachable` instruction executed")
                        && error.contains("index out of bounds: the len is 7 but the index is 7"),
                    "{d}"
                );
            } else {
                // Go recovers: the SDK fails the record with the panic and its stack.
                assert_eq!(
                    error, "panic: runtime error: index out of range [7] with length 7",
                    "{d}"
                );
                assert!(
                    d["detail"].as_str().unwrap_or("").contains("main.explode("),
                    "{d}"
                );
            }
        }
    }
}

/// Writes `host/tests/wasm/NAME.wat` assembled into `dir/NAME.wasm`.
fn assemble(dir: &Path, name: &str) -> PathBuf {
    let bytes = wat::parse_file(format!("{WAT}/{name}.wat")).expect("valid WAT");
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("write module");
    path
}

/// Runs `function` of `module` over 40 records, two of which (5 and 23) make it misbehave;
/// returns the dead letters after checking the other 38 came through.
fn misbehave(module: &Path, function: &str, extra: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        40,
        &[5, 23],
        "  - udf: f\n",
        &udf("f", module, function, extra),
    );
    let started = Instant::now();
    run_ok(dir.path());
    let expected: BTreeMap<i64, usize> = (0..40)
        .filter(|n| *n != 5 && *n != 23)
        .map(|n| (n, 1))
        .collect();
    assert_eq!(output_ns(dir.path()), expected, "{function}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{function}: {:?}",
        started.elapsed()
    );
    let dead = dead_letters(dir.path());
    let mut ns: Vec<i64> = dead.iter().map(dead_n).collect();
    ns.sort();
    assert_eq!(ns, [5, 23], "{function}: {dead:?}");
    dead
}

#[test]
fn hostile_functions_fail_their_records_and_the_host_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hostile = assemble(dir.path(), "hostile");
    // A trap fails the record at once (a fresh instance traps again: nothing to retry), with the
    // trap and what the module wrote before it.
    for d in misbehave(&hostile, "trap", "") {
        assert_eq!(
            (d["error_class"].as_str(), d["attempts"].as_i64()),
            (Some("permanent"), Some(1))
        );
        let error = d["error"].as_str().unwrap_or("");
        assert!(
            error
                .contains("the module trapped: wasm trap: wasm `unreachable` instruction executed")
                && error.contains("it wrote: about to misbehave"),
            "{d}"
        );
    }
    // An endless loop is interrupted at the deadline: transient, so retried, then dead-lettered.
    for d in misbehave(&hostile, "spin", ", timeout: 300ms") {
        assert_eq!(
            (d["error_class"].as_str(), d["attempts"].as_i64()),
            (Some("transient"), Some(4))
        );
        assert!(
            d["error"]
                .as_str()
                .unwrap_or("")
                .contains("did not finish within its 300ms timeout"),
            "{d}"
        );
    }
    for d in misbehave(&hostile, "hog", ", memory: 8MiB") {
        assert_eq!(d["error_class"], "permanent");
        assert!(
            d["error"]
                .as_str()
                .unwrap_or("")
                .contains("more than its memory limit of 8 MiB"),
            "{d}"
        );
    }
    for d in misbehave(&hostile, "exit", "") {
        assert!(
            d["error"].as_str().unwrap_or("").contains("proc_exit(3)"),
            "{d}"
        );
    }
}

#[test]
fn endless_loops_and_endless_allocation_in_rust_and_go_are_stopped() {
    for (lang, module) in guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_case(
            dir.path(),
            20,
            &[],
            "  - udf: spin\n  - udf: hog\n",
            &(udf("spin", module, "spin", ", timeout: 300ms")
                + &udf("hog", module, "hog", ", memory: 32MiB")),
        );
        run_ok(dir.path());
        let expected: BTreeMap<i64, usize> = (0..20).filter(|n| *n != 5).map(|n| (n, 1)).collect();
        assert_eq!(output_ns(dir.path()), expected, "{lang}");
        let dead = dead_letters(dir.path());
        assert_eq!(dead.len(), 1, "{lang}: only n = 5 spins: {dead:?}");
        assert_eq!(dead[0]["step"], "steps[0] udf spin", "{lang}");
        assert_eq!(dead[0]["attempts"], 4, "{lang}");
        // n = 5 never reaches the hog; run it on its own.
        write_case(
            dir.path(),
            20,
            &[],
            "  - udf: hog\n",
            &udf("hog", module, "hog", ", memory: 32MiB"),
        );
        run_ok(dir.path());
        let dead = dead_letters(dir.path());
        assert_eq!(dead.len(), 1, "{lang}: {dead:?}");
        let error = dead[0]["error"].as_str().unwrap_or("");
        assert!(
            error.contains("more than its memory limit of 32 MiB"),
            "{lang}: {error}"
        );
        assert_eq!(output_ns(dir.path()).len(), 19, "{lang}");
    }
}

/// `headwater validate` of a pipeline using `module`: its stderr, after checking it failed.
fn refused(dir: &Path, module: &Path) -> String {
    write_case(
        dir,
        1,
        &[],
        "  - udf: f\n",
        &udf("f", module, "identity", ""),
    );
    let out = headwater(dir)
        .args(["validate", "pipeline.yaml"])
        .output()
        .expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{} should be refused",
        module.display()
    );
    assert!(stderr.contains("udfs.f (line 6)"), "{stderr}");
    stderr
}

#[test]
fn modules_that_are_not_guests_are_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cases = [
        (assemble(d, "missing_export"), "does not export `hw_call`"),
        (assemble(d, "wrong_abi"), "speaks version 2 of the Headwater Wasm ABI, this host speaks version 1"),
        (assemble(d, "bad_import"), "imports function `env.open_socket`, memory `env.memory`, which this host does not provide"),
        (assemble(d, "big_memory"), "more than its memory limit of 64 MiB (it asked for 128 MiB)"),
        (d.join("missing.wasm"), "cannot read `module:"),
    ];
    for (module, message) in cases {
        let stderr = refused(d, &module);
        assert!(stderr.contains(message), "{}: {stderr}", module.display());
    }
    let script = d.join("script.wasm");
    std::fs::write(&script, "#!/bin/sh\necho not wasm\n").expect("write");
    assert!(refused(d, &script).contains("is not a WebAssembly module"));
    let huge = d.join("huge.wasm");
    let file = std::fs::File::create(&huge).expect("create");
    file.set_len(65 << 20).expect("65 MiB");
    assert!(refused(d, &huge).contains("more than the 64 MiB a Wasm UDF module may be"));
    // A function the module does not have, and a kind that is not the module's.
    let stderr = {
        write_case(
            d,
            1,
            &[],
            "  - udf: f\n",
            &udf("f", &modules().rust, "nope", ""),
        );
        let out = headwater(d)
            .args(["validate", "pipeline.yaml"])
            .output()
            .expect("validate");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        stderr.contains("unknown function `nope` in the wasm runtime; available: enrich, even"),
        "{stderr}"
    );
}

#[test]
fn wasm_options_are_checked_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        1,
        &[],
        "  - udf: f\n",
        "  f: { runtime: wasm, function: enrich, memory: lots, timeout: 0s, allow: [network] }\n",
    );
    let out = headwater(dir.path())
        .args(["validate", "pipeline.yaml"])
        .output()
        .expect("validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "pipeline.yaml:6:6: error: udf `f`: missing required key `module`",
        "pipeline.yaml:6:49: error: udf `f` memory: expected a size in bytes",
        "udf `f` timeout: must be longer than 0",
        "error: udf `f` allow: `network` is not one of the choices",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}

#[test]
fn keyed_wasm_state_is_exactly_once_across_host_sigkills() {
    // The keyed-process function's state and timers live in the host (RocksDB), not in the
    // instance: the host is killed with SIGKILL mid-run several times and restarted from its
    // checkpoints; every bucket must come out once, with the oracle's sums.
    for (lang, module) in guests() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Enough input for a run of several seconds even on a quiet machine (Rust modules are
        // much faster here; 60k Go and 400k Rust records ran out after 2 and 3 kills).
        let records = if lang == "rust" {
            1_000_000u64
        } else {
            160_000
        };
        write_bucket_case(dir.path(), records, module);
        let pipeline = dir.path().join("pipeline.yaml");
        let mut text = std::fs::read_to_string(&pipeline).expect("read");
        text = text.replace("batch_size: 256", "batch_size: 64");
        text.push_str("checkpoint: { interval: 100ms }\n");
        std::fs::write(&pipeline, text).expect("write");
        let mut kills = 0;
        for attempt in 0..12u64 {
            let mut child = headwater(dir.path())
                .args(["run", "pipeline.yaml", "-q"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run");
            if !kill_after(
                &mut child,
                Duration::from_millis(300 + (attempt * 397) % 700),
            ) {
                break; // the input is done
            }
            kills += 1;
        }
        let out = headwater(dir.path())
            .args(["run", "pipeline.yaml", "-q"])
            .output()
            .expect("final run");
        assert!(
            out.status.success(),
            "{lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{lang}: host killed {kills} times");
        assert!(
            kills >= 3,
            "{lang}: only {kills} kills landed before the input ran out"
        );
        let expected = bucket_oracle(records);
        let got = committed_buckets(dir.path());
        assert_eq!(got.len(), expected.len(), "{lang}: buckets: none lost");
        assert_eq!(got, expected, "{lang}");
        assert!(dead_letters(dir.path()).is_empty(), "{lang}");
    }
}

#[test]
fn the_examples_produce_their_expected_output() {
    modules(); // builds the examples too
    for example in ["examples/wasm/rust-enrich", "sdk-go/examples/wasm-enrich"] {
        let src = Path::new(ROOT).join(example);
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [
            "pipeline.yaml",
            "input/orders.jsonl",
            "module/rust_enrich.wasm",
            "module/enrich.wasm",
        ] {
            if src.join(f).exists() {
                std::fs::create_dir_all(dir.path().join(f).parent().expect("parent"))
                    .expect("mkdir");
                std::fs::copy(src.join(f), dir.path().join(f)).expect("copy");
            }
        }
        let out = headwater(dir.path())
            .args(["run", "pipeline.yaml", "-q"])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> =
            headwater::connectors::files::read_committed(&dir.path().join("out/minutes.jsonl"))
                .expect("output")
                .lines()
                .map(str::to_string)
                .collect();
        got.sort();
        let expected = std::fs::read_to_string(src.join("expected.jsonl")).expect("expected");
        assert_eq!(got, expected.lines().collect::<Vec<_>>(), "{example}");
        let dlq = std::fs::read_to_string(dir.path().join(".headwater/wasm-enrich/dlq.jsonl"))
            .expect("dlq");
        assert_eq!(dlq.lines().count(), 2, "{example}: {dlq}");
        assert!(
            dlq.contains("order 4: unknown currency CHF"),
            "{example}: {dlq}"
        );
    }
}

/// The outputs of `sandbox` over 4 records with `extra` options, and the host's stderr.
fn sandbox_outputs(module: &Path, extra: &str) -> (Vec<serde_json::Value>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_case(
        dir.path(),
        4,
        &[],
        "  - udf: sandbox\n",
        &udf("sandbox", module, "sandbox", extra),
    );
    let stderr = common::run_ok(headwater(dir.path()).env("HEADWATER_LOG", "info").args([
        "run",
        "pipeline.yaml",
        "-q",
        "--fresh",
        "-p",
        "1",
    ]));
    (output_lines(dir.path()), stderr)
}

#[test]
fn the_sandbox_gives_no_files_no_environment_and_a_deterministic_clock_and_random_source() {
    for (lang, module) in guests() {
        let (first, stderr) = sandbox_outputs(module, "");
        assert_eq!(first.len(), 4, "{lang}");
        for v in &first {
            let file = v["file"].as_str().unwrap_or("");
            assert!(
                !file.starts_with("read"),
                "{lang}: the module read a file: {v}"
            );
            assert_eq!(v["env"], 0, "{lang}: {v}");
            let now = v["now_ms"].as_i64().expect("now_ms");
            assert!(
                (0..1000).contains(&now),
                "{lang}: the clock is not the deterministic one: {v}"
            );
        }
        // What the module prints goes to the host's log, prefixed with the UDF's name.
        assert!(
            stderr.contains("[udf sandbox] sandbox says hello"),
            "{lang}: {stderr}"
        );
        // The same run again sees the same "random" numbers; granted sources are real.
        let (again, _) = sandbox_outputs(module, "");
        let random = |vs: &[serde_json::Value]| -> Vec<String> {
            vs.iter().map(|v| v["random"].to_string()).collect()
        };
        assert_eq!(random(&again), random(&first), "{lang}");
        let (granted, _) = sandbox_outputs(module, ", allow: [clock, random]");
        assert_ne!(random(&granted), random(&first), "{lang}");
        let now = granted[0]["now_ms"].as_i64().expect("now_ms");
        assert!(now > 1_700_000_000_000, "{lang}: the real clock: {now}");
    }
}

/// A shadow run of a keyed process function: the Go build of `bucket_totals` runs beside the
/// active Rust one on the same calls, each given the key's state as the Rust version left it.
/// Every call matches (their states differ only in the order of JSON fields), and only the
/// active version's buckets come out.
#[test]
fn a_keyed_function_runs_in_the_shadow_of_another_version_on_the_same_states() {
    use common::control::{bearer, http, ControlRun};
    let m = modules();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "keyed-shadow";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token");
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        format!(
            "name: wasm\nparallelism: 2\nsources:\n  in: {{ type: stdin, event_time: {{ field: ts }} }}\n\
udfs:\n  buckets: {{ runtime: wasm, module: '{}', function: bucket_totals, kind: keyed_process }}\n\
steps:\n  - map: {{ compute: {{ user: \"n % 7\" }} }}\n  - key_by: user\n  - udf: buckets\n\
sinks:\n  out: {{ type: file, path: out.jsonl }}\noutput: out\ntuning: {{ progress_interval: 0s }}\n",
            m.rust.display()
        ),
    )
    .expect("pipeline");
    let mut cmd = headwater(dir.path());
    cmd.args([
        "run",
        "pipeline.yaml",
        "--fresh",
        "--control",
        "127.0.0.1:0",
    ])
    .args(["--control-token-file", "token"])
    .stdin(Stdio::piped());
    let mut run = ControlRun::start(&mut cmd);
    let mut stdin = run.child.stdin.take().expect("stdin");
    let mut sent = 0u64;
    let mut send = |stdin: &mut std::process::ChildStdin, n: u64| {
        use std::io::Write;
        let lines: String = (sent..sent + n)
            .map(|i| format!("{{\"ts\":{i},\"n\":{i}}}\n"))
            .collect();
        stdin.write_all(lines.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
        sent += n;
    };
    send(&mut stdin, 500);
    let go = std::fs::read(&m.go).expect("the Go guest");
    let digest = headwater::udf::wasm::sha256_hex(&go);
    let user = "X-Headwater-User: tester".to_string();
    let (code, body) = http(
        &run.address,
        "POST",
        "/udfs/buckets/versions",
        &[user.clone(), bearer(token)],
        &go,
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = http(
        &run.address,
        "POST",
        &format!("/udfs/buckets/activate?version={digest}&shadow=true"),
        &[user, bearer(token)],
        b"",
    );
    assert_eq!(code, 200, "{body}");
    // Feed records until the candidate has answered a few hundred keyed calls.
    let deadline = Instant::now() + Duration::from_secs(60);
    let shadow = loop {
        send(&mut stdin, 200);
        std::thread::sleep(Duration::from_millis(50));
        let (code, body) = http(&run.address, "GET", "/status", &[], b"");
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).expect("status json");
        let shadow = status["wasm_udfs"]["buckets"]["shadow"].clone();
        if shadow["matched"].as_u64().unwrap_or(0) >= 500 {
            break shadow;
        }
        assert!(
            Instant::now() < deadline,
            "the shadow run answered too little: {status}"
        );
    };
    assert_eq!(shadow["digest"], digest.as_str(), "{shadow}");
    assert_eq!(
        (shadow["differed"].as_u64(), shadow["failed"].as_u64()),
        (Some(0), Some(0)),
        "{shadow}"
    );
    drop(stdin);
    let exit = run.child.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(committed_buckets(dir.path()), bucket_oracle(sent));
}
