//! Checkpoint benchmarks.
//!
//! `checkpoint_incremental`: a stateful task's RocksDB instance of a given size (random 1 KB
//! values), then rounds of "change 1% of the keys, take a checkpoint" through the same code
//! the coordinator runs (RocksDB checkpoint, content-named incremental upload, manifest
//! written last). Prints the checkpoint duration and the bytes uploaded per round against the
//! total state size: the claim is that both follow the changed state, not the total.
//!
//! `recovery_local` / `recovery_object_store`: the run's real recovery path
//! (`checkpoint::recovery::prepare`) for that state, once with the local copy of the newest
//! checkpoint present (a kill -9 on the same machine) and once with the local state folder
//! deleted (a new machine: every file comes from the object store).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headwater::checkpoint::files::{SharedUploader, UploadStats, Uploader};
use headwater::checkpoint::manifest::{Manifest, ManifestKind, TaskState, FORMAT};
use headwater::checkpoint::preupload::PreUploader;
use headwater::checkpoint::recovery::{self, live_dir, Layout, StartMode};
use headwater::checkpoint::storage::CheckpointStorage;
use headwater::state::StateStore;

const VALUE_BYTES: usize = 1000;
const ROUNDS: u64 = 8;
/// Between a round's writes and its checkpoint: a checkpoint interval, during which
/// compactions run (and, in the second phase, the background uploader).
const PAUSE: Duration = Duration::from_secs(1);

/// A fast deterministic generator for keys to change and incompressible values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn key(i: u64) -> Vec<u8> {
    // Like real state: key group, operator id, tag, then the key.
    let kg = (i % 128) as u16;
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&kg.to_be_bytes());
    k.extend_from_slice(&1u16.to_be_bytes());
    k.push(1);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn write_keys(store: &StateStore, keys: impl Iterator<Item = u64>, rng: &mut Rng) -> Result<()> {
    let mut batch = rocksdb_batch();
    let mut value = vec![0u8; VALUE_BYTES];
    for i in keys {
        rng.fill(&mut value);
        batch.put(key(i), &value);
        if batch.len() >= 10_000 {
            store.write(std::mem::replace(&mut batch, rocksdb_batch()))?;
        }
    }
    store.write(batch)?;
    Ok(())
}

fn rocksdb_batch() -> headwater::state::store::WriteBatch {
    headwater::state::store::WriteBatch::default()
}

/// Runs the benchmark for each state size (MB); `emit` prints a result line.
pub fn run(work: &Path, sizes_mb: &[u64], emit: &dyn Fn(serde_json::Value)) -> Result<()> {
    for &mb in sizes_mb {
        one_size(work, mb, emit).with_context(|| format!("checkpoint benchmark at {mb} MB"))?;
    }
    Ok(())
}

fn one_size(work: &Path, mb: u64, emit: &dyn Fn(serde_json::Value)) -> Result<()> {
    let dir = work.join(format!("checkpoint-{mb}mb"));
    let _ = std::fs::remove_dir_all(&dir);
    let state_dir = dir.join("state");
    let location = format!("file://{}", dir.join("store").display());
    let storage = CheckpointStorage::open(&location)?;
    let keys = mb * 1_000_000 / VALUE_BYTES as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ mb);
    let store = StateStore::open_fresh(&live_dir(&state_dir, 1, 0))?;
    let filled = Instant::now();
    write_keys(&store, 0..keys, &mut rng)?;
    let fill_secs = filled.elapsed().as_secs_f64();

    // Phase 1: checkpoints upload everything themselves. Phase 2: the same, with the
    // background uploader sending SST files ahead (as runs do). Same pause between a round's
    // writes and its checkpoint (the checkpoint interval, during which compactions run).
    let uploader: SharedUploader = Arc::new(Mutex::new(Uploader::new(&storage)?));
    let changed = (keys / 100).max(1);
    let mut ctx = Rounds {
        storage: &storage,
        store: &store,
        state_dir: &state_dir,
        uploader: uploader.clone(),
        keys,
        changed,
        rng: &mut rng,
        next_id: 1,
        last_total: 0,
    };
    let plain = ctx.rounds(ROUNDS + 1)?;
    let ahead = {
        let preuploader = PreUploader::start(
            CheckpointStorage::open(&location)?,
            uploader.clone(),
            vec![("s1-t0".to_string(), live_dir(&state_dir, 1, 0))],
        )?;
        let mut r = ctx.rounds(ROUNDS)?;
        r.ahead_bytes = preuploader.stats.bytes.load(Ordering::Relaxed);
        r.ahead_files = preuploader.stats.files.load(Ordering::Relaxed);
        r
    };
    let last_total = ctx.last_total;
    drop(store);
    for (name, r) in [
        ("checkpoint_incremental", &plain),
        ("checkpoint_incremental_ahead", &ahead),
    ] {
        let up: Vec<f64> = r.uploads.iter().map(|b| *b as f64).collect();
        emit(json!({
            "name": name,
            "state_mb": mb,
            "state_bytes": last_total,
            "changed_keys_fraction": 0.01,
            "rounds": r.times.len(),
            "pause_ms": PAUSE.as_millis() as u64,
            "checkpoint_ms_median": round1(median(&r.times)),
            "checkpoint_ms_max": round1(r.times.iter().copied().fold(0.0, f64::max)),
            "snapshot_ms_median": round1(median(&r.snapshots)),
            "uploaded_bytes_median": median(&up) as u64,
            "uploaded_bytes_max": r.uploads.iter().copied().max().unwrap_or(0),
            "uploaded_fraction_of_state_median": round3(median(&up) / last_total.max(1) as f64),
            "uploaded_ahead_bytes": r.ahead_bytes,
            "uploaded_ahead_files": r.ahead_files,
            "fill_seconds": round1(fill_secs),
        }));
    }
    emit(json!({
        "name": "checkpoint_incremental_ahead_ratio",
        "state_mb": mb,
        "checkpoint_ms_median_ratio": round3(median(&ahead.times) / median(&plain.times).max(0.001)),
        "checkpoint_ms_max_ratio": round3(
            ahead.times.iter().copied().fold(0.0, f64::max)
                / plain.times.iter().copied().fold(0.0, f64::max).max(0.001)
        ),
    }));

    let layout = Layout {
        pipeline: "bench",
        state_dir: &state_dir,
        parallelism: 1,
        max_parallelism: 128,
        stateful_stages: vec![1],
        operators: vec!["s1:op1:window".into()],
        participants: vec![std::sync::Arc::new(headwater::dlq::DlqFileCommitter::new(
            &dir.join("dlq.jsonl"),
        ))],
    };
    for (name, wipe_local) in [("recovery_local", false), ("recovery_object_store", true)] {
        if wipe_local {
            std::fs::remove_dir_all(&state_dir)?;
        }
        let started = Instant::now();
        let start = recovery::prepare(&location, &StartMode::Resume, &layout)?;
        let store = StateStore::open(&live_dir(&state_dir, 1, 0))?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let restored = start.restored.context("nothing restored")?;
        anyhow::ensure!(
            store.get(&key(0))?.is_some(),
            "restored state lacks its first key"
        );
        emit(json!({
            "name": name,
            "state_mb": mb,
            "state_bytes": last_total,
            "recovery_ms": round1(ms),
            "reused_files": restored.stats.reused_files,
            "downloaded_files": restored.stats.downloaded_files,
            "downloaded_bytes": restored.stats.downloaded_bytes,
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The checkpoint rounds of one benchmark phase.
struct Rounds<'a> {
    storage: &'a CheckpointStorage,
    store: &'a StateStore,
    state_dir: &'a Path,
    uploader: SharedUploader,
    keys: u64,
    changed: u64,
    rng: &'a mut Rng,
    next_id: u64,
    last_total: u64,
}

#[derive(Default)]
struct PhaseResult {
    times: Vec<f64>,
    snapshots: Vec<f64>,
    uploads: Vec<u64>,
    ahead_bytes: u64,
    ahead_files: u64,
}

impl Rounds<'_> {
    /// `n` rounds of "change 1% of the keys, wait PAUSE, checkpoint" (the first round of a
    /// fresh store only checkpoints, unmeasured).
    fn rounds(&mut self, n: u64) -> Result<PhaseResult> {
        let mut out = PhaseResult::default();
        for _ in 0..n {
            let id = self.next_id;
            self.next_id += 1;
            let measured = id > 1;
            if measured {
                // About 1% of the keys change between two checkpoints.
                let start = self.rng.next() % self.keys;
                let (keys, changed) = (self.keys, self.changed);
                write_keys(
                    self.store,
                    (0..changed).map(|j| (start + j * 97) % keys),
                    self.rng,
                )?;
                std::thread::sleep(PAUSE);
            }
            let started = Instant::now();
            let local = self
                .state_dir
                .join("checkpoints")
                .join(id.to_string())
                .join("s1-t0");
            std::fs::create_dir_all(local.parent().context("parent")?)?;
            self.store.checkpoint_to(&local)?;
            let snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
            let mut stats = UploadStats::default();
            let files = self
                .uploader
                .lock()
                .map_err(|_| anyhow::anyhow!("uploader poisoned"))?
                .upload_dir(self.storage, "s1-t0", &local, &mut stats)?;
            let manifest = Manifest {
                format: FORMAT,
                id,
                kind: ManifestKind::Checkpoint,
                pipeline: "bench".into(),
                started_ms: 0,
                duration_ms: 0,
                parallelism: 1,
                max_parallelism: 128,
                finished: false,
                operators: vec!["s1:op1:window".into()],
                sources: vec![],
                tasks: vec![TaskState {
                    stage: 1,
                    task: 0,
                    key_groups: (0, 127),
                    watermark: 0,
                    files,
                    channel: None,
                }],
                commits: vec![],
                state_bytes: stats.total_bytes,
                uploaded_bytes: stats.uploaded_bytes,
                dlq_len: None,
                sink_channels: Vec::new(),
                udf_modules: Default::default(),
            };
            self.storage.write_manifest(&manifest)?;
            let total_ms = started.elapsed().as_secs_f64() * 1e3;
            self.last_total = stats.total_bytes;
            if measured {
                out.times.push(total_ms);
                out.snapshots.push(snapshot_ms);
                out.uploads.push(stats.uploaded_bytes);
                // Only the newest local copy is kept, as the coordinator does.
                let _ = std::fs::remove_dir_all(
                    self.state_dir
                        .join("checkpoints")
                        .join((id - 1).to_string()),
                );
            }
        }
        Ok(out)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
