//! The module store: every version of a Wasm UDF's module uploaded to a running pipeline, kept
//! next to its checkpoints through the same object store (a folder or `s3://`):
//!
//! - `udf-modules/<sha256>.wasm`: a module, named by its content (shared between UDFs);
//! - `udf-modules/versions/<udf>.json`: the UDF's versions (digest, size, when, who) and the
//!   history of its activations, newest last.
//!
//! Checkpoint manifests name the module each Wasm UDF runs after them (`udf_modules`), and a
//! run restored from one loads it from here.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::CheckpointError;

/// A failure of the module store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] CheckpointError),
    #[error("udf `{udf}` has no version `{wanted}`; known: {}", known_list(.known))]
    UnknownVersion {
        udf: String,
        wanted: String,
        known: Vec<String>,
    },
    #[error("version `{wanted}` of udf `{udf}` is ambiguous: it starts {}", known_list(.matching))]
    Ambiguous {
        udf: String,
        wanted: String,
        matching: Vec<String>,
    },
    #[error("the stored module {key} is damaged: its SHA-256 is {actual}")]
    Damaged { key: String, actual: String },
    #[error("the versions record {key} cannot be read: {message}")]
    BadRecord { key: String, message: String },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none (upload one with POST /udfs/<udf>/versions)".into()
    } else {
        known.join(", ")
    }
}

/// One uploaded version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    pub digest: String,
    pub size: u64,
    /// RFC 3339, UTC.
    pub uploaded_at: String,
    /// `token` (whoever holds the control token), the `X-Headwater-User` header, or
    /// `pipeline file` for the module the pipeline started with.
    pub uploader: String,
}

/// One activation: the version ran from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub digest: String,
    /// The checkpoint after whose barrier it ran (none: at the start of a run, or a run
    /// without checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_checkpoint: Option<u64>,
    pub at: String,
    pub by: String,
}

/// A UDF's versions and activations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsRecord {
    pub versions: Vec<StoredVersion>,
    #[serde(default)]
    pub activations: Vec<Activation>,
}

impl VersionsRecord {
    /// The full digest `wanted` (a digest or an unambiguous prefix of one) names.
    pub fn resolve(&self, udf: &str, wanted: &str) -> Result<String, StoreError> {
        let wanted_lc = wanted.trim().to_ascii_lowercase();
        let matching: Vec<String> = self
            .versions
            .iter()
            .filter(|v| !wanted_lc.is_empty() && v.digest.starts_with(&wanted_lc))
            .map(|v| v.digest.clone())
            .collect();
        match matching.len() {
            1 => Ok(matching[0].clone()),
            0 => Err(StoreError::UnknownVersion {
                udf: udf.into(),
                wanted: wanted.into(),
                known: self.versions.iter().map(|v| v.digest.clone()).collect(),
            }),
            _ => Err(StoreError::Ambiguous {
                udf: udf.into(),
                wanted: wanted.into(),
                matching,
            }),
        }
    }

    /// The version active before `current`: the newest activation of another digest.
    pub fn previous(&self, current: &str) -> Option<String> {
        self.activations
            .iter()
            .rev()
            .find(|a| a.digest != current)
            .map(|a| a.digest.clone())
    }
}

/// The object key of a module.
pub fn module_key(digest: &str) -> String {
    crate::checkpoint::manifest::udf_module_key(digest)
}

fn record_key(udf: &str) -> String {
    format!("udf-modules/versions/{udf}.json")
}

/// Now, as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The modules and versions records of one pipeline.
pub struct ModuleStore {
    storage: CheckpointStorage,
    /// Record updates are read-modify-write: one at a time.
    writing: Mutex<()>,
}

impl ModuleStore {
    pub fn new(storage: CheckpointStorage) -> ModuleStore {
        ModuleStore {
            storage,
            writing: Mutex::new(()),
        }
    }

    /// Opens the store next to the checkpoints at `url`.
    pub fn open(url: &str) -> Result<ModuleStore, StoreError> {
        Ok(ModuleStore::new(CheckpointStorage::open(url)?))
    }

    /// Where a key is, for messages.
    pub fn display(&self, key: &str) -> String {
        self.storage.display(key)
    }

    /// Stores `bytes` (whose SHA-256 is `digest`) as a version of `udf`, once: a module
    /// uploaded again keeps its first upload's entry. Returns the entry.
    pub fn put(
        &self,
        udf: &str,
        digest: &str,
        bytes: &[u8],
        uploader: &str,
    ) -> Result<StoredVersion, StoreError> {
        let key = module_key(digest);
        if self.get_opt(&key)?.is_none() {
            self.storage.put(&key, bytes.to_vec())?;
        }
        self.update(udf, |record| {
            if let Some(v) = record.versions.iter().find(|v| v.digest == digest) {
                return v.clone();
            }
            let v = StoredVersion {
                digest: digest.to_string(),
                size: bytes.len() as u64,
                uploaded_at: now_rfc3339(),
                uploader: uploader.to_string(),
            };
            record.versions.push(v.clone());
            v
        })
    }

    /// The module named `digest`, checked against its name.
    pub fn module(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = module_key(digest);
        let Some(bytes) = self.get_opt(&key)? else {
            return Ok(None);
        };
        let actual = super::sha256_hex(&bytes);
        if actual != digest {
            return Err(StoreError::Damaged {
                key: self.display(&key),
                actual,
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// The versions record of `udf` (empty when nothing was stored yet).
    pub fn record(&self, udf: &str) -> Result<VersionsRecord, StoreError> {
        let key = record_key(udf);
        match self.get_opt(&key)? {
            None => Ok(VersionsRecord::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::BadRecord {
                key: self.display(&key),
                message: e.to_string(),
            }),
        }
    }

    /// Appends an activation to `udf`'s history (unless it is already the newest one).
    pub fn note_activation(&self, udf: &str, activation: Activation) -> Result<(), StoreError> {
        self.update(udf, |record| {
            if record.activations.last().map(|a| &a.digest) != Some(&activation.digest) {
                record.activations.push(activation);
            }
        })
    }

    fn update<T>(
        &self,
        udf: &str,
        change: impl FnOnce(&mut VersionsRecord) -> T,
    ) -> Result<T, StoreError> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = self.record(udf)?;
        let out = change(&mut record);
        let key = record_key(udf);
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::BadRecord {
            key: self.display(&key),
            message: e.to_string(),
        })?;
        self.storage.put(&key, bytes)?;
        Ok(out)
    }

    fn get_opt(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        match self.storage.get(key) {
            Ok(b) => Ok(Some(b)),
            Err(CheckpointError::Missing { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_versions_once_and_resolves_prefixes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ModuleStore::open(&dir.path().display().to_string()).expect("open");
        let (a, b) = (b"module a".to_vec(), b"module b".to_vec());
        let (da, db) = (super::super::sha256_hex(&a), super::super::sha256_hex(&b));
        let first = store.put("f", &da, &a, "token").expect("put");
        assert_eq!(first.size, 8);
        store.put("f", &db, &b, "alice").expect("put");
        let again = store.put("f", &da, &a, "bob").expect("put again");
        assert_eq!(again.uploader, "token", "the first upload's entry stays");
        let record = store.record("f").expect("record");
        assert_eq!(record.versions.len(), 2);
        assert_eq!(store.module(&db).expect("get"), Some(b));
        assert_eq!(store.module(&"0".repeat(64)).expect("get"), None);
        assert_eq!(record.resolve("f", &da[..8]).expect("prefix"), da);
        assert!(matches!(
            record.resolve("f", "zz"),
            Err(StoreError::UnknownVersion { known, .. }) if known.len() == 2
        ));
        for (digest, by) in [(&da, "a"), (&db, "b"), (&db, "b")] {
            store
                .note_activation(
                    "f",
                    Activation {
                        digest: digest.clone(),
                        after_checkpoint: None,
                        at: now_rfc3339(),
                        by: by.into(),
                    },
                )
                .expect("note");
        }
        let record = store.record("f").expect("record");
        assert_eq!(record.activations.len(), 2, "a repeat is not noted twice");
        assert_eq!(record.previous(&db), Some(da.clone()));
        assert_eq!(
            store.record("other").expect("empty"),
            VersionsRecord::default()
        );
    }
}
