//! What the coordinator keeps and deletes once a checkpoint is complete: the local copy of
//! the newest checkpoint (for fast recovery on this machine), and in the storage the
//! manifests beyond `retain` and the shared state files no retained manifest references.
//! Kept apart from writing and committing a checkpoint: it never decides what a checkpoint
//! holds, it only runs once one exists.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{task_dir_name, Coordinator};
use crate::checkpoint::{CheckpointError, CheckpointId};

impl Coordinator {
    /// Keeps the local copy of checkpoint `id` (`<state>/checkpoints/<id>/s<s>-t<t>`) for fast
    /// recovery and removes older local snapshots.
    pub(super) fn keep_local(
        &self,
        id: CheckpointId,
        dirs: &[(usize, usize, PathBuf)],
        all_finished: bool,
    ) {
        let root = self.setup.state_dir.join("checkpoints");
        let target = root.join(id.to_string());
        if let Err(e) = std::fs::create_dir_all(&target) {
            tracing::warn!(dir = %target.display(), error = %e, "cannot keep the local checkpoint");
            return;
        }
        for (stage, task, dir) in dirs {
            let dest = target.join(task_dir_name(*stage, *task));
            let moved = if dir.starts_with(root.join(format!("pending-{id}"))) {
                std::fs::rename(dir, &dest).is_ok()
            } else {
                link_all(dir, &dest).is_ok()
            };
            if !moved {
                tracing::warn!(dir = %dir.display(), "cannot keep the local checkpoint copy");
            }
        }
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if all_finished && name == "final" {
                remove_dir(&entry.path());
                continue;
            }
            let stale = match name.strip_prefix("pending-") {
                Some(n) => n.parse::<CheckpointId>().is_ok_and(|n| n <= id),
                None => name.parse::<CheckpointId>().is_ok_and(|n| n < id),
            };
            if stale {
                remove_dir(&entry.path());
            }
        }
    }

    /// Deletes manifests beyond the newest `retain`, then shared files no retained manifest
    /// references.
    pub(super) fn retain_and_collect(&mut self) -> Result<(), CheckpointError> {
        let storage = &self.setup.storage;
        // Held throughout: the background uploader neither starts nor ends an upload meanwhile.
        let mut uploader = self.uploader.lock().unwrap_or_else(|e| e.into_inner());
        // Only this thread writes checkpoints to the store; staging files are leftovers
        // unless a background upload is writing.
        let stray = if uploader.uploading() {
            0
        } else {
            storage.remove_staging_leftovers()
        };
        if stray > 0 {
            tracing::info!(
                files = stray,
                "removed staging files a crashed write left behind"
            );
        }
        let ids = storage.list_checkpoints()?;
        let keep = self.setup.spec.retain.max(1);
        let (old, retained) = ids.split_at(ids.len().saturating_sub(keep));
        for id in old {
            storage.delete(&crate::checkpoint::manifest::manifest_key(*id))?;
            self.known.remove(id);
        }
        let mut referenced: HashSet<String> = HashSet::new();
        for id in retained {
            if !self.known.contains_key(id) {
                match storage.read_manifest(*id) {
                    Ok(m) => {
                        self.known
                            .insert(*id, m.files().map(|f| f.key.clone()).collect());
                    }
                    Err(e) => {
                        // Never delete what an unreadable manifest might need.
                        tracing::warn!(error = %e, "skipping garbage collection");
                        return Ok(());
                    }
                }
            }
            if let Some(keys) = self.known.get(id) {
                referenced.extend(keys.iter().cloned());
            }
        }
        for (key, _) in storage.list_shared()? {
            if !referenced.contains(&key) && !uploader.protects(&key) {
                storage.delete(&key)?;
                uploader.forget(&key);
            }
        }
        Ok(())
    }
}

fn link_all(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &dest).is_err() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

pub(super) fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an old local snapshot");
        }
    }
}
