//! Where checkpoints live: an `object_store` location (`file://` by default, `s3://` for real
//! deployments). Layout under the root:
//!
//! - `shared/<xxh3-128>-<size>`: state files, named by content, shared between checkpoints;
//! - `manifests/<id>.json`: one manifest per complete checkpoint, written last, create-only;
//! - `replays/<number>.jsonl`: dead-letter replays asked of the pipeline (`dlq::requests`),
//!   read by the run through its replay partition; `--fresh` deletes them with the rest;
//! - a savepoint is a root of its own: `manifest.json` next to its own `shared/` files.
//!
//! The calls are blocking: the coordinator and the CLI run them on a small private runtime.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::manifest::{id_of_manifest_key, manifest_key, Manifest};
use super::{CheckpointError, CheckpointId};

/// The folder of dead-letter replay requests.
pub const REPLAYS: &str = "replays";

/// The manifest of a savepoint, at the root of its folder.
pub const SAVEPOINT_MANIFEST: &str = "manifest.json";

/// A checkpoint root in an object store.
pub struct CheckpointStorage {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    rt: tokio::runtime::Runtime,
    /// How long a failing S3 request is retried (None: the client's default, 3 minutes).
    retry_timeout: Option<Duration>,
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointStorage({})", self.url)
    }
}

/// Files larger than this are uploaded in parts (multipart upload on S3).
pub const MULTIPART_THRESHOLD: u64 = 32 << 20;
/// Size of one uploaded part (S3 needs at least 5 MiB for all but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once.
const UPLOADS_IN_FLIGHT: usize = 4;

impl CheckpointStorage {
    /// Opens `url` (`file:///abs/folder`, `s3://bucket/prefix`, or a plain folder path).
    /// S3 settings come from the usual `AWS_*` variables (`AWS_ENDPOINT`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
    pub fn open(url: &str) -> Result<CheckpointStorage, CheckpointError> {
        CheckpointStorage::open_retrying(url, None)
    }

    /// The same storage, with failing S3 requests (connection refused, server errors) retried
    /// for at most `timeout` instead of 3 minutes: a run's checkpoints fail (and are declined)
    /// within their own timeout when the storage is down. Local folders fail at once anyway.
    pub fn retrying_for(self, timeout: Duration) -> Result<CheckpointStorage, CheckpointError> {
        if !self.url.starts_with("s3://") {
            return Ok(self);
        }
        CheckpointStorage::open_retrying(&self.url, Some(timeout))
    }

    /// Opens the same storage again (same retries), for another thread.
    pub fn reopen(&self) -> Result<CheckpointStorage, CheckpointError> {
        CheckpointStorage::open_retrying(&self.url, self.retry_timeout)
    }

    fn open_retrying(
        url: &str,
        retry_timeout: Option<Duration>,
    ) -> Result<CheckpointStorage, CheckpointError> {
        let err = |message: String| CheckpointError::Store {
            url: url.to_string(),
            message,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start the I/O runtime: {e}")))?;
        let (store, prefix): (Arc<dyn ObjectStore>, Path) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(err(
                        "the URL names no bucket; write `s3://bucket/prefix`".into()
                    ));
                }
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(timeout) = retry_timeout {
                    let defaults = object_store::RetryConfig::default();
                    builder = builder.with_retry(object_store::RetryConfig {
                        retry_timeout: timeout,
                        backoff: object_store::BackoffConfig {
                            max_backoff: defaults.backoff.max_backoff.min(timeout / 2),
                            ..defaults.backoff
                        },
                        ..defaults
                    });
                }
                let s3 = builder.build().map_err(|e| err(e.to_string()))?;
                (Arc::new(s3), Path::from(prefix.trim_matches('/')))
            } else {
                let dir = url.strip_prefix("file://").unwrap_or(url);
                std::fs::create_dir_all(dir)
                    .map_err(|e| err(format!("cannot create the folder: {e}")))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| err(e.to_string()))?
                    .with_automatic_cleanup(true);
                (Arc::new(local), Path::default())
            };
        Ok(CheckpointStorage {
            url: url.to_string(),
            store,
            prefix,
            rt,
            retry_timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Local folders only: removes the staging files (`<name>#<n>`) a crash in the middle of a
    /// write left behind (object_store writes through them and renames; a process killed in
    /// between leaves them, and nothing else ever reads or deletes them). Returns how many.
    pub fn remove_staging_leftovers(&self) -> usize {
        if self.url.starts_with("s3://") {
            return 0; // S3 writes are atomic: nothing is staged
        }
        let root = std::path::PathBuf::from(self.url.strip_prefix("file://").unwrap_or(&self.url));
        let mut removed = 0;
        for dir in ["manifests", "shared"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains('#')
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// A human-readable location of `key`, for messages.
    pub fn display(&self, key: &str) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), key)
    }

    /// An object's key relative to the root (what [`CheckpointStorage::path`] took).
    fn key_of(&self, location: &Path) -> String {
        let full = location.as_ref();
        let root = self.prefix.as_ref();
        match root.is_empty() {
            true => full.to_string(),
            false => full
                .strip_prefix(root)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(full)
                .to_string(),
        }
    }

    fn path(&self, key: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    fn fail(&self, key: &str, e: object_store::Error) -> CheckpointError {
        match e {
            object_store::Error::NotFound { .. } => CheckpointError::Missing {
                location: self.display(key),
            },
            other => CheckpointError::Store {
                url: self.display(key),
                message: other.to_string(),
            },
        }
    }

    /// Ids of every manifest under `manifests/`, ascending.
    pub fn list_checkpoints(&self) -> Result<Vec<CheckpointId>, CheckpointError> {
        let prefix = self.path("manifests");
        let metas: Vec<_> = self
            .rt
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(|e| self.fail("manifests", e))?;
        let mut ids: Vec<CheckpointId> = metas
            .iter()
            .filter_map(|m| id_of_manifest_key(m.location.as_ref()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every object under `shared/` with its size.
    pub fn list_shared(&self) -> Result<HashMap<String, u64>, CheckpointError> {
        let prefix = self.path("shared");
        let metas: Vec<_> = self
            .rt
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(|e| self.fail("shared", e))?;
        Ok(metas
            .into_iter()
            .map(|m| (self.key_of(&m.location), m.size))
            .collect())
    }

    /// Reads and parses the manifest at `key`; errors name the object.
    pub fn read_manifest_at(&self, key: &str) -> Result<Manifest, CheckpointError> {
        let bytes = self.get(key)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::BadManifest {
                location: self.display(key),
                message: e.to_string(),
            })?;
        if manifest.format != super::manifest::FORMAT {
            return Err(CheckpointError::BadManifest {
                location: self.display(key),
                message: format!(
                    "format {} is not supported by this build (it reads format {})",
                    manifest.format,
                    super::manifest::FORMAT
                ),
            });
        }
        Ok(manifest)
    }

    pub fn read_manifest(&self, id: CheckpointId) -> Result<Manifest, CheckpointError> {
        self.read_manifest_at(&manifest_key(id))
    }

    /// Writes a manifest at `key`, failing if one is there already: a checkpoint exists once.
    pub fn write_manifest_at(&self, key: &str, m: &Manifest) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec_pretty(m).map_err(|e| CheckpointError::Store {
            url: self.display(key),
            message: e.to_string(),
        })?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.rt
            .block_on(
                self.store
                    .put_opts(&self.path(key), PutPayload::from(bytes), opts),
            )
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. } => CheckpointError::Store {
                    url: self.display(key),
                    message: "a manifest with this id already exists (is another run of this pipeline writing here?)".into(),
                },
                other => self.fail(key, other),
            })?;
        Ok(())
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<(), CheckpointError> {
        self.write_manifest_at(&manifest_key(m.id), m)
    }

    pub fn get(&self, key: &str) -> Result<bytes::Bytes, CheckpointError> {
        self.rt
            .block_on(async {
                let got = self.store.get(&self.path(key)).await?;
                got.bytes().await
            })
            .map_err(|e| self.fail(key, e))
    }

    /// Uploads a local file to `key` (overwriting: keys are content names). Files above
    /// [`MULTIPART_THRESHOLD`] are streamed in parts, never held in memory whole.
    pub fn upload(&self, local: &FsPath, key: &str) -> Result<u64, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: local.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(local).map_err(io)?.len();
        if len > MULTIPART_THRESHOLD {
            return self.upload_in_parts(local, key);
        }
        let bytes = std::fs::read(local).map_err(io)?;
        let size = bytes.len() as u64;
        self.rt
            .block_on(self.store.put(&self.path(key), PutPayload::from(bytes)))
            .map_err(|e| self.fail(key, e))?;
        Ok(size)
    }

    fn upload_in_parts(&self, local: &FsPath, key: &str) -> Result<u64, CheckpointError> {
        use std::io::Read;
        let io = |source| CheckpointError::Io {
            path: local.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(local).map_err(io)?;
        let path = self.path(key);
        self.rt.block_on(async {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.fail(key, e))?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut buf = vec![0u8; PART_SIZE];
            let mut total = 0u64;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(io(e));
                    }
                };
                writer.write(&buf[..n]);
                total += n as u64;
                // At most a few parts in flight: memory stays bounded.
                writer
                    .wait_for_capacity(UPLOADS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.fail(key, e))?;
            }
            writer.finish().await.map_err(|e| self.fail(key, e))?;
            Ok(total)
        })
    }

    /// Downloads `key` into `local` (through a temporary name, so a partial file never
    /// carries the final name).
    pub fn download(&self, key: &str, local: &FsPath) -> Result<u64, CheckpointError> {
        let bytes = self.get(key)?;
        let tmp = local.with_extension("download");
        let io = |source| CheckpointError::Io {
            path: local.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, local).map_err(io)?;
        Ok(bytes.len() as u64)
    }

    /// Copies an object from another root (savepoints) unless it is here already.
    pub fn copy_from(&self, other: &CheckpointStorage, key: &str) -> Result<u64, CheckpointError> {
        let bytes = other.get(key)?;
        let size = bytes.len() as u64;
        self.rt
            .block_on(self.store.put(&self.path(key), PutPayload::from(bytes)))
            .map_err(|e| self.fail(key, e))?;
        Ok(size)
    }

    /// Copies the Wasm modules `manifest` runs from `other` when this storage lacks them (a
    /// savepoint carries its modules; a run restored from one keeps them next to its own
    /// checkpoints). A module `other` lacks is skipped: it is the pipeline file's own, which
    /// the restored run loads from the file. Returns the bytes copied.
    pub fn copy_udf_modules(
        &self,
        other: &CheckpointStorage,
        manifest: &super::manifest::Manifest,
    ) -> Result<u64, CheckpointError> {
        let mut copied = 0;
        for key in manifest.udf_module_keys() {
            match self.get(&key) {
                Ok(_) => continue,
                Err(CheckpointError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
            match self.copy_from(other, &key) {
                Ok(n) => copied += n,
                Err(CheckpointError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(copied)
    }

    /// Writes `bytes` at `key` (created or replaced; small objects only).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), CheckpointError> {
        self.rt
            .block_on(self.store.put(&self.path(key), PutPayload::from(bytes)))
            .map_err(|e| self.fail(key, e))?;
        Ok(())
    }

    /// Writes `bytes` at `key` unless an object is there already: true when it was written.
    pub fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, CheckpointError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.rt.block_on(
            self.store
                .put_opts(&self.path(key), PutPayload::from(bytes), opts),
        ) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.fail(key, e)),
        }
    }

    /// The keys of the objects under the folder `folder` (relative to the root), sorted.
    pub fn list_keys(&self, folder: &str) -> Result<Vec<String>, CheckpointError> {
        let prefix = self.path(folder);
        let metas: Vec<_> = self
            .rt
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(|e| self.fail(folder, e))?;
        let mut keys: Vec<String> = metas.iter().map(|m| self.key_of(&m.location)).collect();
        keys.sort_unstable();
        Ok(keys)
    }

    pub fn delete(&self, key: &str) -> Result<(), CheckpointError> {
        match self.rt.block_on(self.store.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{ManifestKind, FORMAT};
    use super::*;

    pub(crate) fn manifest(id: CheckpointId) -> Manifest {
        Manifest {
            format: FORMAT,
            id,
            kind: ManifestKind::Checkpoint,
            pipeline: "p".into(),
            started_ms: 0,
            duration_ms: 1,
            parallelism: 1,
            max_parallelism: 128,
            finished: false,
            operators: vec![],
            sources: vec![],
            tasks: vec![],
            commits: vec![],
            state_bytes: 0,
            uploaded_bytes: 0,
            dlq_len: None,
            sink_channels: Vec::new(),
            udf_modules: Default::default(),
        }
    }

    #[test]
    fn large_files_upload_in_parts_and_come_back_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).expect("mkdir");
        let s = CheckpointStorage::open(&format!("file://{}", store.display())).expect("open");
        // Above the threshold and not a whole number of parts.
        let len = MULTIPART_THRESHOLD as usize + (3 << 20) + 12345;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let local = dir.path().join("big.sst");
        std::fs::write(&local, &data).expect("write");
        assert_eq!(s.upload(&local, "shared/big").expect("upload"), len as u64);
        let back = dir.path().join("back.sst");
        assert_eq!(
            s.download("shared/big", &back).expect("download"),
            len as u64
        );
        assert!(
            std::fs::read(&back).expect("read") == data,
            "content differs"
        );
    }

    #[test]
    fn staging_leftovers_of_a_crashed_write_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CheckpointStorage::open(&format!("file://{}", dir.path().display())).expect("open");
        s.write_manifest(&manifest(1)).expect("write");
        std::fs::write(dir.path().join("manifests/0000000002.json#3"), b"{").expect("stray");
        std::fs::create_dir_all(dir.path().join("shared")).expect("mkdir");
        std::fs::write(dir.path().join("shared/abc-10#1"), b"partial").expect("stray");
        assert_eq!(s.remove_staging_leftovers(), 2);
        assert!(!dir.path().join("manifests/0000000002.json#3").exists());
        assert_eq!(s.list_checkpoints().expect("list"), vec![1]);
    }

    #[test]
    fn manifests_are_written_once_and_listed_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CheckpointStorage::open(&format!("file://{}", dir.path().display())).expect("open");
        assert!(s.list_checkpoints().expect("list").is_empty());
        for id in [10, 2, 9] {
            s.write_manifest(&manifest(id)).expect("write");
        }
        assert_eq!(s.list_checkpoints().expect("list"), vec![2, 9, 10]);
        assert_eq!(s.read_manifest(9).expect("read").id, 9);
        let again = s.write_manifest(&manifest(9)).expect_err("create-only");
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn create_writes_once_and_keys_list_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = CheckpointStorage::open(dir.path().to_str().expect("utf-8")).expect("open");
        assert!(storage
            .create("replays/2.jsonl", b"b".to_vec())
            .expect("create"));
        assert!(storage
            .create("replays/1.jsonl", b"a".to_vec())
            .expect("create"));
        assert!(!storage
            .create("replays/1.jsonl", b"x".to_vec())
            .expect("create"));
        assert_eq!(&storage.get("replays/1.jsonl").expect("get")[..], b"a");
        assert_eq!(
            storage.list_keys("replays").expect("list"),
            vec!["replays/1.jsonl", "replays/2.jsonl"]
        );
        assert!(storage.list_keys("nothing").expect("list").is_empty());
    }

    #[test]
    fn files_round_trip_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s =
            CheckpointStorage::open(dir.path().join("root").to_str().expect("utf8")).expect("open");
        let src = dir.path().join("a.sst");
        std::fs::write(&src, b"hello").expect("seed");
        assert_eq!(s.upload(&src, "shared/abc-5").expect("upload"), 5);
        assert_eq!(s.list_shared().expect("list").get("shared/abc-5"), Some(&5));
        let dst = dir.path().join("b.sst");
        s.download("shared/abc-5", &dst).expect("download");
        assert_eq!(std::fs::read(&dst).expect("read"), b"hello");
        s.delete("shared/abc-5").expect("delete");
        let err = s.download("shared/abc-5", &dst).expect_err("gone");
        assert!(err.to_string().contains("shared/abc-5"), "{err}");
    }

    #[test]
    fn a_damaged_manifest_is_reported_with_its_location() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CheckpointStorage::open(dir.path().to_str().expect("utf8")).expect("open");
        std::fs::create_dir_all(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(dir.path().join("manifests/0000000003.json"), b"{ not json").expect("seed");
        let err = s.read_manifest(3).expect_err("corrupt");
        assert!(err.to_string().contains("0000000003.json"), "{err}");
    }
}
