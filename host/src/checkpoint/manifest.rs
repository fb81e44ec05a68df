//! The manifest: everything a checkpoint is. It is written last, atomically and only once
//! (`manifests/<id>.json`), so a checkpoint without a manifest does not exist.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CheckpointId;
use crate::record::EventTime;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestKind {
    /// Taken on the interval; retained by count; files shared with other checkpoints.
    Checkpoint,
    /// Taken on request; self-contained (its files live next to it); never deleted by us.
    Savepoint,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: CheckpointId,
    pub kind: ManifestKind,
    pub pipeline: String,
    /// Wall-clock time the checkpoint started (ms since the epoch), for listings only.
    pub started_ms: i64,
    /// From trigger to manifest written.
    pub duration_ms: u64,
    pub parallelism: usize,
    pub max_parallelism: u32,
    /// True when every source was exhausted: the run had finished.
    pub finished: bool,
    /// The stateful operators per stage (`stage:op_id:step`), to refuse restoring state into
    /// a pipeline whose stateful steps changed.
    pub operators: Vec<String>,
    pub sources: Vec<PartitionState>,
    pub tasks: Vec<TaskState>,
    /// Sink output made durable by this checkpoint and committed once the manifest exists.
    pub commits: Vec<SinkCommit>,
    /// Total size of the state files the checkpoint needs.
    pub state_bytes: u64,
    /// Bytes uploaded for this checkpoint (the rest was shared with earlier ones).
    pub uploaded_bytes: u64,
    /// Length of the dead-letter file once this checkpoint's dead letters are in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_len: Option<u64>,
    /// Unaligned checkpoints: results in flight to a sink instance when it pre-committed,
    /// written first on restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sink_channels: Vec<SinkChannel>,
    /// The module (SHA-256) each Wasm UDF runs after this checkpoint's barrier, stored in
    /// `udf-modules/` (`udf::wasm::store`): a run restored from here loads it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub udf_modules: std::collections::BTreeMap<String, String>,
}

/// Results a task had sent to a sink instance before a checkpoint's barrier that the
/// instance had not written when the barrier overtook them (`file.name` is `channel.jsonl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkChannel {
    pub sink: String,
    pub instance: usize,
    pub file: StateFile,
}

/// Where one source partition was when the barrier left it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub source: String,
    /// The partition's name: a file path, `nexmark[0/4]`.
    pub partition: String,
    pub position: Position,
    /// Largest event time seen (the partition's watermark derives from it).
    pub max_event_time: Option<EventTime>,
    pub ended: bool,
}

/// A resumable position inside a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Bytes consumed (files) or the generator's offset (Nexmark).
    pub offset: u64,
    /// Lines read (files) or events produced (Nexmark).
    pub records: u64,
}

/// One stage task's snapshot: its watermark and, for stateful stages, its RocksDB files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub stage: usize,
    pub task: usize,
    /// Key groups `[first, last]` the task owned.
    pub key_groups: (u16, u16),
    pub watermark: EventTime,
    pub files: Vec<StateFile>,
    /// Unaligned checkpoints: records in flight to this task when it snapshotted, processed
    /// first on restore (`name` is `channel.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<StateFile>,
}

/// A file of a RocksDB checkpoint and the content-named object holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// File name inside the RocksDB folder (`000042.sst`, `MANIFEST-000005`, ...).
    pub name: String,
    /// Object key relative to the checkpoint root (`shared/<hash>-<size>`).
    pub key: String,
    pub size: u64,
}

/// A sink's output waiting for this checkpoint: pending files renamed to their final names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCommit {
    pub sink: String,
    /// The data epoch (the checkpoint whose barrier closed it).
    pub epoch: CheckpointId,
    pub pending: PathBuf,
    pub committed: PathBuf,
    /// Set for the dead-letter queue: the pending file is appended to `committed` at this
    /// offset instead of renamed (idempotently: a repeated commit finds it done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<Append>,
    /// Set for transactional sinks (Kafka): the transactional id holding the epoch; the sink
    /// commits it, and on recovery redoes it from `pending` (its records) if needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// Which instance of the sink wrote the epoch (Kafka sinks run one per task; the others
    /// one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where an appended commit goes: the DLQ file's length before it, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    pub offset: u64,
    pub size: u64,
}

impl Manifest {
    /// Every object the checkpoint needs: state files and channel state.
    pub fn files(&self) -> impl Iterator<Item = &StateFile> {
        self.tasks
            .iter()
            .flat_map(|t| t.files.iter().chain(t.channel.iter()))
            .chain(self.sink_channels.iter().map(|c| &c.file))
    }

    pub fn file_count(&self) -> usize {
        self.files().count()
    }

    /// The keys of the Wasm modules the manifest's UDFs run, once each.
    pub fn udf_module_keys(&self) -> Vec<String> {
        let digests: std::collections::BTreeSet<&String> = self.udf_modules.values().collect();
        digests.into_iter().map(|d| udf_module_key(d)).collect()
    }
}

/// The object key of checkpoint `id`'s manifest.
pub fn manifest_key(id: CheckpointId) -> String {
    format!("manifests/{id:010}.json")
}

/// Where a Wasm module (named by its SHA-256) is kept, next to the checkpoints.
pub fn udf_module_key(digest: &str) -> String {
    format!("udf-modules/{digest}.wasm")
}

/// The id in a manifest key (`manifests/0000000042.json` → 42).
pub fn id_of_manifest_key(key: &str) -> Option<CheckpointId> {
    let name = key.rsplit('/').next()?;
    name.strip_suffix(".json")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip_and_sort_by_id() {
        assert_eq!(manifest_key(42), "manifests/0000000042.json");
        assert_eq!(id_of_manifest_key(&manifest_key(42)), Some(42));
        assert_eq!(id_of_manifest_key("manifests/x.json"), None);
        assert!(manifest_key(9) < manifest_key(10));
    }
}
