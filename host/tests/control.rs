//! The control API's token: reading is open, a savepoint needs `Authorization: Bearer`, the
//! CLI sends the token from the same file or variable, and a run given no token makes one
//! that only its user can read (and the CLI finds).

use std::path::Path;

mod common;
use common::control::ControlRun;
use common::headwater;

/// An unbounded pipeline (checkpoints on, but hourly: a savepoint takes its own).
fn pipeline(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        "name: ctl\nparallelism: 1\nsources:\n  bids: { type: nexmark, rate: 2000, partitions: 1, only: bid }\nsteps:\n  - key_by: auction\n  - window: { type: tumbling, size: 1s, aggregates: { n: count() } }\nsinks:\n  o: { type: file, path: out/r.jsonl }\noutput: o\ncheckpoint: { interval: 1h }\ntuning: { progress_interval: 0s }\n",
    )
    .expect("write pipeline");
    p
}

/// Starts `p.yaml` in `dir` from scratch with `args` and `envs`.
fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> ControlRun {
    ControlRun::start(
        headwater()
            .current_dir(dir)
            .args(["run", "p.yaml", "--fresh"])
            .args(args)
            .envs(envs.iter().copied()),
    )
}

/// Sends one request: (status code, body).
fn http(address: &str, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let headers: Vec<String> = authorization
        .map(|a| format!("Authorization: {a}"))
        .into_iter()
        .collect();
    common::control::http(address, method, path, &headers, b"")
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
    v["error"].as_str().expect("error").to_string()
}

#[test]
fn with_a_token_savepoints_need_it_and_the_cli_sends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    pipeline(dir.path());
    std::fs::write(dir.path().join("token"), "c0ntrol-t0ken\n").expect("token file");
    let run = start(
        dir.path(),
        &["--control", "127.0.0.1:0", "--control-token-file", "token"],
        &[],
    );
    let address = run.address.clone();
    // Reading stays open.
    let (code, status) = http(&address, "GET", "/status", None);
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"pipeline\":\"ctl\""), "{status}");
    assert_eq!(http(&address, "GET", "/metrics", None).0, 200);
    // Changing the run needs the token.
    let (code, body) = http(&address, "POST", "/savepoint?to=sp-none", None);
    assert_eq!(code, 401, "{body}");
    assert!(
        error_of(&body).contains("needs `Authorization: Bearer <token>`"),
        "{body}"
    );
    let (code, body) = http(
        &address,
        "POST",
        "/savepoint?to=sp-wrong",
        Some("Bearer c0ntrol-t0kem"),
    );
    assert_eq!(code, 401, "{body}");
    assert_eq!(error_of(&body), "the bearer token is wrong");
    assert!(!dir.path().join("sp-none").exists() && !dir.path().join("sp-wrong").exists());

    // The CLI: without the token it is refused with a hint, with it the savepoint is written.
    let cli = |envs: &[(&str, &str)], extra: &[&str], to: &str| {
        headwater()
            .current_dir(dir.path())
            .args(["savepoint", "p.yaml", "--to", to, "--control", &address])
            .args(extra)
            .envs(envs.iter().copied())
            .output()
            .expect("headwater savepoint")
    };
    let out = cli(&[], &[], "sp-cli-none");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused the savepoint (401)")
            && stderr.contains("set HEADWATER_CONTROL_TOKEN or pass --control-token-file"),
        "{stderr}"
    );
    let out = cli(
        &[("HEADWATER_CONTROL_TOKEN", "c0ntrol-t0ken")],
        &[],
        "sp-env",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("savepoint of checkpoint"), "{stdout}");
    assert!(dir.path().join("sp-env/manifest.json").exists(), "{stdout}");
    let out = cli(&[], &["--control-token-file", "token"], "sp-file");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("sp-file/manifest.json").exists());
    let log = run.finish();
    assert!(
        !log.contains("c0ntrol-t0ken") && !log.contains("without a token"),
        "the token is never logged, and a loopback run with one does not warn: {log}"
    );
}

#[test]
fn without_a_token_given_the_run_makes_one_that_only_its_user_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    pipeline(dir.path());
    // Even beyond loopback, and even on loopback: nothing changes the run without the token.
    let run = start(dir.path(), &["--control", "0.0.0.0:0"], &[]);
    assert!(run.printed.starts_with("0.0.0.0:"), "{}", run.printed);
    let address = run.address.clone();
    assert_eq!(http(&address, "GET", "/status", None).0, 200);
    let (code, body) = http(&address, "POST", "/savepoint?to=sp", None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = http(&address, "POST", "/savepoint?to=sp", Some("Bearer guess"));
    assert_eq!(code, 401);
    assert!(!dir.path().join("sp").exists());
    let token_file = dir.path().join(".headwater/ctl/state.control-token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("the run wrote its token beside its state")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    let token = std::fs::read_to_string(&token_file).expect("token");
    assert_eq!(token.trim().len(), 64);
    let (code, body) = http(
        &address,
        "POST",
        "/savepoint?to=sp-by-hand",
        Some(&format!("Bearer {}", token.trim())),
    );
    assert_eq!(code, 200, "{body}");
    // The CLI finds the token by itself.
    let out = headwater()
        .current_dir(dir.path())
        .args([
            "savepoint",
            "p.yaml",
            "--to",
            "sp-cli",
            "--control",
            &address,
        ])
        .output()
        .expect("headwater savepoint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("sp-cli/manifest.json").exists());
    let log = run.finish();
    assert!(
        log.contains("control API token written to") && !log.contains(token.trim()),
        "the run says where the token is, never the token: {log}"
    );
}

#[test]
fn a_bad_token_file_stops_the_run_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    pipeline(dir.path());
    std::fs::write(dir.path().join("empty"), "\n").expect("token file");
    for (file, says) in [
        ("empty", "is empty"),
        ("missing", "cannot read the control token file"),
    ] {
        let out = headwater()
            .current_dir(dir.path())
            .args(["run", "p.yaml", "--control", "127.0.0.1:0"])
            .args(["--control-token-file", file])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
