//! Where a run starts: from scratch, from the newest complete checkpoint (the default), or
//! from a checkpoint or savepoint the user names. Restoring rebuilds each stage task's RocksDB
//! folder (reusing local files, downloading the rest; redistributing key groups when the
//! parallelism changed), finishes the sinks' commits the manifest lists and discards output
//! no checkpoint covers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::coordinator::task_dir_name;
use super::files::{materialize, RestoreStats, Uploader};
use super::manifest::{Manifest, PartitionState, TaskState};
use super::participant::CommitParticipant;
use super::storage::{CheckpointStorage, SAVEPOINT_MANIFEST};
use super::{CheckpointError, CheckpointId};
use crate::record::EventTime;
use crate::state::{task_of_key_group, StateStore};

/// How the user asked the run to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StartMode {
    /// Newest complete checkpoint if there is one, else from scratch.
    #[default]
    Resume,
    /// From scratch: earlier checkpoints, state and output are deleted.
    Fresh,
    /// From this checkpoint manifest or savepoint folder.
    From(String),
}

/// What the run needs to know about itself to restore.
pub struct Layout<'a> {
    pub pipeline: &'a str,
    pub state_dir: &'a Path,
    pub parallelism: usize,
    pub max_parallelism: u32,
    /// Stages whose tasks keep RocksDB state.
    pub stateful_stages: Vec<usize>,
    /// Fingerprint of the stateful operators (see [`Manifest::operators`]).
    pub operators: Vec<String>,
    /// Everything that commits output at checkpoints and is recovered before the run starts
    /// (file sinks, the dead-letter file).
    pub participants: Vec<std::sync::Arc<dyn CommitParticipant>>,
}

/// The run's starting point.
pub struct StartPoint {
    pub storage: CheckpointStorage,
    pub uploader: Uploader,
    pub next_id: CheckpointId,
    pub restored: Option<Restored>,
}

/// A restored checkpoint, ready for the tasks.
pub struct Restored {
    pub manifest: Manifest,
    /// Where it was read from (for messages).
    pub location: String,
    pub positions: HashMap<(String, String), PartitionState>,
    /// Watermark of each (stage, task) of this run.
    pub watermarks: HashMap<(usize, usize), EventTime>,
    /// Records in flight at an unaligned checkpoint, per (stage, task) of this run.
    pub channel: HashMap<(usize, usize), Vec<crate::record::Record>>,
    /// Results in flight to sink instances at an unaligned checkpoint: per sink name, per
    /// instance of the checkpointed run.
    pub sink_channel: HashMap<String, Vec<(usize, Vec<crate::value::Value>)>>,
    pub stats: RestoreStats,
    pub rescaled_from: Option<usize>,
    /// Manifests skipped because they were unusable (newest first), with the reason.
    pub skipped: Vec<String>,
}

/// The live RocksDB folder of a stage task.
pub fn live_dir(state_dir: &Path, stage: usize, task: usize) -> PathBuf {
    state_dir.join("live").join(task_dir_name(stage, task))
}

/// The key groups `[first, last]` task `task` owns at `parallelism`.
pub fn key_group_range(task: usize, parallelism: usize, max_parallelism: u32) -> (u16, u16) {
    let owned: Vec<u16> = (0..max_parallelism.min(u32::from(u16::MAX)) as u16)
        .filter(|kg| task_of_key_group(*kg, max_parallelism, parallelism) == task)
        .collect();
    match (owned.first(), owned.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => (1, 0),
    }
}

/// Decides where the run starts and prepares local state and sinks for it.
pub fn prepare(
    location: &str,
    mode: &StartMode,
    layout: &Layout<'_>,
) -> Result<StartPoint, CheckpointError> {
    let storage = CheckpointStorage::open(location)?;
    let ids = storage.list_checkpoints()?;
    // Ids only grow: above every manifest here and every part a file sink committed (a run
    // restored from a savepoint must not reuse a part's name).
    let mut newest = ids.last().copied().unwrap_or(0);
    for p in &layout.participants {
        if let Some(epoch) = p.newest_visible()? {
            newest = newest.max(epoch);
        }
    }
    let next_id = newest + 1;
    match mode {
        StartMode::Fresh => {
            for id in &ids {
                storage.delete(&super::manifest::manifest_key(*id))?;
            }
            for key in storage.list_shared()?.into_keys() {
                storage.delete(&key)?;
            }
            // Dead-letter replays asked of the old run are forgotten with it.
            for key in storage.list_keys(super::storage::REPLAYS)? {
                storage.delete(&key)?;
            }
            start_empty(layout)?;
            let uploader = Uploader::new(&storage)?;
            Ok(StartPoint {
                storage,
                uploader,
                next_id: 1,
                restored: None,
            })
        }
        StartMode::Resume if ids.is_empty() => {
            start_empty(layout)?;
            let uploader = Uploader::new(&storage)?;
            Ok(StartPoint {
                storage,
                uploader,
                next_id,
                restored: None,
            })
        }
        StartMode::Resume => {
            let mut skipped = Vec::new();
            for id in ids.iter().rev() {
                let attempt = storage
                    .read_manifest(*id)
                    .and_then(|m| check_usable(&storage, &m, layout, true).map(|()| m));
                match attempt {
                    Ok(manifest) => {
                        for s in &skipped {
                            tracing::warn!("{s}");
                        }
                        let restored = restore(
                            &storage,
                            manifest,
                            storage.display(&super::manifest::manifest_key(*id)),
                            layout,
                            true,
                            skipped,
                        )?;
                        let uploader = uploader_for(&storage, &restored, layout.state_dir)?;
                        return Ok(StartPoint {
                            storage,
                            uploader,
                            next_id,
                            restored: Some(restored),
                        });
                    }
                    Err(e) => skipped.push(format!(
                        "checkpoint {id} is unusable, trying an older one: {e}"
                    )),
                }
            }
            Err(CheckpointError::Incompatible(format!(
                "no usable checkpoint in {}:\n  {}\nstart over with `--fresh` (deletes them), or pick a savepoint with `--from PATH`",
                storage.url(),
                skipped.join("\n  ")
            )))
        }
        StartMode::From(path) => {
            let (root, key) = split_manifest_path(path);
            let source = CheckpointStorage::open(&root)?;
            let manifest = source.read_manifest_at(&key)?;
            check_usable(&source, &manifest, layout, false)?;
            // Its Wasm modules join this pipeline's own, where the run and its later
            // checkpoints find them.
            storage.copy_udf_modules(&source, &manifest)?;
            let restored = restore(
                &source,
                manifest,
                source.display(&key),
                layout,
                false,
                Vec::new(),
            )?;
            let next_id = next_id.max(restored.manifest.id + 1);
            let uploader = uploader_for(&storage, &restored, layout.state_dir)?;
            Ok(StartPoint {
                storage,
                uploader,
                next_id,
                restored: Some(restored),
            })
        }
    }
}

/// The uploader for a restored run. It may reuse the restored files' content names only when
/// each task's RocksDB instance continues the one in the manifest: after a rescale the
/// instances are new, and a new SST could share a name and size with an old one.
fn uploader_for(
    storage: &CheckpointStorage,
    restored: &Restored,
    state_dir: &Path,
) -> Result<Uploader, CheckpointError> {
    let mut uploader = Uploader::new(storage)?;
    if restored.rescaled_from.is_none() {
        for t in &restored.manifest.tasks {
            uploader.learn(
                &task_dir_name(t.stage, t.task),
                &t.files,
                &live_dir(state_dir, t.stage, t.task),
            );
        }
    }
    Ok(uploader)
}

/// A `--from` argument as (storage root, manifest key): a savepoint folder holds
/// `manifest.json`; a checkpoint manifest is `<root>/manifests/<id>.json`.
pub fn split_manifest_path(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    if let Some(root) = trimmed.strip_suffix(&format!("/{SAVEPOINT_MANIFEST}")) {
        return (root.to_string(), SAVEPOINT_MANIFEST.to_string());
    }
    if trimmed.ends_with(".json") {
        if let Some((dir, file)) = trimmed.rsplit_once('/') {
            if let Some(root) = dir.strip_suffix("/manifests") {
                return (root.to_string(), format!("manifests/{file}"));
            }
            return (dir.to_string(), file.to_string());
        }
    }
    (trimmed.to_string(), SAVEPOINT_MANIFEST.to_string())
}

fn local_copy(layout: &Layout<'_>, id: CheckpointId, stage: usize, task: usize) -> PathBuf {
    layout
        .state_dir
        .join("checkpoints")
        .join(id.to_string())
        .join(task_dir_name(stage, task))
}

/// Checks a manifest fits this pipeline and that every file it needs is reachable.
fn check_usable(
    storage: &CheckpointStorage,
    m: &Manifest,
    layout: &Layout<'_>,
    local_ok: bool,
) -> Result<(), CheckpointError> {
    if m.max_parallelism != layout.max_parallelism {
        return Err(CheckpointError::Incompatible(format!(
            "it was taken with max_parallelism {} but the pipeline says {}; key groups cannot change for existing state",
            m.max_parallelism, layout.max_parallelism
        )));
    }
    if m.operators != layout.operators {
        return Err(CheckpointError::Incompatible(format!(
            "the pipeline's stateful steps changed since it was taken (then: [{}], now: [{}])",
            m.operators.join(", "),
            layout.operators.join(", ")
        )));
    }
    let stored = storage.list_shared()?;
    let check_stored = |f: &super::manifest::StateFile| match stored.get(&f.key) {
        Some(size) if *size == f.size => Ok(()),
        Some(size) => Err(CheckpointError::Corrupt {
            location: storage.display(&f.key),
            message: format!("holds {size} bytes, the manifest says {}", f.size),
        }),
        None => Err(CheckpointError::Missing {
            location: storage.display(&f.key),
        }),
    };
    for t in &m.tasks {
        let local = local_copy(layout, m.id, t.stage, t.task);
        for f in &t.files {
            let here = local_ok
                && std::fs::metadata(local.join(&f.name)).is_ok_and(|md| md.len() == f.size);
            if !here {
                check_stored(f)?;
            }
        }
    }
    // In-flight data of unaligned checkpoints is only ever read from the storage.
    for f in m
        .tasks
        .iter()
        .filter_map(|t| t.channel.as_ref())
        .chain(m.sink_channels.iter().map(|c| &c.file))
    {
        check_stored(f)?;
    }
    Ok(())
}

/// No checkpoint to resume: local state and earlier output go.
fn start_empty(layout: &Layout<'_>) -> Result<(), CheckpointError> {
    remove_all(layout.state_dir)?;
    for p in &layout.participants {
        p.discard_after(None)?;
    }
    Ok(())
}

fn remove_all(dir: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

fn restore(
    storage: &CheckpointStorage,
    manifest: Manifest,
    location: String,
    layout: &Layout<'_>,
    local_ok: bool,
    skipped: Vec<String>,
) -> Result<Restored, CheckpointError> {
    let mut stats = RestoreStats::default();
    let state_dir = layout.state_dir;
    // Only the restored checkpoint's local copy stays; live state is rebuilt from it.
    remove_all(&state_dir.join("live"))?;
    remove_all(&state_dir.join("restore"))?;
    if let Ok(entries) = std::fs::read_dir(state_dir.join("checkpoints")) {
        for e in entries.flatten() {
            let keep = local_ok && e.file_name().to_string_lossy() == manifest.id.to_string();
            if !keep {
                remove_all(&e.path())?;
            }
        }
    }
    let rescaled = manifest.parallelism != layout.parallelism;
    let mut watermarks = HashMap::new();
    for &stage in &layout.stateful_stages {
        let old: Vec<&TaskState> = manifest.tasks.iter().filter(|t| t.stage == stage).collect();
        if !rescaled {
            for t in &old {
                let locals = if local_ok {
                    vec![local_copy(layout, manifest.id, t.stage, t.task)]
                } else {
                    Vec::new()
                };
                materialize(
                    storage,
                    t,
                    &live_dir(state_dir, t.stage, t.task),
                    &locals,
                    &mut stats,
                )?;
            }
            continue;
        }
        // Rescale: open every old task's state once, then copy each new task's key groups.
        let mut opened = Vec::new();
        for t in &old {
            let dir = state_dir
                .join("restore")
                .join(task_dir_name(t.stage, t.task));
            let locals = if local_ok {
                vec![local_copy(layout, manifest.id, t.stage, t.task)]
            } else {
                Vec::new()
            };
            materialize(storage, t, &dir, &locals, &mut stats)?;
            opened.push((*t, StateStore::open(&dir)?));
        }
        for task in 0..layout.parallelism {
            let (first, last) = key_group_range(task, layout.parallelism, layout.max_parallelism);
            let live = StateStore::open_fresh(&live_dir(state_dir, stage, task))?;
            let mut wm: Option<EventTime> = None;
            for (t, store) in &opened {
                let (a, b) = (t.key_groups.0.max(first), t.key_groups.1.min(last));
                if a > b {
                    continue;
                }
                live.copy_key_groups(store, a, b)?;
                wm = Some(wm.map_or(t.watermark, |w| w.min(t.watermark)));
            }
            watermarks.insert((stage, task), wm.unwrap_or(crate::record::WATERMARK_START));
        }
        drop(opened);
        remove_all(&state_dir.join("restore"))?;
    }
    if !rescaled {
        for t in &manifest.tasks {
            watermarks.insert((t.stage, t.task), t.watermark);
        }
    } else {
        // Stateless stages: the lowest watermark of the stage is safe for every new task.
        let stages: std::collections::BTreeSet<usize> =
            manifest.tasks.iter().map(|t| t.stage).collect();
        for stage in stages {
            let wm = manifest
                .tasks
                .iter()
                .filter(|t| t.stage == stage)
                .map(|t| t.watermark)
                .min()
                .unwrap_or(crate::record::WATERMARK_START);
            for task in 0..layout.parallelism {
                watermarks.entry((stage, task)).or_insert(wm);
            }
        }
    }
    // Sinks and the DLQ: finish the commits this checkpoint made, drop output written after it.
    super::participant::redo_commits(&manifest, &layout.participants)?;
    for p in &layout.participants {
        p.discard_after(Some(&manifest))?;
    }
    // In-flight records of an unaligned checkpoint go to the task owning their key now.
    let mut channel: HashMap<(usize, usize), Vec<crate::record::Record>> = HashMap::new();
    for t in &manifest.tasks {
        let Some(f) = &t.channel else { continue };
        let bytes = storage.get(&f.key)?;
        let records =
            super::channel::read_records(&bytes).map_err(|message| CheckpointError::Corrupt {
                location: storage.display(&f.key),
                message,
            })?;
        for r in records {
            let task = if rescaled {
                let mut key_bytes = Vec::new();
                r.key
                    .as_ref()
                    .unwrap_or(&crate::value::Value::Null)
                    .key_bytes(&mut key_bytes);
                let kg = crate::state::key_group_of(&key_bytes, layout.max_parallelism);
                task_of_key_group(kg, layout.max_parallelism, layout.parallelism)
            } else {
                t.task
            };
            channel.entry((t.stage, task)).or_default().push(r);
        }
    }
    let mut sink_channel: HashMap<String, Vec<(usize, Vec<crate::value::Value>)>> = HashMap::new();
    for c in &manifest.sink_channels {
        let bytes = storage.get(&c.file.key)?;
        let values =
            super::channel::read_values(&bytes).map_err(|message| CheckpointError::Corrupt {
                location: storage.display(&c.file.key),
                message,
            })?;
        sink_channel
            .entry(c.sink.clone())
            .or_default()
            .push((c.instance, values));
    }
    let positions = manifest
        .sources
        .iter()
        .map(|p| ((p.source.clone(), p.partition.clone()), p.clone()))
        .collect();
    Ok(Restored {
        rescaled_from: rescaled.then_some(manifest.parallelism),
        manifest,
        location,
        positions,
        watermarks,
        channel,
        sink_channel,
        stats,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_paths_name_a_root_and_a_manifest() {
        assert_eq!(
            split_manifest_path("/sp/one"),
            ("/sp/one".into(), "manifest.json".into())
        );
        assert_eq!(
            split_manifest_path("/sp/one/manifest.json"),
            ("/sp/one".into(), "manifest.json".into())
        );
        assert_eq!(
            split_manifest_path("s3://b/ck/manifests/0000000007.json"),
            ("s3://b/ck".into(), "manifests/0000000007.json".into())
        );
    }

    #[test]
    fn key_group_ranges_cover_everything_once() {
        for p in [1usize, 2, 3, 5] {
            let mut next = 0u16;
            for t in 0..p {
                let (a, b) = key_group_range(t, p, 128);
                assert_eq!(a, next);
                next = b + 1;
            }
            assert_eq!(next, 128);
        }
    }
}
