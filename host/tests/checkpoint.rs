//! Exactly-once across crashes: pipelines killed with SIGKILL at random moments (and on
//! purpose at the delicate points of a checkpoint), restarted each time, with or without a
//! change of parallelism, must commit exactly the output an independent oracle computes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::s3::Minio;
use common::*;

#[test]
fn tumbling_windows_survive_sigkills_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input_with_bad_lines(dir.path(), 4, 250_000, 0x5eed_0001, 5_000);
    let p = pipeline(dir.path(), "tumbling", "type: tumbling\n      size: 10s");
    let landed = chaos(dir.path(), &p, 22, 7, &[2]);
    eprintln!("tumbling: {landed} kills landed");
    assert!(
        landed >= 20,
        "only {landed} kills landed before the input ran out"
    );
    // The dead-letter queue is an output too: every bad line exactly once.
    let dlq =
        std::fs::read_to_string(dir.path().join(".headwater/tumbling/dlq.jsonl")).expect("dlq");
    let mut raws: Vec<String> = dlq
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("envelope")["raw"]
                .as_str()
                .expect("raw")
                .to_string()
        })
        .collect();
    raws.sort();
    let mut expected: Vec<String> = (0..4)
        .flat_map(|f| {
            (0..250_000)
                .filter(|i| i % 5_000 == 4_999)
                .map(move |i| format!("not json {f}-{i}"))
        })
        .collect();
    expected.sort();
    assert_eq!(
        raws.len(),
        expected.len(),
        "dead letters: none lost, none twice"
    );
    assert_eq!(raws, expected);
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "tumbling",
    );
}

#[test]
fn unaligned_checkpoints_store_in_flight_records_and_survive_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 4, 250_000, 0x5eed_0003);
    let p = pipeline_with(
        dir.path(),
        "sessions",
        "type: session\n      gap: 20s",
        ", mode: unaligned, retain: 1000",
    );
    let manifests = dir.path().join(".headwater/sessions/checkpoints/manifests");
    let mut rng = Rng(13);
    let (mut landed, mut with_channel) = (0, 0usize);
    for attempt in 0..40 {
        if landed >= 20 {
            break;
        }
        let p_now = [2, 3, 1][attempt % 3];
        let after = Duration::from_millis(20 + rng.below(130));
        let (status, killed, stderr) = run_once(dir.path(), &p, p_now, Some(after), None, &[]);
        if !killed {
            assert!(status.success(), "{stderr}");
            break;
        }
        landed += 1;
    }
    let (status, _, stderr) = run_once(dir.path(), &p, 2, None, None, &[]);
    assert!(status.success(), "final run failed: {stderr}");
    assert!(landed >= 20, "only {landed} kills landed");
    // Every manifest is kept (retain: 1000): count those that stored records in flight.
    for e in std::fs::read_dir(&manifests).expect("manifests").flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if text.contains("\"channel\"") {
            with_channel += 1;
        }
    }
    assert!(
        with_channel > 0,
        "no unaligned checkpoint stored in-flight records; the test did not exercise them"
    );
    assert_same(
        &committed_rows(dir.path(), "sessions"),
        &session_oracle(&input, 20_000),
        "unaligned sessions",
    );
}

#[test]
fn unaligned_barriers_overtake_a_busy_sink_and_its_in_flight_results_survive_sigkills() {
    // A pass-through pipeline: the single file sink is its bottleneck, so results queue in
    // front of it and unaligned barriers overtake them into the checkpoint.
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 4, 500_000, 0x5eed_0004);
    let p = passthrough_pipeline(dir.path());
    let landed = chaos(dir.path(), &p, 12, 17, &[2, 3, 1]);
    assert!(landed >= 12, "only {landed} kills landed");
    let manifests = dir.path().join(".headwater/pass/checkpoints/manifests");
    let with_sink_channel = std::fs::read_dir(&manifests)
        .expect("manifests")
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("\"sink_channels\"")
        })
        .count();
    assert!(
        with_sink_channel > 0,
        "no checkpoint stored results in flight to the sink; the test did not exercise them"
    );
    assert_no_dead_letters(dir.path(), "pass");
    let mut want: Vec<(String, i64, i64)> = input
        .into_iter()
        .map(|(_, user, t, v)| (user, t, v))
        .collect();
    want.sort();
    let got = committed_passthrough(dir.path(), "pass");
    if got != want {
        let (mut g, mut w) = (got.iter().peekable(), want.iter().peekable());
        let (mut missing, mut extra) = (Vec::new(), Vec::new());
        loop {
            match (g.peek(), w.peek()) {
                (Some(a), Some(b)) if a == b => {
                    g.next();
                    w.next();
                }
                (Some(a), Some(b)) if a < b => extra.extend(g.next()),
                (_, Some(_)) => missing.extend(w.next()),
                (Some(_), None) => extra.extend(g.next()),
                (None, None) => break,
            }
        }
        panic!(
            "committed {} lines, expected {}: {} missing (first {:?}), {} extra or duplicated (first {:?}); {with_sink_channel} checkpoints had sink channel state",
            got.len(),
            want.len(),
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first()
        );
    }
}

#[test]
fn a_missing_sink_in_flight_file_is_named_and_the_previous_checkpoint_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 4, 250_000, 0x5eed_0005);
    let p = passthrough_pipeline(dir.path());
    // Stopped after its 3rd checkpoint's manifest (the input lasts several; not a timed kill,
    // which a fast machine can outrun).
    let (status, _, stderr) = run_once(dir.path(), &p, 2, None, Some("manifest-written:3"), &[]);
    assert!(
        !status.success() && stderr.contains("aborting on purpose"),
        "the run should abort after its 3rd checkpoint: {status:?} {stderr}"
    );
    let root = dir.path().join(".headwater/pass/checkpoints");
    let mut ids: Vec<PathBuf> = std::fs::read_dir(root.join("manifests"))
        .expect("manifests")
        .flatten()
        .map(|e| e.path())
        .collect();
    ids.sort();
    // Make the newest checkpoint with results in flight to the sink the newest of all.
    let (newest, key) = loop {
        let path = ids
            .pop()
            .expect("a checkpoint with results in flight to the sink");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        match m["sink_channels"][0]["file"]["key"].as_str() {
            Some(key) => break (path, key.to_string()),
            None => std::fs::remove_file(&path).expect("drop manifest"),
        }
    };
    assert!(!ids.is_empty(), "an older checkpoint to fall back to");
    std::fs::remove_file(root.join(&key)).expect("delete the in-flight file");
    let (status, _, stderr) = run_once(dir.path(), &p, 2, None, None, &[]);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&key) && stderr.contains("is missing"),
        "the missing file is named ({}): {stderr}",
        newest.display()
    );
    let mut want: Vec<(String, i64, i64)> = input
        .into_iter()
        .map(|(_, user, t, v)| (user, t, v))
        .collect();
    want.sort();
    let got = committed_passthrough(dir.path(), "pass");
    assert_eq!(got.len(), want.len(), "committed lines after falling back");
    assert!(got == want, "committed lines differ from the input");
}

#[test]
fn session_windows_survive_sigkills_and_parallelism_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 4, 250_000, 0x5eed_0002);
    let p = pipeline(dir.path(), "sessions", "type: session\n      gap: 20s");
    let landed = chaos(dir.path(), &p, 22, 11, &[2, 3, 1]);
    eprintln!("sessions: {landed} kills landed");
    assert!(
        landed >= 20,
        "only {landed} kills landed before the input ran out"
    );
    assert_no_dead_letters(dir.path(), "sessions");
    assert_same(
        &committed_rows(dir.path(), "sessions"),
        &session_oracle(&input, 20_000),
        "sessions",
    );
}

/// Runs a tumbling pipeline on fresh input and kills it once it has a few checkpoints.
///
/// How far a run gets between checkpoints depends on the machine; when a run finishes
/// before its third checkpoint, the attempt starts over with twice the input.
fn partial_run(dir: &Path, records_per_file: usize, seed: u64) -> (PathBuf, Vec<Input>) {
    let mut records = records_per_file;
    for _ in 0..4 {
        if let Some(done) = try_partial_run(dir, records, seed) {
            return done;
        }
        for sub in ["input", "out", ".headwater"] {
            let _ = std::fs::remove_dir_all(dir.join(sub));
        }
        records *= 2;
    }
    panic!("every run finished before three checkpoints, even with {records} records per file");
}

fn try_partial_run(
    dir: &Path,
    records_per_file: usize,
    seed: u64,
) -> Option<(PathBuf, Vec<Input>)> {
    let input = write_input(dir, 2, records_per_file, seed);
    let p = pipeline(dir, "tumbling", "type: tumbling\n      size: 10s");
    let manifests = dir.join(".headwater/tumbling/checkpoints/manifests");
    let mut child = headwater()
        .current_dir(dir)
        .args(["run", "tumbling.yaml", "-q"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    loop {
        let n = std::fs::read_dir(&manifests)
            .map(|d| d.count())
            .unwrap_or(0);
        if n >= 3 && newest_has_a_file_of_its_own(&manifests) {
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            eprintln!("the run finished before three checkpoints; trying with more input");
            return None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoints"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    Some((p, input))
}

/// The object keys a manifest needs.
fn manifest_keys(path: &Path) -> Vec<String> {
    let Ok(m) =
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap_or_default())
    else {
        return Vec::new();
    };
    m["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .flat_map(|t| t["files"].as_array().cloned().unwrap_or_default())
                .filter_map(|f| f["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// True when the newest manifest needs a state file no older one needs (state changed).
fn newest_has_a_file_of_its_own(manifests: &Path) -> bool {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(manifests)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    let Some((newest, older)) = paths.split_last() else {
        return false;
    };
    let older: Vec<String> = older.iter().flat_map(|p| manifest_keys(p)).collect();
    manifest_keys(newest).iter().any(|k| !older.contains(k))
}

fn manifest_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> =
        std::fs::read_dir(dir.join(".headwater/tumbling/checkpoints/manifests"))
            .expect("manifests")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // A run killed while writing a manifest can leave the store's staging file
            // (`<id>.json#<n>`, possibly a hard link to the manifest): not a manifest.
            .filter(|name| name.ends_with(".json"))
            .collect();
    ids.sort();
    ids
}

fn run_to_end(dir: &Path, args: &[&str]) -> String {
    let out = headwater()
        .current_dir(dir)
        .arg("run")
        .arg("tumbling.yaml")
        .args(args)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run failed: {stderr}");
    stderr
}

#[test]
fn resuming_does_not_depend_on_how_the_pipeline_path_is_spelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, input) = partial_run(dir.path(), 200_000, 26);
    // The first run was started as `tumbling.yaml` from its folder; resume it by another
    // path, from another working directory.
    let parent = dir.path().parent().expect("parent");
    let name = dir.path().file_name().expect("name");
    let out = headwater()
        .current_dir(parent)
        .arg("run")
        .arg(Path::new(name).join("tumbling.yaml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");
    let dlq = std::fs::read_to_string(dir.path().join(".headwater/tumbling/dlq.jsonl"))
        .unwrap_or_default();
    assert!(
        dlq.is_empty(),
        "no record was re-read as late: {}",
        &dlq[..dlq.len().min(300)]
    );
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "resumed by another path",
    );
}

#[test]
fn a_damaged_newest_manifest_is_named_and_the_previous_checkpoint_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, input) = partial_run(dir.path(), 200_000, 21);
    let ids = manifest_ids(dir.path());
    let newest = ids.last().expect("a manifest").clone();
    std::fs::write(
        dir.path()
            .join(".headwater/tumbling/checkpoints/manifests")
            .join(&newest),
        b"{ \"format\": 1, \"id\": ",
    )
    .expect("damage");
    let stderr = run_to_end(dir.path(), &[]);
    assert!(
        stderr.contains(&newest) && stderr.contains("trying an older one"),
        "the damaged manifest is named: {stderr}"
    );
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "after falling back",
    );
}

#[test]
fn a_missing_state_file_is_named_and_the_previous_checkpoint_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, input) = partial_run(dir.path(), 200_000, 22);
    let root = dir.path().join(".headwater/tumbling/checkpoints");
    let ids = manifest_ids(dir.path());
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join("manifests").join(name)).expect("read"))
            .expect("json")
    };
    let keys = |m: &serde_json::Value| -> Vec<String> {
        m["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .flat_map(|t| t["files"].as_array().expect("files").iter())
            .map(|f| f["key"].as_str().expect("key").to_string())
            .collect()
    };
    let newest = read(ids.last().expect("newest"));
    let older: Vec<String> = ids[..ids.len() - 1]
        .iter()
        .flat_map(|i| keys(&read(i)))
        .collect();
    let only_newest = keys(&newest)
        .into_iter()
        .find(|k| !older.contains(k))
        .expect("the newest checkpoint has a file of its own");
    std::fs::remove_file(root.join(&only_newest)).expect("delete");
    // The local copy would otherwise stand in for the object store.
    std::fs::remove_dir_all(dir.path().join(".headwater/tumbling/state/checkpoints"))
        .expect("drop local copies");
    let stderr = run_to_end(dir.path(), &[]);
    assert!(
        stderr.contains(&only_newest) && stderr.contains("is missing"),
        "the missing file is named: {stderr}"
    );
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "after falling back",
    );
}

#[test]
fn no_usable_checkpoint_is_an_error_that_suggests_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, input) = partial_run(dir.path(), 200_000, 23);
    for id in manifest_ids(dir.path()) {
        std::fs::write(
            dir.path()
                .join(".headwater/tumbling/checkpoints/manifests")
                .join(id),
            b"garbage",
        )
        .expect("damage");
    }
    let out = headwater()
        .current_dir(dir.path())
        .args(["run", "tumbling.yaml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no usable checkpoint") && stderr.contains("--fresh"),
        "{stderr}"
    );
    // Starting over is always possible, and then exact again.
    run_to_end(dir.path(), &["--fresh"]);
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "after --fresh",
    );
}

#[test]
fn a_savepoint_restores_elsewhere_with_another_parallelism() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, input) = partial_run(dir.path(), 200_000, 24);
    let list = headwater()
        .current_dir(dir.path())
        .args(["checkpoints", "list", "tumbling.yaml"])
        .output()
        .expect("list");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    assert!(
        text.contains("duration") && text.contains("uploaded") && text.contains("complete"),
        "{text}"
    );
    let show = headwater()
        .current_dir(dir.path())
        .args(["checkpoints", "show", "tumbling.yaml"])
        .output()
        .expect("show");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("sources:") && text.contains("part-0.jsonl") && text.contains("key groups"),
        "{text}"
    );
    let sp = dir.path().join("savepoints/one");
    let out = headwater()
        .current_dir(dir.path())
        .args(["savepoint", "tumbling.yaml", "--to"])
        .arg(&sp)
        .output()
        .expect("savepoint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sp.join("manifest.json").exists());
    // The savepoint stands alone: the checkpoints and local state can go.
    std::fs::remove_dir_all(dir.path().join(".headwater")).expect("remove checkpoints");
    let stderr = run_to_end(
        dir.path(),
        &["-p", "3", "--from", sp.to_str().expect("utf8")],
    );
    assert!(stderr.contains("parallelism 2 -> 3"), "{stderr}");
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "restored from a savepoint with parallelism 3",
    );
}

#[test]
fn ctrl_c_stops_at_a_checkpoint_and_the_next_run_continues_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 2, 400_000, 25);
    pipeline(dir.path(), "tumbling", "type: tumbling\n      size: 10s");
    let mut child = headwater()
        .current_dir(dir.path())
        .args(["run", "tumbling.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Ctrl-C once the run is under way: it has taken a checkpoint.
    wait_for_running(
        &mut child,
        "the run's first checkpoint",
        Duration::from_secs(60),
        || newest_checkpoint(dir.path(), "tumbling") > 0,
    );
    interrupt(&child);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stopped at checkpoint") && stderr.contains("taking a checkpoint"),
        "{stderr}"
    );
    let second = run_to_end(dir.path(), &[]);
    assert!(second.contains("resuming from checkpoint"), "{second}");
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "stopped and resumed",
    );
}

#[test]
fn checkpoints_in_s3_survive_sigkills_and_restore_from_the_object_store_alone() {
    // A port of this test process's own, so concurrent test runs do not share a server.
    let minio = Minio::start(ports::process_port(19100, 800, 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_input(dir.path(), 4, 250_000, 31);
    let prefix = format!("s3://headwater/chaos-{}", std::process::id());
    let p = pipeline_at(
        dir.path(),
        "tumbling",
        "type: tumbling\n      size: 10s",
        &format!("{prefix}/tumbling"),
    );
    // Kill it a few times mid-run (checkpoints every 100 ms go to MinIO), letting each run
    // live a little longer until some checkpoint exists (a loaded machine starts slowly).
    let mut rng = Rng(41);
    let mut landed = 0;
    let list = || {
        headwater()
            .envs(minio.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .args(["checkpoints", "list", "tumbling.yaml"])
            .output()
            .expect("list")
    };
    for attempt in 0..16u64 {
        let after = Duration::from_millis(150 + rng.below(250) + 50 * attempt);
        let (_, killed, _) = run_once(dir.path(), &p, 2, Some(after), None, &minio.env);
        landed += usize::from(killed);
        if landed >= 6 && String::from_utf8_lossy(&list().stdout).contains("complete") {
            break;
        }
    }
    assert!(landed >= 4, "only {landed} kills landed");
    let list = list();
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.status.success() && listing.contains(&prefix) && listing.contains("complete"),
        "{listing}{}",
        String::from_utf8_lossy(&list.stderr)
    );
    // Lose the local disk's state and its checkpoint copies: recovery must come from S3.
    std::fs::remove_dir_all(dir.path().join(".headwater/tumbling/state")).expect("rm state");
    let out = headwater()
        .envs(minio.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.path())
        .args(["run", "tumbling.yaml"])
        .output()
        .expect("resume from S3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let resumed = stderr
        .lines()
        .find(|l| l.starts_with("resuming from checkpoint"))
        .unwrap_or_else(|| panic!("no resume line: {stderr}"));
    assert!(
        resumed.contains(" 0 reused locally") && !resumed.contains(" 0 downloaded"),
        "state came from S3: {resumed}"
    );
    assert_same(
        &committed_rows(dir.path(), "tumbling"),
        &tumbling_oracle(&input, 10_000),
        "S3 checkpoints, restored without local state",
    );
}
