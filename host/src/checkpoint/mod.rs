//! Exactly-once checkpoints (Chandy–Lamport barriers).
//!
//! The [`coordinator`] asks every source task to inject barrier *n*; source tasks record
//! their partitions' positions and forward the barrier; a stage task that has the barrier
//! from all its inputs (aligned) snapshots its RocksDB instance (a local checkpoint: hard
//! links) and forwards it; a sink that has it from every task makes its output for the epoch
//! durable under a pending name. When everyone reported, the coordinator uploads the new state
//! files ([`files`]), writes the [`manifest`] last and atomically ([`storage`]), then commits
//! the sinks' pending output through their [`participant::CommitParticipant`]s. [`recovery`]
//! starts a run from the newest complete manifest.

pub mod channel;
pub mod coordinator;
pub mod declines;
pub mod files;
pub mod inspect;
pub mod manifest;
pub mod participant;
pub mod preupload;
pub mod recovery;
pub mod storage;

use std::path::PathBuf;

use crate::record::EventTime;

/// A savepoint asked for while the pipeline runs (`POST /savepoint` on the control API): the
/// coordinator takes a checkpoint, copies it to `to` once it is complete and committed, and
/// replies.
pub struct SavepointRequest {
    pub to: String,
    pub reply: crossbeam_channel::Sender<Result<inspect::SavepointInfo, String>>,
}

pub use crate::record::CheckpointId;

/// What changes at checkpoint boundaries besides state: the Wasm modules UDFs run
/// (`udf::wasm::versions`). The coordinator calls it from its own thread.
pub trait Boundary: Send + Sync {
    /// Checkpoint `id` is about to be triggered (no task has its barrier yet): what waits
    /// for a boundary takes effect for the records after this barrier. Returns whether
    /// anything does: then every receiver aligns this barrier even in unaligned mode, so no
    /// output from before the change lands in the epoch after it (in flight to a sink when the
    /// sink's barrier overtook it).
    fn before_trigger(&self, id: CheckpointId) -> bool;
    /// What checkpoint `id`'s manifest records: the module digest each Wasm UDF runs after
    /// its barrier.
    fn modules_after(&self, id: CheckpointId) -> std::collections::BTreeMap<String, String>;
    /// Checkpoint `id` is complete (written and committed): every task passed its barrier.
    fn completed(&self, id: CheckpointId);
}

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint storage `{url}`: {message}")]
    Store { url: String, message: String },
    #[error("checkpoint file `{location}` is missing")]
    Missing { location: String },
    #[error("checkpoint manifest `{location}` cannot be read: {message}")]
    BadManifest { location: String, message: String },
    #[error("checkpoint file `{location}` is damaged: {message}")]
    Corrupt { location: String, message: String },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot restore: {0}")]
    Incompatible(String),
    /// A transactional sink could not commit a complete checkpoint's epoch (the next run
    /// redoes it).
    #[error("committing the checkpoint's output failed: {message}")]
    Commit { message: String },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// More checkpoints in a row than `checkpoint.tolerable_failures` could not be written.
    #[error("{failures} checkpoints in a row could not be written to `{url}` (checkpoint.tolerable_failures is {tolerable}); the last failure: {cause}")]
    TooManyFailures {
        url: String,
        failures: u32,
        tolerable: u32,
        cause: Box<CheckpointError>,
    },
}

/// Who reports to the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Participant {
    Source { task: usize },
    Stage { stage: usize, task: usize },
    Sink { sink: usize },
}

/// What a participant contributes to a checkpoint.
#[derive(Clone, Debug)]
pub enum Contribution {
    /// Positions of a source task's partitions when the barrier left them.
    Source(Vec<manifest::PartitionState>),
    /// A stage task's watermark and (stateful stages) its local RocksDB checkpoint folder.
    Stage {
        watermark: EventTime,
        key_groups: (u16, u16),
        dir: Option<PathBuf>,
        /// Unaligned checkpoints: the in-flight records stored with the snapshot.
        channel: Option<PathBuf>,
    },
    /// A sink instance's output for the epoch the barrier closed, durable under a pending
    /// name, and (unaligned checkpoints) the results in flight to it when it pre-committed.
    Sink {
        commit: Option<manifest::SinkCommit>,
        channel: Option<SinkChannelPath>,
    },
}

/// A sink instance's in-flight results of an unaligned checkpoint, in a local file.
#[derive(Clone, Debug)]
pub struct SinkChannelPath {
    pub sink: String,
    pub instance: usize,
    pub path: PathBuf,
}

/// A participant passed a barrier (`id: Some`), or finished its input for good (`id: None`:
/// the contribution stands for every later checkpoint).
#[derive(Debug)]
pub struct Report {
    pub from: Participant,
    pub id: Option<CheckpointId>,
    pub contribution: Contribution,
}
