//! Checkpoint storage that fails: a real MinIO server stopped in the middle of a run. Each
//! checkpoint it cannot take is declined and the run goes on; once the server is back, the next
//! checkpoint commits what the declined ones held, and the committed output equals the oracle
//! exactly. A server that stays down stops the run after `tolerable_failures` + 1 failures in a
//! row, with an error naming the storage and the cause.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

mod common;
use common::ports::free_port;
use common::s3::Minio;
use common::*;

/// The run's checkpoint counters from `GET /status`: (completed, failed), or None while the
/// control API is not up yet.
fn checkpoints(port: u16) -> Option<(u64, u64)> {
    let address = format!("127.0.0.1:{port}");
    let (_, body) = common::control::try_http(&address, "GET", "/status", &[], b"").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some((
        v["checkpoints"]["completed"].as_u64()?,
        v["checkpoints"]["failed"].as_u64()?,
    ))
}

/// Waits (up to 2 minutes) until `done` holds for the run's counters; the run must go on.
fn wait_for_counters(run: &mut Child, port: u16, what: &str, done: impl Fn(u64, u64) -> bool) {
    wait_for_running(run, what, Duration::from_secs(120), || {
        checkpoints(port).is_some_and(|(completed, failed)| done(completed, failed))
    });
}

/// A tumbling-window pipeline reading standard input (so the test decides when input comes
/// and when it ends), checkpointing every 200 ms into `location` with `timeout: 3s` (a request
/// to a stopped server is retried that long).
fn stdin_pipeline(dir: &Path, location: &str, tolerable: u32) -> PathBuf {
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "name: p\nparallelism: 2\nsources:\n  events: {{ type: stdin, event_time: {{ field: ts, max_out_of_orderness: 5s }} }}\n\
steps:\n  - key_by: user\n  - window:\n      type: tumbling\n      size: 10s\n      aggregates: {{ n: count(), total: sum(v) }}\n\
sinks:\n  out: {{ type: file, path: out/p.jsonl }}\noutput: out\n\
checkpoint: {{ interval: 200ms, timeout: 3s, location: \"{location}\", tolerable_failures: {tolerable} }}\n\
tuning: {{ progress_interval: 0s }}\n"
        ),
    )
    .expect("write pipeline");
    p
}

fn start_run(dir: &Path, minio: &Minio, control: u16) -> (Child, ChildStdin) {
    let mut child = headwater()
        .envs(minio.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .args(["run", "p.yaml", "--fresh", "-q"])
        .args(["--control", &format!("127.0.0.1:{control}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("log"))
        .spawn()
        .expect("spawn headwater");
    let stdin = child.stdin.take().expect("stdin");
    (child, stdin)
}

/// The input as lines, and split in three.
fn input_thirds(dir: &Path, records: usize, seed: u64) -> (Vec<Input>, [String; 3]) {
    let input = write_input(dir, 1, records, seed);
    let text = std::fs::read_to_string(dir.join("input/part-0.jsonl")).expect("input");
    std::fs::remove_dir_all(dir.join("input")).expect("rm input");
    let lines: Vec<&str> = text.lines().collect();
    let third = lines.len() / 3;
    let part = |a: usize, b: usize| lines[a..b].iter().map(|l| format!("{l}\n")).collect();
    (
        input,
        [
            part(0, third),
            part(third, 2 * third),
            part(2 * third, lines.len()),
        ],
    )
}

#[test]
fn checkpoints_the_storage_declines_are_committed_by_the_next_one_exactly_once() {
    let minio = Minio::start_restartable(ports::process_port(18100, 800, 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let location = format!("s3://headwater/declines-{}/p", std::process::id());
    stdin_pipeline(dir.path(), &location, 10);
    let (input, [first, second, third]) = input_thirds(dir.path(), 60_000, 0x5eed_00d1);
    let control = free_port();
    let (mut run, mut stdin) = start_run(dir.path(), &minio, control);

    stdin.write_all(first.as_bytes()).expect("first third");
    wait_for_counters(&mut run, control, "two checkpoints", |completed, _| {
        completed >= 2
    });
    // The storage goes away: checkpoints are declined, the run goes on reading and writing.
    minio.down();
    let (completed_before, failed_before) = checkpoints(control).expect("status");
    stdin.write_all(second.as_bytes()).expect("second third");
    wait_for_counters(
        &mut run,
        control,
        "two declined checkpoints",
        |_, failed| failed >= failed_before + 2,
    );
    let (completed_while_down, _) = checkpoints(control).expect("status");
    assert!(
        completed_while_down <= completed_before + 1,
        "no checkpoint completes without its storage ({completed_before} -> {completed_while_down})"
    );
    // It comes back: the next checkpoint commits everything the declined ones held.
    minio.up();
    wait_for_counters(
        &mut run,
        control,
        "a checkpoint after the restart",
        |completed, _| completed > completed_while_down,
    );
    stdin.write_all(third.as_bytes()).expect("last third");
    drop(stdin);
    let status = run.wait().expect("wait");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert!(status.success(), "{log}");
    assert!(
        log.contains("declined: writing it to s3://headwater/declines-")
            && log.contains("the next checkpoint takes its data"),
        "the declines are logged with their cause: {log}"
    );
    assert_same(
        &committed_rows(dir.path(), "p"),
        &tumbling_oracle(&input, 10_000),
        "checkpoints declined while the storage was down",
    );
}

#[test]
fn a_storage_that_stays_down_stops_the_run_after_the_tolerated_failures() {
    let minio = Minio::start_restartable(ports::process_port(18100, 800, 400));
    let dir = tempfile::tempdir().expect("tempdir");
    let location = format!("s3://headwater/down-{}/p", std::process::id());
    stdin_pipeline(dir.path(), &location, 1);
    let (_, [first, second, _]) = input_thirds(dir.path(), 30_000, 0x5eed_00d2);
    let control = free_port();
    let (mut run, mut stdin) = start_run(dir.path(), &minio, control);
    stdin.write_all(first.as_bytes()).expect("first third");
    wait_for_counters(&mut run, control, "a checkpoint", |completed, _| {
        completed >= 1
    });
    minio.down();
    // Input keeps coming and is never closed: only the failing checkpoints end the run.
    stdin.write_all(second.as_bytes()).expect("second third");
    let status = wait_for_exit(&mut run, "the run to stop", Duration::from_secs(120));
    drop(stdin);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(
        log.matches("declined: writing it to").count(),
        1,
        "one failure is tolerated: {log}"
    );
    let error = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        error.contains(&format!(
            "2 checkpoints in a row could not be written to `{location}`"
        )) && error.contains("tolerable_failures is 1")
            && error.contains("the last failure: checkpoint storage `s3://headwater/down-"),
        "{error}"
    );
}

/// A checkpoint store on a full file system: a small tmpfs of the run's own (a private mount
/// namespace made with `unshare`, so the test needs no root) filled to the last byte with a
/// ballast file. Checkpoints fail with "No space left on device" and are declined; once the
/// ballast is deleted they succeed again, and the committed output is exact.
#[test]
fn checkpoints_on_a_full_disk_are_declined_until_space_returns_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("mkdir store");
    // The test's small file system needs an unprivileged mount namespace; say so plainly when
    // the machine refuses one (a chroot does: the kernel refuses user namespaces there).
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output()
        .expect("unshare (util-linux) runs the host in a mount namespace of its own");
    assert!(
        probe.status.success(),
        "this test mounts a small tmpfs in a user and mount namespace of its own, and this \
         machine refuses one (`unshare --user --map-root-user --mount true`: {}); enable \
         unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or run the \
         suite outside a chroot",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let location = format!("file://{}/p", store.display());
    stdin_pipeline(dir.path(), &location, 100);
    let (input, [first, second, third]) = input_thirds(dir.path(), 60_000, 0x5eed_00d3);
    let control = free_port();
    // The mount exists only inside the namespace; `exec` keeps the pid, so the test reaches
    // the ballast through /proc/<pid>/root.
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs '{store}' && (cat /dev/zero > '{store}/ballast' 2>/dev/null; true) \
         && exec '{bin}' run p.yaml --fresh -q --control 127.0.0.1:{control}",
        store = store.display(),
        bin = bin_path(),
    );
    let mut run = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "bash",
            "-c",
            &script,
        ])
        .env_remove("HEADWATER_CRASH_AT")
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
        .spawn()
        .expect("unshare (util-linux) runs the host in a mount namespace of its own");
    let mut stdin = run.stdin.take().expect("stdin");
    stdin.write_all(first.as_bytes()).expect("first third");
    wait_for_counters(
        &mut run,
        control,
        "two declined checkpoints",
        |_, failed| failed >= 2,
    );
    let (completed, _) = checkpoints(control).expect("status");
    assert_eq!(completed, 0, "nothing fits on the full disk");
    stdin.write_all(second.as_bytes()).expect("second third");
    // Space comes back.
    let ballast = PathBuf::from(format!("/proc/{}/root", run.id()))
        .join(store.strip_prefix("/").expect("absolute"))
        .join("ballast");
    std::fs::remove_file(&ballast).expect("delete the ballast in the run's mount namespace");
    wait_for_counters(
        &mut run,
        control,
        "a checkpoint once space returned",
        |completed, _| completed >= 1,
    );
    stdin.write_all(third.as_bytes()).expect("last third");
    drop(stdin);
    let status = run.wait().expect("wait");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert!(status.success(), "{log}");
    assert!(
        log.contains("No space left on device") && log.contains("declined"),
        "the declines name their cause: {log}"
    );
    assert_same(
        &committed_rows(dir.path(), "p"),
        &tumbling_oracle(&input, 10_000),
        "checkpoints declined while the disk was full",
    );
}
