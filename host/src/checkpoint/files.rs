//! State files between the local disk and the checkpoint storage: content names, incremental
//! upload (a file already stored is never sent again) and restore that reuses local copies.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::{StateFile, TaskState};
use super::storage::CheckpointStorage;
use super::CheckpointError;

/// The content name of a local file: `shared/<xxh3-128 hex>-<size>`.
pub fn content_key(path: &Path) -> Result<(String, u64), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("shared/{:032x}-{size}", hasher.digest128()), size))
}

/// The files of a local folder (a RocksDB checkpoint), sorted by name.
pub fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        if meta.is_file() {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
                meta.len(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// The inode of a file (its identity across hard links), if it can be read.
pub fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Uploads RocksDB checkpoints incrementally.
///
/// SST files never change once written, and a checkpoint's SST is a hard link to the live
/// one, so a file seen before (same task, name, size *and inode*) keeps its content name
/// without being read again. The inode guards against a different instance that happens to
/// produce a file with the same name and size (after a rescale, say). Every other file is
/// hashed each time (they are small). Objects already in the storage are not uploaded again.
#[derive(Default)]
pub struct Uploader {
    stored: HashSet<String>,
    sst_keys: HashMap<(String, String, u64), (String, Option<u64>)>,
    /// Objects the background uploader ([`super::preupload`]) is writing now.
    in_progress: HashSet<String>,
    /// Objects uploaded ahead of any manifest, with the live file they hold: garbage
    /// collection spares them while that file exists (a checkpoint is likely to need it).
    ahead: HashMap<String, PathBuf>,
}

/// The uploader, shared by the coordinator and the background uploader.
pub type SharedUploader = std::sync::Arc<std::sync::Mutex<Uploader>>;

/// What one upload did.
#[derive(Debug, Default, Clone, Copy)]
pub struct UploadStats {
    pub files: usize,
    pub total_bytes: u64,
    pub uploaded_bytes: u64,
    pub uploaded_files: usize,
}

impl Uploader {
    /// Starts from what the storage already holds.
    pub fn new(storage: &CheckpointStorage) -> Result<Uploader, CheckpointError> {
        Ok(Uploader {
            stored: storage.list_shared()?.into_keys().collect(),
            ..Uploader::default()
        })
    }

    /// Remembers the content names of files restored from a manifest into `live` (the
    /// task's RocksDB folder, whose files are those very files).
    pub fn learn(&mut self, task: &str, files: &[StateFile], live: &Path) {
        for f in files {
            if f.name.ends_with(".sst") {
                if let Some(ino) = inode(&live.join(&f.name)) {
                    self.sst_keys.insert(
                        (task.to_string(), f.name.clone(), f.size),
                        (f.key.clone(), Some(ino)),
                    );
                }
            }
        }
    }

    /// Forgets objects deleted by garbage collection.
    pub fn forget(&mut self, key: &str) {
        self.stored.remove(key);
        self.ahead.remove(key);
    }

    /// Whether garbage collection must keep `key` although no manifest references it: it is
    /// being uploaded, or it was uploaded ahead and its live file still exists.
    pub fn protects(&self, key: &str) -> bool {
        self.in_progress.contains(key) || self.ahead.get(key).is_some_and(|p| p.exists())
    }

    /// Whether a background upload is writing now (its staging file must not be removed).
    pub fn uploading(&self) -> bool {
        !self.in_progress.is_empty()
    }

    /// The content name of an SST file seen before (same task, name, size and inode).
    pub fn known_key(&self, task: &str, name: &str, size: u64, ino: Option<u64>) -> Option<String> {
        self.sst_keys
            .get(&(task.to_string(), name.to_string(), size))
            .filter(|(_, known)| known.is_some() && *known == ino)
            .map(|(k, _)| k.clone())
    }

    /// Starts a background upload of `path` (content name `key`): false when the storage
    /// has it already (then it is only protected while live) or another upload is writing it.
    pub fn begin_ahead(
        &mut self,
        task: &str,
        name: &str,
        size: u64,
        ino: Option<u64>,
        key: &str,
        path: &Path,
    ) -> bool {
        self.sst_keys.insert(
            (task.to_string(), name.to_string(), size),
            (key.to_string(), ino),
        );
        if self.stored.contains(key) {
            self.ahead
                .entry(key.to_string())
                .or_insert_with(|| path.to_path_buf());
            return false;
        }
        self.in_progress.insert(key.to_string())
    }

    /// Ends a background upload begun with [`Uploader::begin_ahead`].
    pub fn end_ahead(&mut self, key: &str, path: &Path, uploaded: bool) {
        self.in_progress.remove(key);
        if uploaded {
            self.stored.insert(key.to_string());
            self.ahead.insert(key.to_string(), path.to_path_buf());
        }
    }

    /// Uploads the files of `dir` that the storage lacks; returns the manifest entries.
    pub fn upload_dir(
        &mut self,
        storage: &CheckpointStorage,
        task: &str,
        dir: &Path,
        stats: &mut UploadStats,
    ) -> Result<Vec<StateFile>, CheckpointError> {
        let mut files = Vec::new();
        for (name, path, size) in list_files(dir)? {
            let cache_key = (task.to_string(), name.clone(), size);
            let ino = inode(&path);
            let cached = self.known_key(task, &name, size, ino);
            let key = match cached {
                Some(k) => k,
                None => {
                    let (k, _) = content_key(&path)?;
                    if name.ends_with(".sst") {
                        self.sst_keys.insert(cache_key, (k.clone(), ino));
                    }
                    k
                }
            };
            if !self.stored.contains(&key) {
                storage.upload(&path, &key)?;
                self.stored.insert(key.clone());
                stats.uploaded_bytes += size;
                stats.uploaded_files += 1;
            }
            stats.files += 1;
            stats.total_bytes += size;
            files.push(StateFile { name, key, size });
        }
        Ok(files)
    }
}

impl Uploader {
    /// Uploads one file (channel state) unless the storage has it.
    pub fn upload_file(
        &mut self,
        storage: &CheckpointStorage,
        name: &str,
        path: &Path,
        stats: &mut UploadStats,
    ) -> Result<StateFile, CheckpointError> {
        let (key, size) = content_key(path)?;
        if !self.stored.contains(&key) {
            storage.upload(path, &key)?;
            self.stored.insert(key.clone());
            stats.uploaded_bytes += size;
            stats.uploaded_files += 1;
        }
        stats.files += 1;
        stats.total_bytes += size;
        Ok(StateFile {
            name: name.to_string(),
            key,
            size,
        })
    }
}

/// What a restore of one task's files did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreStats {
    pub reused_files: usize,
    pub downloaded_files: usize,
    pub downloaded_bytes: u64,
}

/// Rebuilds a task's RocksDB folder in `target` from its manifest entry: files found in one of
/// `local_dirs` with the same name and size are linked (SSTs) or copied; the rest is
/// downloaded. A downloaded file whose size differs from the manifest is an error naming it.
pub fn materialize(
    storage: &CheckpointStorage,
    task: &TaskState,
    target: &Path,
    local_dirs: &[PathBuf],
    stats: &mut RestoreStats,
) -> Result<(), CheckpointError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(io(target))?;
    }
    std::fs::create_dir_all(target).map_err(io(target))?;
    for f in &task.files {
        if f.name.contains('/') || f.name.starts_with('.') {
            return Err(CheckpointError::Corrupt {
                location: storage.display(&f.key),
                message: format!("file name `{}` is not a plain name", f.name),
            });
        }
        let dest = target.join(&f.name);
        let local = local_dirs.iter().map(|d| d.join(&f.name)).find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.len() == f.size)
                .unwrap_or(false)
        });
        match local {
            Some(src) => {
                let linked = f.name.ends_with(".sst") && std::fs::hard_link(&src, &dest).is_ok();
                if !linked {
                    std::fs::copy(&src, &dest).map_err(io(&dest))?;
                }
                stats.reused_files += 1;
            }
            None => {
                let got = storage.download(&f.key, &dest)?;
                if got != f.size {
                    return Err(CheckpointError::Corrupt {
                        location: storage.display(&f.key),
                        message: format!(
                            "holds {got} bytes but the manifest says {} (file `{}`)",
                            f.size, f.name
                        ),
                    });
                }
                stats.downloaded_files += 1;
                stats.downloaded_bytes += got;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_depend_on_content_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, b"same bytes").expect("a");
        std::fs::write(&b, b"same bytes").expect("b");
        std::fs::write(&c, b"other bytes").expect("c");
        let ka = content_key(&a).expect("a").0;
        assert_eq!(ka, content_key(&b).expect("b").0);
        assert_ne!(ka, content_key(&c).expect("c").0);
        assert!(ka.starts_with("shared/") && ka.ends_with("-10"), "{ka}");
    }

    #[test]
    fn a_file_with_a_known_name_and_size_but_other_content_gets_its_own_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::open(dir.path().join("store").to_str().expect("utf8"))
            .expect("open");
        let live = dir.path().join("live");
        std::fs::create_dir_all(&live).expect("mkdir");
        std::fs::write(live.join("000009.sst"), b"old!").expect("old");
        let old = StateFile {
            name: "000009.sst".into(),
            key: content_key(&live.join("000009.sst")).expect("key").0,
            size: 4,
        };
        let mut up = Uploader::new(&storage).expect("uploader");
        up.learn("s1-t0", std::slice::from_ref(&old), &live);
        // Another instance (a rescaled task) writes its own 000009.sst of the same size.
        let snap = dir.path().join("snap");
        std::fs::create_dir_all(&snap).expect("mkdir");
        std::fs::write(snap.join("000009.sst"), b"new!").expect("new");
        let mut stats = UploadStats::default();
        let files = up
            .upload_dir(&storage, "s1-t0", &snap, &mut stats)
            .expect("upload");
        assert_ne!(
            files[0].key, old.key,
            "the new content is not mistaken for the old"
        );
        assert_eq!(
            files[0].key,
            content_key(&snap.join("000009.sst")).expect("key").0
        );
        // The restored file itself, hard-linked into a checkpoint, keeps its learned name.
        let snap2 = dir.path().join("snap2");
        std::fs::create_dir_all(&snap2).expect("mkdir");
        std::fs::hard_link(live.join("000009.sst"), snap2.join("000009.sst")).expect("link");
        let files = up
            .upload_dir(&storage, "s1-t0", &snap2, &mut stats)
            .expect("upload");
        assert_eq!(files[0].key, old.key);
    }

    #[test]
    fn upload_is_incremental_and_restore_reuses_local_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::open(dir.path().join("store").to_str().expect("utf8"))
            .expect("open");
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).expect("mkdir");
        std::fs::write(db.join("000001.sst"), vec![1u8; 1000]).expect("sst");
        std::fs::write(db.join("CURRENT"), b"MANIFEST-1\n").expect("current");
        let mut up = Uploader::new(&storage).expect("uploader");
        let mut first = UploadStats::default();
        let files = up
            .upload_dir(&storage, "s1-t0", &db, &mut first)
            .expect("upload");
        assert_eq!((first.files, first.uploaded_bytes), (2, 1011));
        std::fs::write(db.join("000002.sst"), vec![2u8; 500]).expect("sst2");
        let mut second = UploadStats::default();
        up.upload_dir(&storage, "s1-t0", &db, &mut second)
            .expect("upload");
        assert_eq!(second.uploaded_bytes, 500, "only the new file goes up");
        assert_eq!(second.total_bytes, 1511);

        let task = TaskState {
            stage: 1,
            task: 0,
            key_groups: (0, 127),
            watermark: 0,
            files,
            channel: None,
        };
        let mut stats = RestoreStats::default();
        materialize(
            &storage,
            &task,
            &dir.path().join("r1"),
            std::slice::from_ref(&db),
            &mut stats,
        )
        .expect("local");
        assert_eq!((stats.reused_files, stats.downloaded_files), (2, 0));
        let mut stats = RestoreStats::default();
        materialize(&storage, &task, &dir.path().join("r2"), &[], &mut stats).expect("remote");
        assert_eq!((stats.reused_files, stats.downloaded_files), (0, 2));
        assert_eq!(
            std::fs::read(dir.path().join("r2/000001.sst")).expect("read"),
            vec![1u8; 1000]
        );
    }
}
