//! The dead-letter file's side of the checkpoint commit: each epoch's pending file is appended
//! to the DLQ file at the offset its pre-commit recorded, once the checkpoint is complete.
//! Idempotent, so recovery can redo an append a crash interrupted.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{discard_pending, pending_path};
use crate::checkpoint::manifest::{Append, Manifest, SinkCommit};
use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::CheckpointError;

/// The name the DLQ's commits carry in manifests.
pub const DLQ_PARTICIPANT: &str = "dead-letter queue";

/// Commits and recovers the dead-letter file at `path`.
pub struct DlqFileCommitter {
    path: PathBuf,
}

impl DlqFileCommitter {
    pub fn new(path: &Path) -> DlqFileCommitter {
        DlqFileCommitter {
            path: path.to_path_buf(),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> CheckpointError {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io {
            path: path.clone(),
            source,
        }
    }
}

impl CommitParticipant for DlqFileCommitter {
    fn name(&self) -> &str {
        DLQ_PARTICIPANT
    }

    fn commit(&self, c: &SinkCommit) -> Result<(), CheckpointError> {
        let Some(append) = c.append else {
            return Err(CheckpointError::Corrupt {
                location: self.path.display().to_string(),
                message: format!(
                    "the dead letters of checkpoint {} have no offset to be appended at",
                    c.epoch
                ),
            });
        };
        commit_append(
            &pending_path(&self.path, c.epoch),
            &self.path,
            c.epoch,
            append,
        )
    }

    /// Pending epochs go; dead letters appended after the restored checkpoint are cut off
    /// (all of them when the run starts empty).
    fn discard_after(&self, restored: Option<&Manifest>) -> Result<(), CheckpointError> {
        let io = self.io(&self.path);
        discard_pending(&self.path).map_err(&io)?;
        match restored {
            None => match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(e)),
            },
            Some(manifest) => {
                let Some(len) = manifest.dlq_len else {
                    return Ok(());
                };
                match std::fs::OpenOptions::new().write(true).open(&self.path) {
                    Ok(f) => {
                        if f.metadata().map_err(&io)?.len() > len {
                            f.set_len(len).map_err(&io)?;
                        }
                        Ok(())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io(e)),
                }
            }
        }
    }
}

/// Appends the pending file of `epoch` to `committed` at `a.offset`. A commit already done
/// (file long enough, pending gone) is fine; a partial one is redone from the offset.
fn commit_append(
    pending: &Path,
    committed: &Path,
    epoch: crate::checkpoint::CheckpointId,
    a: Append,
) -> Result<(), CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    let len = std::fs::metadata(committed).map(|m| m.len()).unwrap_or(0);
    if !pending.exists() {
        if len >= a.offset + a.size {
            return Ok(());
        }
        return Err(CheckpointError::Missing {
            location: format!(
                "{} (dead letters of checkpoint {epoch}; {} holds {len} bytes, {} expected)",
                pending.display(),
                committed.display(),
                a.offset + a.size
            ),
        });
    }
    if len < a.offset {
        return Err(CheckpointError::Corrupt {
            location: committed.display().to_string(),
            message: format!(
                "holds {len} bytes but {} were committed before checkpoint {epoch}",
                a.offset
            ),
        });
    }
    if len < a.offset + a.size {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(committed)
            .map_err(io(committed))?;
        out.set_len(a.offset).map_err(io(committed))?;
        out.seek(SeekFrom::End(0)).map_err(io(committed))?;
        let mut from = std::fs::File::open(pending).map_err(io(pending))?;
        std::io::copy(&mut from, &mut out).map_err(io(committed))?;
        out.sync_all().map_err(io(committed))?;
    }
    std::fs::remove_file(pending).map_err(io(pending))?;
    Ok(())
}
