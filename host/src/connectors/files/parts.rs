//! The file sink in checkpointed runs: two-phase commit with part files.
//!
//! Records of epoch *n* (written after checkpoint *n-1*'s barrier) go to a hidden pending
//! file, `.results-<n>.jsonl.pending`, next to the configured `results.jsonl`. When checkpoint
//! *n*'s barrier has come from every task the file is flushed and synced (pre-commit); once
//! the checkpoint's manifest exists it is renamed to `results-<n>.jsonl` (commit). Readers
//! see whole parts or nothing: `cat out/results-*.jsonl` is the committed output in order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::manifest::{Manifest, SinkCommit};
use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::{CheckpointError, CheckpointId};
use crate::sinks::{write_json_lines, Sink, SinkError};
use crate::value::Value;

/// How a configured path maps to part names: `out/results.jsonl` →
/// `out/results-0000000007.jsonl` (committed), `out/.results-0000000007.jsonl.pending`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartNames {
    dir: PathBuf,
    stem: String,
    ext: String,
}

impl PartNames {
    pub fn new(path: &Path) -> PartNames {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "part".into());
        let ext = path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        PartNames { dir, stem, ext }
    }

    pub fn committed(&self, epoch: CheckpointId) -> PathBuf {
        self.dir
            .join(format!("{}-{epoch:010}{}", self.stem, self.ext))
    }

    pub fn pending(&self, epoch: CheckpointId) -> PathBuf {
        self.dir
            .join(format!(".{}-{epoch:010}{}.pending", self.stem, self.ext))
    }

    /// The epoch of a part's file name and whether it is pending.
    pub fn parse(&self, file_name: &str) -> Option<(CheckpointId, bool)> {
        let (name, pending) = match file_name.strip_prefix('.') {
            Some(rest) => (rest.strip_suffix(".pending")?, true),
            None => (file_name, false),
        };
        let digits = name
            .strip_prefix(&self.stem)?
            .strip_prefix('-')?
            .strip_suffix(self.ext.as_str())?;
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((digits.parse().ok()?, pending))
    }

    /// Committed parts, in epoch order.
    pub fn committed_parts(&self) -> std::io::Result<Vec<(CheckpointId, PathBuf)>> {
        let mut parts = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e?;
                    if let Some((epoch, false)) = self.parse(&e.file_name().to_string_lossy()) {
                        parts.push((epoch, e.path()));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        parts.sort();
        Ok(parts)
    }
}

/// A file sink's committed output: its parts in checkpoint order, or the plain file a run
/// with checkpoints off writes.
pub fn read_committed(path: &Path) -> std::io::Result<String> {
    let parts = PartNames::new(path).committed_parts()?;
    if parts.is_empty() {
        return std::fs::read_to_string(path);
    }
    let mut text = String::new();
    for (_, part) in parts {
        text.push_str(&std::fs::read_to_string(part)?);
    }
    Ok(text)
}

/// Deletes every pending part, and committed parts newer than `keep_through` (all of them,
/// and the plain file an unchecked run writes, when `None`): output no checkpoint covers.
pub fn discard_after(path: &Path, keep_through: Option<CheckpointId>) -> std::io::Result<()> {
    let names = PartNames::new(path);
    let entries = match std::fs::read_dir(&names.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let Some((epoch, pending)) = names.parse(&e.file_name().to_string_lossy()) else {
            continue;
        };
        if pending || keep_through.is_none_or(|k| epoch > k) {
            if !pending && keep_through.is_some() {
                tracing::warn!(file = %e.path().display(), "removing output no checkpoint covers");
            }
            std::fs::remove_file(e.path())?;
        }
    }
    if keep_through.is_none() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file sink's side of the checkpoint commit: renames an epoch's pending part to its final
/// name, and on recovery removes the parts no checkpoint covers.
pub struct FilePartsCommitter {
    name: String,
    path: PathBuf,
    names: PartNames,
}

impl FilePartsCommitter {
    /// The committer of the file sink `name` configured with `path`.
    pub fn new(name: &str, path: &Path) -> FilePartsCommitter {
        FilePartsCommitter {
            name: name.to_string(),
            path: path.to_path_buf(),
            names: PartNames::new(path),
        }
    }
}

impl CommitParticipant for FilePartsCommitter {
    fn name(&self) -> &str {
        &self.name
    }

    fn commit(&self, c: &SinkCommit) -> Result<(), CheckpointError> {
        commit_part(
            &self.name,
            c.epoch,
            &self.names.pending(c.epoch),
            &self.names.committed(c.epoch),
        )
    }

    fn newest_visible(&self) -> Result<Option<CheckpointId>, CheckpointError> {
        let parts = self
            .names
            .committed_parts()
            .map_err(|source| CheckpointError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(parts.last().map(|(epoch, _)| *epoch))
    }

    fn discard_after(&self, restored: Option<&Manifest>) -> Result<(), CheckpointError> {
        discard_after(&self.path, restored.map(|m| m.id)).map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Makes a part visible: links the pending file to its final name, then unlinks it (unlike a
/// rename this never replaces an existing part). Idempotent: a commit already done (pending
/// gone, final present) is fine.
fn commit_part(
    sink: &str,
    epoch: CheckpointId,
    pending: &Path,
    committed: &Path,
) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: pending.to_path_buf(),
        source,
    };
    if pending.exists() {
        match std::fs::hard_link(pending, committed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !same_file(pending, committed) {
                    return Err(CheckpointError::Corrupt {
                        location: committed.display().to_string(),
                        message: format!(
                            "sink `{sink}` would overwrite this committed part with {}; remove one of them",
                            pending.display()
                        ),
                    });
                }
            }
            Err(e) => return Err(io(e)),
        }
        std::fs::remove_file(pending).map_err(io)?;
        if let Some(dir) = committed.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    } else if committed.exists() {
        Ok(())
    } else {
        Err(CheckpointError::Missing {
            location: format!(
                "{} (output of sink `{sink}` for checkpoint {epoch}; its committed name {} is missing too)",
                pending.display(),
                committed.display()
            ),
        })
    }
}

/// Whether two paths name the same file (a link made by an earlier, interrupted commit).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(p), Ok(q)) => p.ino() == q.ino() && p.dev() == q.dev(),
        _ => false,
    }
}

/// JSON lines into per-epoch pending files, committed by the checkpoint coordinator.
pub struct PartFileSink {
    name: String,
    names: PartNames,
    epoch: CheckpointId,
    open: Option<(PathBuf, BufWriter<File>)>,
    line: Vec<u8>,
}

impl PartFileSink {
    /// A sink whose next records belong to epoch `first_epoch`.
    pub fn create(name: &str, path: &Path, first_epoch: CheckpointId) -> Result<Self, SinkError> {
        let names = PartNames::new(path);
        std::fs::create_dir_all(&names.dir).map_err(|source| SinkError::Create {
            sink: name.to_string(),
            path: names.dir.clone(),
            source,
        })?;
        Ok(PartFileSink {
            name: name.to_string(),
            names,
            epoch: first_epoch,
            open: None,
            line: Vec::with_capacity(256),
        })
    }

    fn write_err(&self, path: &Path, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Sink for PartFileSink {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            let path = self.names.pending(self.epoch);
            let file = File::create(&path).map_err(|source| SinkError::Create {
                sink: self.name.clone(),
                path: path.clone(),
                source,
            })?;
            self.open = Some((path, BufWriter::with_capacity(256 << 10, file)));
        }
        let Some((path, out)) = self.open.as_mut() else {
            return Ok(());
        };
        if let Err(e) = write_json_lines(out, &mut self.line, records) {
            let path = path.clone();
            return Err(self.write_err(&path, e));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Some((path, out)) = self.open.as_mut() {
            if let Err(e) = out.flush() {
                let path = path.clone();
                return Err(self.write_err(&path, e));
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, epoch: CheckpointId) -> Result<Option<SinkCommit>, SinkError> {
        let done = self.epoch;
        self.epoch = epoch + 1;
        let Some((path, out)) = self.open.take() else {
            return Ok(None);
        };
        let file = out
            .into_inner()
            .map_err(|e| self.write_err(&path, e.into_error()))?;
        file.sync_all().map_err(|e| self.write_err(&path, e))?;
        Ok(Some(SinkCommit {
            sink: self.name.clone(),
            epoch: done,
            pending: path,
            committed: self.names.committed(done),
            append: None,
            transaction: None,
            instance: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_never_replaces_an_existing_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.jsonl");
        let mut sink = PartFileSink::create("r", &path, 1).expect("create");
        sink.write(&[Value::Int(9)]).expect("write");
        let c = sink.pre_commit(1).expect("pre").expect("a part");
        std::fs::write(&c.committed, "earlier\n").expect("an older part with that name");
        let err = FilePartsCommitter::new("r", &path)
            .commit(&c)
            .expect_err("no clobber");
        assert!(err.to_string().contains("would overwrite"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&c.committed).expect("read"),
            "earlier\n"
        );
    }

    #[test]
    fn part_names_round_trip() {
        let n = PartNames::new(Path::new("/o/results.jsonl"));
        assert_eq!(n.committed(7), PathBuf::from("/o/results-0000000007.jsonl"));
        assert_eq!(
            n.pending(7),
            PathBuf::from("/o/.results-0000000007.jsonl.pending")
        );
        assert_eq!(n.parse("results-0000000007.jsonl"), Some((7, false)));
        assert_eq!(
            n.parse(".results-0000000007.jsonl.pending"),
            Some((7, true))
        );
        assert_eq!(n.parse("results.jsonl"), None);
        assert_eq!(n.parse("late-0000000007.jsonl"), None);
    }

    #[test]
    fn epochs_become_pending_parts_and_recovery_discards_uncovered_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out/results.jsonl");
        let mut sink = PartFileSink::create("results", &path, 1).expect("create");
        sink.write(&[Value::Int(1), Value::Int(2)]).expect("write");
        let c1 = sink.pre_commit(1).expect("pre").expect("a part");
        assert_eq!((c1.epoch, c1.pending.exists()), (1, true));
        assert!(sink.pre_commit(2).expect("pre").is_none(), "empty epoch");
        sink.write(&[Value::Int(3)]).expect("write");
        let c3 = sink.pre_commit(3).expect("pre").expect("a part");
        assert_eq!(c3.epoch, 3);
        let committer = FilePartsCommitter::new("results", &path);
        committer.commit(&c1).expect("commit");
        committer.commit(&c1).expect("idempotent");
        assert_eq!(committer.newest_visible().expect("list"), Some(1));
        sink.write(&[Value::Int(4)]).expect("write");
        sink.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&c1.committed).expect("read"),
            "1\n2\n"
        );
        // Restored at checkpoint 1: part 3 (pending) and epoch 4 (open) are discarded.
        discard_after(&path, Some(1)).expect("discard");
        let names = PartNames::new(&path);
        let parts = names.committed_parts().expect("list");
        assert_eq!(parts.len(), 1);
        assert!(!c3.pending.exists());
        discard_after(&path, None).expect("fresh");
        assert!(names.committed_parts().expect("list").is_empty());
    }
}
