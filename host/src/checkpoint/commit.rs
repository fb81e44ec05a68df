//! Making a complete checkpoint's sink output visible: file parts renamed into place, dead
//! letters appended. Idempotent, so recovery can redo a commit a crash interrupted.

use std::path::Path;

use super::manifest::SinkCommit;
use super::CheckpointError;

/// Makes a sink's pending output visible: renames it to its final name. Idempotent: a
/// commit that already happened (pending gone, final present) is fine.
pub fn commit_sink_file(c: &SinkCommit) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: c.pending.clone(),
        source,
    };
    if let Some(append) = c.append {
        return commit_append(c, append);
    }
    if c.pending.exists() {
        // Link, then unlink: unlike a rename this never replaces an existing part.
        match std::fs::hard_link(&c.pending, &c.committed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let same = std::fs::metadata(&c.pending)
                    .and_then(|p| std::fs::metadata(&c.committed).map(|q| (p, q)))
                    .map(|(p, q)| {
                        use std::os::unix::fs::MetadataExt;
                        p.ino() == q.ino() && p.dev() == q.dev()
                    })
                    .unwrap_or(false);
                if !same {
                    return Err(CheckpointError::Corrupt {
                        location: c.committed.display().to_string(),
                        message: format!(
                            "sink `{}` would overwrite this committed part with {}; remove one of them",
                            c.sink,
                            c.pending.display()
                        ),
                    });
                }
            }
            Err(e) => return Err(io(e)),
        }
        std::fs::remove_file(&c.pending).map_err(io)?;
        if let Some(dir) = c.committed.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    } else if c.committed.exists() {
        Ok(())
    } else {
        Err(CheckpointError::Missing {
            location: format!(
                "{} (output of sink `{}` for checkpoint {}; its committed name {} is missing too)",
                c.pending.display(),
                c.sink,
                c.epoch,
                c.committed.display()
            ),
        })
    }
}

/// Appends a pending DLQ epoch to the DLQ file at its offset. Idempotent: a commit already
/// done (file long enough, pending gone) is fine; a partial one is redone from the offset.
fn commit_append(c: &SinkCommit, a: super::manifest::Append) -> Result<(), CheckpointError> {
    use std::io::{Seek, SeekFrom};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    let len = std::fs::metadata(&c.committed)
        .map(|m| m.len())
        .unwrap_or(0);
    if !c.pending.exists() {
        if len >= a.offset + a.size {
            return Ok(());
        }
        return Err(CheckpointError::Missing {
            location: format!(
                "{} (dead letters of checkpoint {}; {} holds {len} bytes, {} expected)",
                c.pending.display(),
                c.epoch,
                c.committed.display(),
                a.offset + a.size
            ),
        });
    }
    if len < a.offset {
        return Err(CheckpointError::Corrupt {
            location: c.committed.display().to_string(),
            message: format!(
                "holds {len} bytes but {} were committed before checkpoint {}",
                a.offset, c.epoch
            ),
        });
    }
    if len < a.offset + a.size {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&c.committed)
            .map_err(io(&c.committed))?;
        out.set_len(a.offset).map_err(io(&c.committed))?;
        out.seek(SeekFrom::End(0)).map_err(io(&c.committed))?;
        let mut pending = std::fs::File::open(&c.pending).map_err(io(&c.pending))?;
        std::io::copy(&mut pending, &mut out).map_err(io(&c.committed))?;
        out.sync_all().map_err(io(&c.committed))?;
    }
    std::fs::remove_file(&c.pending).map_err(io(&c.pending))?;
    Ok(())
}
