//! The contracts between the checkpoint layer and everything that takes part in a
//! checkpoint without being a task: sinks whose output becomes visible only when the
//! checkpoint covering it completes, and sources that also report their checkpointed
//! positions elsewhere. The checkpoint layer owns these traits; file sinks, the dead-letter
//! file and Kafka implement them in their own modules, so nothing here imports a connector.
//!
//! A two-phase participant's life, per epoch (the data between two barriers):
//! 1. **pre-commit** (the sink's own thread, `Sink::pre_commit`): the epoch's output is made
//!    durable under a pending name (a part file, a pending DLQ file, an open Kafka
//!    transaction) and described by a [`SinkCommit`] that goes into the manifest;
//! 2. **commit** ([`CommitParticipant::commit`], the coordinator, after the manifest is
//!    stored): the output becomes visible; idempotent, because recovery redoes a commit a
//!    crash interrupted;
//! 3. **recover** (before the run starts): the restored manifest's commits are redone through
//!    `commit`, then [`CommitParticipant::discard_after`] removes output no checkpoint covers.

use std::sync::Arc;

use super::manifest::{Manifest, PartitionState, SinkCommit};
use super::{CheckpointError, CheckpointId};

/// Something whose output becomes visible when a checkpoint completes (see the module docs).
pub trait CommitParticipant: Send + Sync {
    /// The name the participant's commits carry in manifests ([`SinkCommit::sink`]).
    fn name(&self) -> &str;

    /// Makes the epoch `commit` describes visible. Idempotent: a commit already done is fine.
    /// The paths in `commit` are the ones the checkpointing run used (possibly relative to
    /// another working directory): a participant derives its own from the epoch.
    fn commit(&self, commit: &SinkCommit) -> Result<(), CheckpointError>;

    /// The newest epoch whose output is already visible outside the checkpoint storage (file
    /// parts carry their epoch in their names): a new run numbers its checkpoints above it, so
    /// a run restored from a savepoint never reuses a part's name.
    fn newest_visible(&self) -> Result<Option<CheckpointId>, CheckpointError> {
        Ok(None)
    }

    /// Before a run starts, after the restored checkpoint's commits are redone: removes the
    /// output no checkpoint covers: pending output, and visible output written after
    /// `restored` (everything when the run starts empty).
    fn discard_after(&self, restored: Option<&Manifest>) -> Result<(), CheckpointError>;

    /// Whether this participant redoes its restored commits itself when it opens (a
    /// transactional sink needs its connection for that), instead of through recovery.
    fn recovers_when_opened(&self) -> bool {
        false
    }
}

/// A source that also publishes its checkpointed positions elsewhere (a Kafka consumer
/// group's committed offsets, for monitoring tools). The checkpoint is what a restart uses;
/// this is a courtesy copy made after each completed checkpoint.
pub trait PositionPublisher: Send + Sync {
    /// Publishes `positions` (this source's partitions in a completed checkpoint). `wait`:
    /// the run's last checkpoint, so wait for the answer before the process ends.
    fn publish(&self, positions: &[PartitionState], wait: bool);
}

/// Redoes the commits of a complete checkpoint (idempotent), before a run restores it or a
/// savepoint is copied from it. Commits held in a transaction are left to their sink, which
/// redoes them when it opens; output of a participant the pipeline no longer has is left as is.
pub fn redo_commits(
    manifest: &Manifest,
    participants: &[Arc<dyn CommitParticipant>],
) -> Result<(), CheckpointError> {
    for c in manifest.commits.iter().filter(|c| c.transaction.is_none()) {
        match participants.iter().find(|p| p.name() == c.sink) {
            Some(p) => p.commit(c)?,
            None => tracing::warn!(
                sink = %c.sink,
                "the checkpoint has output for a sink this pipeline no longer has; left as is"
            ),
        }
    }
    Ok(())
}
