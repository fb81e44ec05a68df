//! Uploads state files ahead of checkpoints, so that a checkpoint's own upload follows the
//! state that changed since the previous one, not what RocksDB's compactions rewrote.
//!
//! Above the first level's size (256 MB), every compaction rewrites large SST files: with 1% of
//! the keys changing at random, a checkpoint taken after a compaction would otherwise have to
//! upload a sizeable fraction of the whole state. This thread watches each stateful task's
//! live RocksDB folder and uploads every SST file once it has existed for [`MIN_AGE`]
//! (content-named, through the same [`Uploader`] bookkeeping as checkpoints, so a checkpoint
//! finds it stored and sends only what is newer). Objects uploaded ahead that no manifest
//! references yet are spared by garbage collection while their live file exists.
//!
//! The total bytes sent stay those of incremental checkpoints (what compactions write); only
//! *when* they are sent changes: continuously, off the checkpoint's critical path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::files::{content_key, inode, list_files, SharedUploader};
use super::storage::CheckpointStorage;

/// How old an SST file must be before it is uploaded ahead: fresh files may still be written
/// (or be a flush that the next compaction merges away at once).
pub const MIN_AGE: Duration = Duration::from_millis(300);
/// How often the folders are looked at.
const TICK: Duration = Duration::from_millis(250);

/// What the background uploader did, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct AheadStats {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

/// The running background uploader; stops when dropped.
pub struct PreUploader {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub stats: Arc<AheadStats>,
}

impl PreUploader {
    /// Watches `dirs` (task label, live RocksDB folder) and uploads into `storage`.
    pub fn start(
        storage: CheckpointStorage,
        uploader: SharedUploader,
        dirs: Vec<(String, PathBuf)>,
    ) -> std::io::Result<PreUploader> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AheadStats::default());
        let handle = {
            let stop = stop.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("checkpoint-upload-ahead".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        for (task, dir) in &dirs {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            upload_ahead(&storage, &uploader, task, dir, &stats, &stop);
                        }
                        std::thread::sleep(TICK.saturating_sub(started.elapsed()));
                    }
                })?
        };
        Ok(PreUploader {
            stop,
            handle: Some(handle),
            stats,
        })
    }
}

impl Drop for PreUploader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One pass over a task's live folder. Errors are not fatal: a file compacted away meanwhile
/// simply is not needed, and whatever is missing the checkpoint uploads itself.
fn upload_ahead(
    storage: &CheckpointStorage,
    uploader: &SharedUploader,
    task: &str,
    dir: &std::path::Path,
    stats: &AheadStats,
    stop: &AtomicBool,
) {
    let Ok(files) = list_files(dir) else { return };
    let now = SystemTime::now();
    for (name, path, size) in files {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if !name.ends_with(".sst") {
            continue;
        }
        let old_enough = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= MIN_AGE);
        if !old_enough {
            continue;
        }
        let ino = inode(&path);
        let known = match uploader.lock() {
            Ok(u) => u.known_key(task, &name, size, ino),
            Err(_) => return,
        };
        // Hashed once per file (then remembered by name, size and inode).
        let key = match known {
            Some(k) => k,
            None => match content_key(&path) {
                Ok((k, _)) => k,
                Err(_) => continue, // gone already
            },
        };
        let start = match uploader.lock() {
            Ok(mut u) => u.begin_ahead(task, &name, size, ino, &key, &path),
            Err(_) => return,
        };
        if !start {
            continue; // stored already, or being written
        }
        let uploaded = storage.upload(&path, &key);
        if let Err(e) = &uploaded {
            tracing::debug!(file = %path.display(), error = %e, "upload ahead failed; the checkpoint will send it");
        }
        if let Ok(mut u) = uploader.lock() {
            u.end_ahead(&key, &path, uploaded.is_ok());
        }
        if uploaded.is_ok() {
            stats.files.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(size, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::files::{UploadStats, Uploader};
    use std::sync::Mutex;

    #[test]
    fn settled_sst_files_are_uploaded_ahead_spared_while_live_and_not_sent_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        std::fs::create_dir_all(&live).expect("live");
        let sst = live.join("000042.sst");
        std::fs::write(&sst, vec![7u8; 2 << 20]).expect("sst");
        std::fs::write(live.join("MANIFEST-000001"), b"not an sst").expect("manifest");
        let url = format!("file://{}", dir.path().join("store").display());
        let storage = CheckpointStorage::open(&url).expect("storage");
        let uploader: SharedUploader =
            Arc::new(Mutex::new(Uploader::new(&storage).expect("uploader")));
        let ahead = PreUploader::start(
            CheckpointStorage::open(&url).expect("storage"),
            uploader.clone(),
            vec![("s1-t0".into(), live.clone())],
        )
        .expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while ahead.stats.files.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "nothing was uploaded ahead");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(ahead);
        let (key, _) = content_key(&sst).expect("key");
        let shared = storage.list_shared().expect("list");
        assert_eq!(
            shared.keys().collect::<Vec<_>>(),
            vec![&key],
            "only the SST goes ahead"
        );
        let mut u = uploader.lock().expect("lock");
        assert!(
            u.protects(&key),
            "a live file's object is kept for the next checkpoint"
        );
        // The checkpoint finds it stored and sends only the rest.
        let mut stats = UploadStats::default();
        u.upload_dir(&storage, "s1-t0", &live, &mut stats)
            .expect("upload");
        assert_eq!(stats.uploaded_files, 1, "only the MANIFEST file is sent");
        assert_eq!(stats.uploaded_bytes, b"not an sst".len() as u64);
        std::fs::remove_file(&sst).expect("compacted away");
        assert!(
            !u.protects(&key),
            "a file compacted away is garbage once unreferenced"
        );
    }
}
