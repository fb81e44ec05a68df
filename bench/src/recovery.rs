//! Recovery as a user sees it: how long after `headwater run` starts does a restarted pipeline
//! produce its first result, at each state size?
//!
//! For each size, a keyed tumbling window (`max` of a ~1 KB string per key, so the state is
//! about `keys × 1 KB`) is filled by a first run of the real binary, which is stopped with
//! Ctrl-C once every key is in (it stops at a checkpoint). The keys' windows are in the second
//! hour; one more key (`early`) has a window in the first, which a watermark held back an
//! hour (`max_out_of_orderness: 1h`) keeps open. The input is then cut at the
//! checkpoint's position and one record appended whose watermark closes the first hour only.
//! The second run is timed from the moment its process is spawned: `first_result_ms` to its
//! first output line, the `early` window (state restored, timer indexes rebuilt from the
//! whole state, the record read, one window fired), `all_results_ms` to the last restored
//! window's result, fired by the end of the input (the whole state read back). Twice: with the local copy of the checkpoint (a
//! restart on the same machine) and with the local state deleted (everything downloaded from
//! the checkpoint store, here a folder: the cost of a new machine, minus the network).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

/// Bytes of the string each key keeps.
const PAYLOAD: usize = 1000;
/// Filtered-out records after the keys, so that Ctrl-C lands before the end of the input.
const FILLER: u64 = 4_000_000;
const NAME: &str = "recovery";

/// The `headwater` binary next to this benchmark's.
fn headwater() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let bin = exe.with_file_name("headwater");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (`./dev bench` does)",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn run(
    work: &Path,
    sizes_mb: &[u64],
    parallelism: usize,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    let bin = headwater()?;
    for &mb in sizes_mb {
        one_size(&bin, work, mb, parallelism, emit)
            .with_context(|| format!("recovery benchmark at {mb} MB"))?;
    }
    Ok(())
}

fn one_size(
    bin: &Path,
    work: &Path,
    mb: u64,
    parallelism: usize,
    emit: &dyn Fn(serde_json::Value),
) -> Result<()> {
    let dir = work.join(format!("recovery-{mb}mb"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("input"))?;
    let keys = (mb * 1_000_000 / PAYLOAD as u64).max(1);
    let input = dir.join("input/events.jsonl");
    write_input(&input, keys)?;
    std::fs::write(dir.join("p.yaml"), pipeline(parallelism))?;

    let fill = Instant::now();
    fill_state(bin, &dir, keys)?;
    let fill_secs = fill.elapsed().as_secs_f64();
    let (offset, state_bytes) = newest_position(&dir)?;
    // Cut the input where the checkpoint stopped and add the record that fires the windows.
    let file = std::fs::OpenOptions::new().write(true).open(&input)?;
    file.set_len(offset)?;
    drop(file);
    let mut f = std::fs::OpenOptions::new().append(true).open(&input)?;
    // Watermark 7,200,001 - 1 h - 1 ms: closes the first hour, not the second.
    writeln!(f, r#"{{"ts":7200001,"k":"trigger"}}"#)?;
    drop(f);

    let copy = work.join(format!("recovery-{mb}mb-store"));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&dir, &copy)?;
    std::fs::remove_dir_all(copy.join(format!(".headwater/{NAME}/state")))
        .context("deleting the local state of the copy")?;

    for (variant, at) in [("local", &dir), ("from_store", &copy)] {
        let r = restart(bin, at, keys)?;
        emit(json!({
            "name": format!("recovery_user_visible_{variant}"),
            "state_mb": mb,
            "state_bytes": state_bytes,
            "keys": keys,
            "parallelism": parallelism,
            "first_result_ms": r.first_ms,
            "all_results_ms": r.all_ms,
            "run_ms": r.run_ms,
            "fill_seconds": (fill_secs * 10.0).round() / 10.0,
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
    Ok(())
}

fn pipeline(parallelism: usize) -> String {
    format!(
        "name: {NAME}\nparallelism: {parallelism}\nsources:\n  in: {{ type: file, path: input/events.jsonl, event_time: {{ field: ts, max_out_of_orderness: 1h }} }}\n\
steps:\n  - filter: \"k != 'filler'\"\n  - key_by: k\n  - window: {{ type: tumbling, size: 1h, aggregates: {{ m: max(p) }} }}\n\
sinks:\n  out: {{ type: stdout }}\noutput: out\ncheckpoint: {{ interval: 500ms }}\ntuning: {{ progress_interval: 0s }}\n"
    )
}

/// One record in the first hour, `keys` records of distinct keys in the second, then the
/// filler (second hour too).
fn write_input(path: &Path, keys: u64) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, r#"{{"ts":0,"k":"early","p":"e"}}"#)?;
    let pad: String = (0..PAYLOAD - 8)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for i in 0..keys {
        writeln!(
            out,
            r#"{{"ts":{},"k":"k{i:08}","p":"{i:08}{pad}"}}"#,
            3_600_000 + i % 3_600_000
        )?;
    }
    for i in 0..FILLER {
        writeln!(out, r#"{{"ts":{},"k":"filler"}}"#, 7_199_000 + i % 1000)?;
    }
    out.flush()?;
    Ok(())
}

/// The first run: reads every key, then is stopped with Ctrl-C (a checkpoint, then exit).
fn fill_state(bin: &Path, dir: &Path, keys: u64) -> Result<()> {
    let control = free_address()?;
    let mut child = Command::new(bin)
        .current_dir(dir)
        .args(["run", "p.yaml", "-q", "--fresh", "--control"])
        .arg(control.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the first run")?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the first run ended ({status}) before every key was read: more filler needed");
        }
        if records_in(control).is_some_and(|n| n > keys + 10_000) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the first run did not read its keys in 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    if !interrupted.success() {
        bail!("could not send Ctrl-C to the first run");
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the first run failed after Ctrl-C: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The source position and state size of the newest checkpoint.
fn newest_position(dir: &Path) -> Result<(u64, u64)> {
    let manifests = dir.join(format!(".headwater/{NAME}/checkpoints/manifests"));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&manifests)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let newest = names.last().context("the first run left no checkpoint")?;
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(newest)?)?;
    let source = &m["sources"][0];
    if source["ended"].as_bool() == Some(true) {
        bail!("the first run read its whole input before Ctrl-C: more filler needed");
    }
    let offset = source["position"]["offset"]
        .as_u64()
        .context("no source position in the newest manifest")?;
    Ok((offset, m["state_bytes"].as_u64().unwrap_or(0)))
}

struct Restart {
    first_ms: f64,
    all_ms: f64,
    run_ms: f64,
}

/// The timed second run: the `early` window first, then at the end of the input every
/// restored key's window and the trigger's.
fn restart(bin: &Path, dir: &Path, keys: u64) -> Result<Restart> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .current_dir(dir)
        .args(["run", "p.yaml", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the second run")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut first = None;
    let mut restored = 0u64;
    let mut all = None;
    for line in BufReader::with_capacity(1 << 20, stdout).lines() {
        let line = line?;
        if line.contains("\"early\"") {
            first.get_or_insert_with(|| started.elapsed());
        } else if !line.contains("\"trigger\"") {
            restored += 1;
            if restored == keys {
                all = Some(started.elapsed());
            }
        }
    }
    let out = child.wait_with_output()?;
    let run = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("the second run failed: {stderr}");
    }
    // Only a run that restored the state has these windows to fire.
    if restored != keys || first.is_none() {
        bail!(
            "the second run fired {restored} restored windows (expected {keys}) and {} the early one: {stderr}",
            if first.is_some() { "" } else { "not" }
        );
    }
    let ms =
        |d: Option<Duration>| d.map_or(f64::NAN, |d| (d.as_secs_f64() * 10_000.0).round() / 10.0);
    Ok(Restart {
        first_ms: ms(first),
        all_ms: ms(all),
        run_ms: ms(Some(run)),
    })
}

fn free_address() -> Result<SocketAddr> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?)
}

/// `records_in` from the control API's `/status`.
fn records_in(address: SocketAddr) -> Option<u64> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let body = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status: serde_json::Value = serde_json::from_slice(&response[body..]).ok()?;
    status["records_in"].as_u64()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("cp -a")?
        .success();
    if !ok {
        bail!("could not copy {} to {}", from.display(), to.display());
    }
    Ok(())
}
