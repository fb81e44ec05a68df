//! Wasm modules replaced while a pipeline runs, through the control API and `headwater udf`:
//! uploads are authorized and checked, versions are listed, an activation takes effect at a
//! checkpoint boundary (each committed part file comes from one version), the checkpoint
//! records the version and a restart after SIGKILL runs it, and a rollback goes back.
//!
//! The modules are written in WAT here: `tag` maps a record `r` to `{"v":V,"in":r}`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::control::{bearer, ControlRun};

const TOKEN: &str = "wasm-c0ntrol";

fn headwater(dir: &Path) -> Command {
    let mut c = common::headwater_in(dir);
    c.env(
        "HEADWATER_CACHE",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
    );
    c
}

/// A module whose map function `function` wraps each record as `{"v":<version>,"in":record}`.
fn tag_module(function: &str, version: u32) -> Vec<u8> {
    let prefix = format!("{{\"v\":{version},\"in\":");
    let escaped = prefix.replace('"', "\\\"");
    let describe = format!(
        "{{\\\"abi\\\":1,\\\"sdk\\\":\\\"tag.wat\\\",\\\"functions\\\":[{{\\\"name\\\":\\\"{function}\\\",\\\"kind\\\":\\\"map\\\"}}]}}"
    );
    let plen = prefix.len();
    let wat = format!(
        r#"(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 16) "{describe}")
  (data (i32.const 1024) "{escaped}")
  (func (export "hw_abi_version") (result i32) (i32.const 1))
  (func (export "hw_alloc") (param $len i32) (result i32)
    (global.set $heap (i32.const 65536))
    (call $take (local.get $len)))
  (func $take (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
        (br $grow)))
    (local.get $p))
  (func (export "hw_free") (param i32 i32))
  (func (export "hw_describe") (result i64)
    (local $end i32)
    (local.set $end (i32.const 16))
    (block $done
      (loop $scan
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $scan)))
    (i64.or (i64.shl (i64.const 16) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $end) (i32.const 16)))))
  (func (export "hw_call") (param $f i32) (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $at i32) (local $rlen i32) (local $out i32) (local $w i32)
    (local.set $n (i32.load (local.get $ptr)))
    (local.set $at (i32.add (local.get $ptr) (i32.const 4)))
    (local.set $out (call $take (i32.add (local.get $len)
      (i32.add (i32.const 16) (i32.mul (local.get $n) (i32.const 64))))))
    (i32.store (local.get $out) (local.get $n))
    (local.set $w (i32.add (local.get $out) (i32.const 4)))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $rlen (i32.load (local.get $at)))
        (i32.store8 (local.get $w) (i32.const 0))
        (i32.store (i32.add (local.get $w) (i32.const 1)) (i32.const 1))
        (i32.store (i32.add (local.get $w) (i32.const 5))
          (i32.add (local.get $rlen) (i32.const {plen_plus_1})))
        (local.set $w (i32.add (local.get $w) (i32.const 9)))
        (memory.copy (local.get $w) (i32.const 1024) (i32.const {plen}))
        (local.set $w (i32.add (local.get $w) (i32.const {plen})))
        (memory.copy (local.get $w) (i32.add (local.get $at) (i32.const 4)) (local.get $rlen))
        (local.set $w (i32.add (local.get $w) (local.get $rlen)))
        (i32.store8 (local.get $w) (i32.const 125))
        (local.set $w (i32.add (local.get $w) (i32.const 1)))
        (local.set $at (i32.add (local.get $at) (i32.add (i32.const 4) (local.get $rlen))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $w) (local.get $out)))))
)"#,
        plen_plus_1 = plen + 1,
    );
    wat::parse_str(&wat).expect("the tag module's WAT")
}

fn sha256(bytes: &[u8]) -> String {
    headwater::udf::wasm::sha256_hex(bytes)
}

/// An unbounded pipeline (Nexmark bids) through the Wasm UDF `tag`, checkpointing often.
fn write_pipeline(dir: &Path) {
    write_pipeline_with(dir, "  - udf: tag\n", "");
}

/// The same with these `steps` and `checkpoint` options.
fn write_pipeline_with(dir: &Path, steps: &str, checkpoint: &str) {
    std::fs::write(dir.join("v1.wasm"), tag_module("tag", 1)).expect("v1");
    std::fs::write(dir.join("v2.wasm"), tag_module("tag", 2)).expect("v2");
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token");
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "name: wup\nparallelism: 2\nsources:\n  bids: {{ type: nexmark, rate: 400, partitions: 2, only: bid }}\n\
udfs:\n  tag: {{ runtime: wasm, module: v1.wasm, function: tag }}\n  plus: {{ runtime: native, function: identity }}\n\
steps:\n{steps}sinks:\n  o: {{ type: file, path: out/r.jsonl }}\noutput: o\n\
checkpoint: {{ interval: 200ms{checkpoint} }}\ntuning: {{ progress_interval: 0s }}\n",
        ),
    )
    .expect("pipeline");
}

/// Starts `p.yaml` in `dir` with the control API (and its token file), from scratch if `fresh`.
fn start(dir: &Path, fresh: bool) -> ControlRun {
    let mut cmd = headwater(dir);
    cmd.args(["run", "p.yaml", "--control", "127.0.0.1:0"])
        .args(["--control-token-file", "token"]);
    if fresh {
        cmd.arg("--fresh");
    }
    ControlRun::start(&mut cmd)
}

/// Starts `p.yaml` in `dir` from scratch and uploads `v2.wasm` (not activated); returns the
/// run and v2's digest.
fn start_with_v2_uploaded(dir: &Path) -> (ControlRun, String) {
    let v2_bytes = std::fs::read(dir.join("v2.wasm")).expect("v2");
    let run = start(dir, true);
    let (code, body) = http(
        &run.address,
        "POST",
        "/udfs/tag/versions",
        Some(TOKEN),
        &v2_bytes,
    );
    assert_eq!(code, 201, "{body}");
    (run, sha256(&v2_bytes))
}

/// One request (as user `tester`, with the bearer `token` if any): (status code, JSON body).
fn http(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut headers = vec!["X-Headwater-User: tester".to_string()];
    headers.extend(token.map(bearer));
    let (code, body) = common::control::http(address, method, path, &headers, body);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, json)
}

/// Committed part files by epoch: the versions (`v`) of their records.
fn parts(dir: &Path) -> BTreeMap<u64, Vec<u64>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("out")).expect("out").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(epoch) = name
            .strip_prefix("r-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).expect("part");
        let versions: Vec<u64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                assert_eq!(v["in"]["event_type"], "bid", "{l}");
                v["v"].as_u64().expect("v")
            })
            .collect();
        out.insert(epoch, versions);
    }
    out
}

/// Which version each committed part comes from; panics on a part that mixes them.
fn part_versions(dir: &Path) -> BTreeMap<u64, u64> {
    parts(dir)
        .into_iter()
        .filter(|(_, vs)| !vs.is_empty())
        .map(|(epoch, vs)| {
            assert!(
                vs.iter().all(|v| *v == vs[0]),
                "part {epoch} mixes versions: {vs:?}"
            );
            (epoch, vs[0])
        })
        .collect()
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    common::wait_for(what, Duration::from_secs(60), done);
}

fn newest_manifest(dir: &Path) -> serde_json::Value {
    let manifests = dir.join(".headwater/wup/checkpoints/manifests");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&manifests)
        .expect("manifests")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let newest = names.last().expect("a manifest");
    serde_json::from_slice(&std::fs::read(newest).expect("read")).expect("manifest json")
}

#[test]
fn modules_are_uploaded_checked_and_swapped_at_checkpoint_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_pipeline(d);
    let (v1, v2) = (
        sha256(&std::fs::read(d.join("v1.wasm")).expect("v1")),
        sha256(&std::fs::read(d.join("v2.wasm")).expect("v2")),
    );
    let v2_bytes = std::fs::read(d.join("v2.wasm")).expect("v2");
    let run = start(d, true);
    let a = run.address.clone();

    // Uploads need the token.
    let (code, body) = http(&a, "POST", "/udfs/tag/versions", None, &v2_bytes);
    assert_eq!(code, 401, "{body}");
    let (code, body) = http(&a, "POST", "/udfs/tag/versions", Some("nope"), &v2_bytes);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"], "the bearer token is wrong");
    // A module that is not one, or lacks the UDF's function, is refused with the reason.
    let (code, body) = http(&a, "POST", "/udfs/tag/versions", Some(TOKEN), b"not wasm");
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("udf `tag`"),
        "{body}"
    );
    let other = tag_module("other", 3);
    let (code, body) = http(&a, "POST", "/udfs/tag/versions", Some(TOKEN), &other);
    assert_eq!(code, 422, "{body}");
    let why = body["error"].as_str().unwrap_or_default();
    assert!(why.contains("`tag`") && why.contains("other"), "{body}");
    // Too big for a module: refused before it is read.
    let mut s = std::net::TcpStream::connect(&a).expect("connect");
    write!(
        s,
        "POST /udfs/tag/versions HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        (64u64 << 20) + 1
    )
    .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("response");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Unknown UDFs are named; a UDF of another runtime is not a Wasm UDF.
    let (code, body) = http(&a, "POST", "/udfs/nope/versions", Some(TOKEN), &v2_bytes);
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["wasm_udfs"], serde_json::json!(["tag"]), "{body}");
    let (code, body) = http(&a, "GET", "/udfs/plus/versions", None, b"");
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("native UDF"),
        "{body}"
    );

    // Upload with the CLI (the token from the variable).
    let cli = |args: &[&str]| {
        let out = headwater(d)
            .arg("udf")
            .args(args)
            .args(["--control", &a, "--user", "ana"])
            .env("HEADWATER_CONTROL_TOKEN", TOKEN)
            .output()
            .expect("headwater udf");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = cli(&["upload", "p.yaml", "tag", "v2.wasm"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&v2), "{stdout}");
    // Both versions are listed; v1 (the pipeline file's) is active.
    let (code, list) = http(&a, "GET", "/udfs/tag/versions", None, b"");
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["active"], v1.as_str(), "{list}");
    let versions = list["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2, "{list}");
    assert_eq!(versions[0]["digest"], v1.as_str());
    assert_eq!(versions[0]["uploader"], "pipeline file");
    assert_eq!(versions[0]["active"], true);
    assert_eq!(versions[1]["digest"], v2.as_str());
    assert_eq!(versions[1]["uploader"], "ana");
    assert_eq!(versions[1]["size"], v2_bytes.len());
    let (ok, stdout, _) = cli(&["list", "p.yaml", "tag"]);
    assert!(ok && stdout.contains(&format!("*  {v1}")), "{stdout}");
    // An unknown version is refused with the known ones.
    let (code, body) = http(
        &a,
        "POST",
        "/udfs/tag/activate?version=ffff",
        Some(TOKEN),
        b"",
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["versions"], serde_json::json!([v1, v2]), "{body}");

    // A shadow run of v2 beside v1: counted, never emitted.
    let (ok, stdout, stderr) = cli(&["activate", "p.yaml", "tag", &v2[..10], "--shadow"]);
    assert!(
        ok && stdout.contains("without emitting"),
        "{stdout}{stderr}"
    );
    let mut status = serde_json::Value::Null;
    wait_for("the shadow run's counts", || {
        status = http(&a, "GET", "/status", None, b"").1;
        status["wasm_udfs"]["tag"]["shadow"]["differed"].as_u64() > Some(10)
    });
    let shadow = &status["wasm_udfs"]["tag"]["shadow"];
    assert_eq!(shadow["digest"], v2.as_str(), "{status}");
    assert_eq!(
        (shadow["matched"].as_u64(), shadow["failed"].as_u64()),
        (Some(0), Some(0)),
        "{status}"
    );
    let sample = &shadow["samples"][0];
    assert!(
        sample["active"]
            .as_str()
            .unwrap_or_default()
            .starts_with(r#"{"v":1,"in":"#)
            && sample["candidate"]
                .as_str()
                .unwrap_or_default()
                .starts_with(r#"{"v":2,"in":"#),
        "{status}"
    );
    let metrics = std::net::TcpStream::connect(&a).and_then(|mut s| {
        write!(s, "GET /metrics HTTP/1.1\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out).map(|_| out)
    });
    let metrics = metrics.expect("metrics");
    assert!(
        metrics.contains(&format!(
            "headwater_wasm_shadow_records_total{{pipeline=\"wup\",udf=\"tag\",candidate=\"{v2}\",outcome=\"differed\"}}"
        )),
        "{metrics}"
    );

    // Some output from v1, then activate v2 (by prefix) at a checkpoint boundary.
    wait_for("output of v1", || part_versions(d).len() >= 2);
    let (ok, stdout, stderr) = cli(&["activate", "p.yaml", "tag", &v2[..10]]);
    assert!(ok, "{stderr}");
    let swap: u64 = stdout
        .split("from checkpoint ")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the checkpoint of the swap: {stdout}"));
    wait_for("output of v2", || {
        part_versions(d).keys().any(|&e| e > swap + 2)
    });
    let (_, status) = http(&a, "GET", "/status", None, b"");
    assert!(
        status["wasm_udfs"]["tag"]["shadow"].is_null(),
        "activating the shadowed version ends the shadow run: {status}"
    );
    let before_kill = newest_manifest(d);
    assert_eq!(
        before_kill["udf_modules"]["tag"],
        v2.as_str(),
        "{before_kill}"
    );
    // SIGKILL, then every committed part holds one version: v1 up to the swap, v2 after.
    let mut child = run.child;
    child.kill().expect("kill");
    let _ = child.wait();
    drop(run.stderr);
    let seen = part_versions(d);
    for (epoch, v) in &seen {
        assert_eq!(
            *v,
            if *epoch <= swap { 1 } else { 2 },
            "part {epoch}: {seen:?}"
        );
    }
    assert!(seen.values().any(|v| *v == 1) && seen.values().any(|v| *v == 2));
    let last_before = *seen.keys().last().expect("parts");

    // A restart runs the version the checkpoint recorded (v2), though the file names v1.
    let run = start(d, false);
    let a = run.address.clone();
    wait_for("output after the restart", || {
        part_versions(d).keys().any(|&e| e > last_before + 1)
    });
    let (code, list) = http(&a, "GET", "/udfs/tag/versions", None, b"");
    assert_eq!(
        (code, list["active"].as_str()),
        (200, Some(v2.as_str())),
        "{list}"
    );
    // Roll back to v1.
    let (code, body) = http(&a, "POST", "/udfs/tag/rollback", Some(TOKEN), b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["active"], v1.as_str());
    let back = body["after_checkpoint"].as_u64().expect("checkpoint");
    wait_for("output after the rollback", || {
        part_versions(d).keys().any(|&e| e > back + 1)
    });
    let mut child = run.child;
    child.kill().expect("kill");
    let _ = child.wait();
    let seen = part_versions(d);
    eprintln!("version per part: {seen:?} (swap after {swap}, rollback after {back})");
    for (epoch, v) in &seen {
        let want = if *epoch <= swap || *epoch > back {
            1
        } else {
            2
        };
        assert_eq!(*v, want, "part {epoch}: {seen:?}");
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join(".headwater/wup/checkpoints/udf-modules/versions/tag.json"))
            .expect("versions record"),
    )
    .expect("json");
    let history: Vec<&str> = record["activations"]
        .as_array()
        .expect("activations")
        .iter()
        .filter_map(|a| a["digest"].as_str())
        .collect();
    assert_eq!(history, [v1.as_str(), v2.as_str(), v1.as_str()], "{record}");
    assert!(d
        .join(format!(".headwater/wup/checkpoints/udf-modules/{v2}.wasm"))
        .exists());
}

/// The UDF after a shuffle (its tasks have two inputs each), with unaligned checkpoints: the
/// swap still happens at one barrier for all of a checkpoint's output.
#[test]
fn a_swap_behind_a_shuffle_with_unaligned_checkpoints_splits_output_at_one_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_pipeline_with(
        d,
        "  - key_by: auction\n  - udf: tag\n",
        ", mode: unaligned",
    );
    let (run, v2) = start_with_v2_uploaded(d);
    let a = run.address.clone();
    wait_for("output of v1", || part_versions(d).len() >= 2);
    let path = format!("/udfs/tag/activate?version={}", &v2[..8]);
    let (code, body) = http(&a, "POST", &path, Some(TOKEN), b"");
    assert_eq!(code, 200, "{body}");
    let swap = body["after_checkpoint"].as_u64().expect("checkpoint");
    wait_for("output of v2", || {
        part_versions(d).keys().any(|&e| e > swap + 2)
    });
    let mut child = run.child;
    child.kill().expect("kill");
    let _ = child.wait();
    let seen = part_versions(d);
    for (epoch, v) in &seen {
        assert_eq!(
            *v,
            if *epoch <= swap { 1 } else { 2 },
            "part {epoch}: {seen:?}"
        );
    }
}

/// The committed records' inputs as a sorted multiset, and each part's version.
fn committed_inputs(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("out")).expect("out").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.starts_with("r-") && name.ends_with(".jsonl")) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).expect("part").lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            out.push(v["in"].to_string());
        }
    }
    out.sort();
    out
}

/// A bounded Nexmark stream through the Wasm UDF, killed with SIGKILL at least 20 times while
/// it is swapped to v2 and rolled back to v1 in the middle: the committed records equal those
/// of an uninterrupted run exactly (nothing lost, nothing twice), and every committed part
/// comes from one version.
#[test]
fn hot_swaps_amid_sigkills_keep_exactly_once_and_one_version_per_checkpoint() {
    let pipeline = |d: &Path| {
        write_pipeline(d);
        let text = std::fs::read_to_string(d.join("p.yaml")).expect("pipeline");
        let text = text.replace(
            "{ type: nexmark, rate: 400, partitions: 2, only: bid }",
            "{ type: nexmark, events: 12000, rate: 600, partitions: 2, only: bid }",
        );
        std::fs::write(d.join("p.yaml"), text).expect("pipeline");
    };
    // The oracle: the same input without kills or swaps.
    let clean = tempfile::tempdir().expect("tempdir");
    pipeline(clean.path());
    common::run_ok(headwater(clean.path()).args(["run", "p.yaml", "-q", "--fresh"]));
    let expected = committed_inputs(clean.path());
    assert!(expected.len() > 1000, "{} records", expected.len());

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pipeline(d);
    let v2_bytes = std::fs::read(d.join("v2.wasm")).expect("v2");
    let mut kills = 0;
    let mut swaps = 0;
    let mut first = true;
    loop {
        let run = start(d, first);
        first = false;
        let before = common::newest_checkpoint(d, "wup");
        let a = run.address.clone();
        let mut child = run.child;
        // Two swaps, while the kills go on: v2 after the 7th kill, back to v1 after the 14th.
        if kills == 7 && swaps == 0 {
            let (code, body) = http(&a, "POST", "/udfs/tag/versions", Some(TOKEN), &v2_bytes);
            assert!(code == 201 || code == 200, "{body}");
            let v2 = sha256(&v2_bytes);
            let (code, body) = http(
                &a,
                "POST",
                &format!("/udfs/tag/activate?version={}", &v2[..8]),
                Some(TOKEN),
                b"",
            );
            assert_eq!(code, 200, "{body}");
            swaps += 1;
        } else if kills == 14 && swaps == 1 {
            let (code, body) = http(&a, "POST", "/udfs/tag/rollback", Some(TOKEN), b"");
            assert_eq!(code, 200, "{body}");
            swaps += 1;
        }
        // Each run gets a checkpoint of its own before it dies (or reaches the end).
        let ended = common::wait_while_running(
            &mut child,
            "a checkpoint of this run's own",
            Duration::from_secs(60),
            || common::newest_checkpoint(d, "wup") > before + 1,
        );
        if let Some(status) = ended {
            assert!(status.success(), "run {kills} failed: {status}");
            break;
        }
        child.kill().expect("kill");
        let _ = child.wait();
        kills += 1;
        if kills >= 22 {
            // Let the last run finish the input.
            common::run_ok(headwater(d).args(["run", "p.yaml", "-q"]));
            break;
        }
    }
    assert!(
        kills >= 20,
        "only {kills} kills landed before the input ran out"
    );
    assert_eq!(swaps, 2, "both swaps happened");
    let versions = part_versions(d);
    assert!(
        versions.values().any(|&v| v == 2) && versions.values().any(|&v| v == 1),
        "output of both versions: {versions:?}"
    );
    let got = committed_inputs(d);
    assert_eq!(got.len(), expected.len(), "committed records");
    assert!(
        got == expected,
        "the committed records differ from the clean run's"
    );
}

/// A savepoint holds the Wasm module its checkpoint ran, so a run restored from it in another
/// folder (no checkpoints, no module store there) runs that version, not the file's.
#[test]
fn a_savepoint_carries_its_wasm_module_to_a_run_restored_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_pipeline(d);
    let (run, v2) = start_with_v2_uploaded(d);
    let a = run.address.clone();
    let path = format!("/udfs/tag/activate?version={v2}");
    let (code, body) = http(&a, "POST", &path, Some(TOKEN), b"");
    assert_eq!(code, 200, "{body}");
    let swap = body["after_checkpoint"].as_u64().expect("checkpoint");
    wait_for("output of v2", || {
        part_versions(d).keys().any(|&e| e > swap + 1)
    });
    run.kill();
    let sp = d.join("sp");
    common::run_ok(headwater(d).args(["savepoint", "p.yaml", "--to"]).arg(&sp));
    assert!(
        sp.join(format!("udf-modules/{v2}.wasm")).exists(),
        "the savepoint holds the module"
    );

    // Elsewhere: the pipeline file (naming v1) and nothing else.
    let other = tempfile::tempdir().expect("tempdir");
    let e = other.path();
    for f in ["p.yaml", "v1.wasm"] {
        std::fs::copy(d.join(f), e.join(f)).expect("copy");
    }
    let mut child = headwater(e)
        .args(["run", "p.yaml", "-q", "--from"])
        .arg(&sp)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run from the savepoint");
    wait_for("output restored from the savepoint", || {
        e.join("out").exists() && part_versions(e).len() >= 2
    });
    child.kill().expect("kill");
    let out = child.wait_with_output().expect("wait");
    let seen = part_versions(e);
    assert!(
        seen.values().all(|v| *v == 2),
        "the restored run ran v1: {seen:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        e.join(format!(".headwater/wup/checkpoints/udf-modules/{v2}.wasm"))
            .exists(),
        "the module joins the restored pipeline's store, for its own restarts"
    );
}
