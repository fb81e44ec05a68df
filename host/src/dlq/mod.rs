//! The dead-letter queue: records that could not be processed, kept with everything needed to
//! understand and replay them.
//!
//! Each dead letter is written as one JSON line (an *envelope*):
//!
//! ```json
//! {"envelope_version":1,"source":"orders","partition":0,"partition_name":"input/orders.jsonl","offset":12,
//!  "step":"decode","error_class":"permanent","error":"EOF while parsing an object at line 1 column 80",
//!  "detail":null,"attempts":1,"event_time":null,"failed_at":"2026-11-24T14:00:00.000Z",
//!  "raw":"{\"ts\": \"2026-01-01T10:00:30Z\", \"shop\": "}
//! ```
//!
//! `error_type` is the exception class or error kind, and `fingerprint` groups dead letters
//! that share a cause (see [`fingerprint`]); `headwater dlq inspect` shows the groups.
//! `raw` holds the original bytes when they are UTF-8, otherwise `raw_base64` holds them in
//! standard base64; when they were too large to keep whole, `raw` holds their first
//! [`KEPT_RAW_BYTES`] and `raw_size` their size. `offset` is the 1-based line for file and
//! stdin sources and the event number for generators. `event_time` is set when the record's
//! time was known.

mod commit;
pub mod fingerprint;
pub mod inspect;
pub mod replay;
pub mod requests;
pub use commit::{DlqFileCommitter, DLQ_PARTICIPANT};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::record::Origin;

pub use headwater_sdk::ErrorClass;

/// The envelope's format version, its first field. Fields may be added within a version
/// (readers ignore what they do not know); removing a field or changing what one means
/// bumps it. Envelopes written before the field existed carry the same fields as version 1.
pub const ENVELOPE_VERSION: u32 = 1;

/// How much of a record's bytes a dead letter keeps when they are too large to keep whole.
pub const KEPT_RAW_BYTES: usize = 64 << 10;

/// A record that could not be processed.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The original bytes (for records already decoded: their JSON).
    pub raw: Vec<u8>,
    pub origin: Origin,
    /// Where it failed: `decode`, `event_time`, `steps[3] window`, `steps[2] udf enrich`, ...
    pub step: String,
    pub error_class: ErrorClass,
    pub error: String,
    /// More detail, such as a traceback.
    pub detail: Option<String>,
    pub attempts: u32,
    pub event_time: Option<i64>,
    /// Wall-clock time of the failure, ms since the epoch.
    pub failed_at_ms: i64,
    /// The size of the original bytes when `raw` holds only their beginning.
    pub raw_size: Option<u64>,
    /// When the first attempt failed (ms since the epoch), when it was retried.
    pub first_failed_at_ms: Option<i64>,
    /// Which tier of a UDF step gave up: `retry` (its calls, retries and circuit breaker)
    /// or `remediation` (its remediation gave up, or the repaired record failed again).
    pub tier: Option<&'static str>,
    /// The code that failed: a UDF's runtime, with the digest of its code where the runtime
    /// knows it (`wasm:sha256:...`, `python:sha256:...`).
    pub udf_version: Option<String>,
    /// The record's key, when a `key_by` came before the step (a replay routes it by it).
    pub key: Option<crate::value::Value>,
}

impl DeadLetter {
    pub fn new(
        raw: Vec<u8>,
        origin: Origin,
        step: String,
        error_class: ErrorClass,
        error: String,
    ) -> Self {
        DeadLetter {
            raw,
            origin,
            step,
            error_class,
            error,
            detail: None,
            attempts: 1,
            event_time: None,
            failed_at_ms: now_ms(),
            raw_size: None,
            first_failed_at_ms: None,
            tier: None,
            udf_version: None,
            key: None,
        }
    }

    /// Keeps at most `keep` bytes of `raw` (cut at a character boundary when it is UTF-8), and
    /// the original size in `raw_size`.
    pub fn truncate_raw(&mut self, keep: usize) {
        if self.raw.len() <= keep {
            return;
        }
        let size = self.raw_size.unwrap_or(self.raw.len() as u64);
        let mut cut = keep;
        if std::str::from_utf8(&self.raw).is_ok() {
            while cut > 0 && (self.raw[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
        }
        self.raw.truncate(cut);
        self.raw_size = Some(size);
    }

    /// The error's type and the fingerprint of its cause (see [`fingerprint`]).
    pub fn cause(&self) -> (String, String) {
        let error_type = fingerprint::error_type(&self.step, &self.error);
        let print = fingerprint::fingerprint(&self.step, &error_type, &self.error);
        (error_type, print)
    }

    /// The JSON envelope, with source and partition names resolved through `names`.
    pub fn to_envelope(&self, names: &Names) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("envelope_version".into(), ENVELOPE_VERSION.into());
        let source = names.sources.get(usize::from(self.origin.source)).cloned();
        let partition_name = names
            .partitions
            .get(usize::from(self.origin.source))
            .and_then(|p| p.get(self.origin.partition as usize))
            .cloned();
        o.insert(
            "source".into(),
            source.map(Into::into).unwrap_or(serde_json::Value::Null),
        );
        o.insert("partition".into(), self.origin.partition.into());
        o.insert(
            "partition_name".into(),
            partition_name
                .map(Into::into)
                .unwrap_or(serde_json::Value::Null),
        );
        o.insert("offset".into(), self.origin.offset.into());
        o.insert("step".into(), self.step.clone().into());
        o.insert("error_class".into(), self.error_class.as_str().into());
        o.insert("error".into(), self.error.clone().into());
        let (error_type, print) = self.cause();
        o.insert("error_type".into(), error_type.into());
        o.insert("fingerprint".into(), print.into());
        o.insert(
            "detail".into(),
            self.detail
                .clone()
                .map(Into::into)
                .unwrap_or(serde_json::Value::Null),
        );
        o.insert("attempts".into(), self.attempts.into());
        o.insert(
            "tier".into(),
            self.tier.map(Into::into).unwrap_or(serde_json::Value::Null),
        );
        o.insert(
            "udf_version".into(),
            self.udf_version
                .clone()
                .map(Into::into)
                .unwrap_or(serde_json::Value::Null),
        );
        o.insert(
            "correlation_id".into(),
            format!(
                "s{}-p{}-o{}",
                self.origin.source, self.origin.partition, self.origin.offset
            )
            .into(),
        );
        if let Some(key) = &self.key {
            let mut json = Vec::new();
            key.write_json(&mut json);
            if let Ok(key) = serde_json::from_slice::<serde_json::Value>(&json) {
                o.insert("key".into(), key);
            }
        }
        o.insert(
            "event_time".into(),
            self.event_time
                .map(Into::into)
                .unwrap_or(serde_json::Value::Null),
        );
        let time = |ms: i64| {
            let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            serde_json::Value::from(humantime::format_rfc3339_millis(at).to_string())
        };
        o.insert(
            "first_failed_at".into(),
            time(self.first_failed_at_ms.unwrap_or(self.failed_at_ms)),
        );
        o.insert("failed_at".into(), time(self.failed_at_ms));
        match std::str::from_utf8(&self.raw) {
            Ok(text) => o.insert("raw".into(), text.into()),
            Err(_) => o.insert("raw_base64".into(), base64(&self.raw).into()),
        };
        if let Some(size) = self.raw_size {
            o.insert("raw_size".into(), size.into());
        }
        serde_json::Value::Object(o)
    }
}

/// Names of sources and their partitions, for envelopes.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub sources: Vec<String>,
    /// Per source, its partitions' names.
    pub partitions: Vec<Vec<String>>,
}

/// A failure to write the DLQ file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the dead-letter file `{path}`: {source}; check that its folder is writable")]
pub struct DlqError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Appends envelopes to a JSON-lines file.
pub struct DlqWriter {
    path: PathBuf,
    out: BufWriter<File>,
    count: u64,
}

impl DlqWriter {
    /// Creates the file (and its folders), replacing an earlier run's.
    pub fn open(path: &Path) -> Result<DlqWriter, DlqError> {
        let err = |source| DlqError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = File::create(path).map_err(err)?;
        Ok(DlqWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 << 10, file),
            count: 0,
        })
    }

    pub fn write(&mut self, dl: &DeadLetter, names: &Names) -> Result<(), DlqError> {
        let err = |source| DlqError {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, &dl.to_envelope(names)).map_err(|e| err(e.into()))?;
        self.out.write_all(b"\n").map_err(err)?;
        self.count += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), DlqError> {
        self.out.flush().map_err(|source| DlqError {
            path: self.path.clone(),
            source,
        })
    }

    /// Envelopes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The pending file of one epoch's dead letters: `.dlq.jsonl.pending-<epoch>` next to it.
pub fn pending_path(path: &Path, epoch: crate::checkpoint::CheckpointId) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dlq.jsonl".into());
    path.with_file_name(format!(".{name}.pending-{epoch:010}"))
}

/// Removes every pending epoch file of the DLQ at `path` (output no checkpoint covers).
pub fn discard_pending(path: &Path) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.pending-");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// The DLQ of a checkpointed run: each epoch's dead letters go to a pending file that the
/// checkpoint coordinator appends to the DLQ file once the checkpoint is complete, so the
/// DLQ holds every dead letter exactly once across crashes (like the file sinks' parts).
pub struct DlqEpochs {
    path: PathBuf,
    epoch: crate::checkpoint::CheckpointId,
    open: Option<(PathBuf, BufWriter<File>, u64)>,
    /// The DLQ file's length once every pre-committed epoch is appended.
    committed_len: u64,
}

impl DlqEpochs {
    /// Dead letters from now on belong to `first_epoch`; the DLQ file holds `committed_len`
    /// bytes of committed dead letters.
    pub fn open(
        path: &Path,
        first_epoch: crate::checkpoint::CheckpointId,
        committed_len: u64,
    ) -> Result<DlqEpochs, DlqError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| DlqError {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(DlqEpochs {
            path: path.to_path_buf(),
            epoch: first_epoch,
            open: None,
            committed_len,
        })
    }

    pub fn write(&mut self, dl: &DeadLetter, names: &Names) -> Result<(), DlqError> {
        if self.open.is_none() {
            let pending = pending_path(&self.path, self.epoch);
            let file = File::create(&pending).map_err(|source| DlqError {
                path: pending.clone(),
                source,
            })?;
            self.open = Some((pending, BufWriter::with_capacity(64 << 10, file), 0));
        }
        let Some((pending, out, bytes)) = self.open.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(&dl.to_envelope(names)).map_err(|e| DlqError {
            path: pending.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        out.write_all(&line).map_err(|source| DlqError {
            path: pending.clone(),
            source,
        })?;
        *bytes += line.len() as u64;
        Ok(())
    }

    /// Checkpoint `epoch`'s barrier came from every task: sync this epoch's dead letters and
    /// say where they go.
    pub fn pre_commit(
        &mut self,
        epoch: crate::checkpoint::CheckpointId,
    ) -> Result<Option<crate::checkpoint::manifest::SinkCommit>, DlqError> {
        let done = self.epoch;
        self.epoch = epoch + 1;
        let Some((pending, out, bytes)) = self.open.take() else {
            return Ok(None);
        };
        let fail = |source: std::io::Error| DlqError {
            path: pending.clone(),
            source,
        };
        let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        let offset = self.committed_len;
        self.committed_len += bytes;
        Ok(Some(crate::checkpoint::manifest::SinkCommit {
            sink: commit::DLQ_PARTICIPANT.into(),
            epoch: done,
            pending,
            committed: self.path.clone(),
            append: Some(crate::checkpoint::manifest::Append {
                offset,
                size: bytes,
            }),
            transaction: None,
            instance: 0,
        }))
    }
}

/// Wall-clock time in ms since the epoch (failure times in envelopes).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            sources: vec!["orders".into()],
            partitions: vec![vec!["in/a.jsonl".into()]],
        }
    }

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn envelope_holds_origin_error_and_raw_bytes() {
        let origin = Origin {
            source: 0,
            partition: 0,
            offset: 12,
            entry: 0,
        };
        let mut dl = DeadLetter::new(
            b"{oops".to_vec(),
            origin,
            "decode".into(),
            ErrorClass::Permanent,
            "bad json".into(),
        );
        dl.failed_at_ms = 0;
        let env = dl.to_envelope(&names());
        assert_eq!(
            env.to_string(),
            r#"{"envelope_version":1,"source":"orders","partition":0,"partition_name":"in/a.jsonl","offset":12,"step":"decode","error_class":"permanent","error":"bad json","error_type":"decode","fingerprint":"c98ef05d02fb5f94","detail":null,"attempts":1,"tier":null,"udf_version":null,"correlation_id":"s0-p0-o12","event_time":null,"first_failed_at":"1970-01-01T00:00:00.000Z","failed_at":"1970-01-01T00:00:00.000Z","raw":"{oops"}"#
        );
    }

    #[test]
    fn a_udf_step_s_envelope_says_which_tier_and_code_gave_up_and_when_it_first_failed() {
        let origin = Origin {
            source: 1,
            partition: 2,
            offset: 7,
            entry: 0,
        };
        let mut dl = DeadLetter::new(
            b"{}".to_vec(),
            origin,
            "steps[0] udf f".into(),
            ErrorClass::Transient,
            "down".into(),
        );
        dl.failed_at_ms = 2_000;
        dl.first_failed_at_ms = Some(1_000);
        dl.attempts = 4;
        dl.tier = Some("retry");
        dl.udf_version = Some("wasm:sha256:ab".into());
        let env = dl.to_envelope(&names());
        assert_eq!(env["tier"], "retry");
        assert_eq!(env["udf_version"], "wasm:sha256:ab");
        assert_eq!(env["correlation_id"], "s1-p2-o7");
        assert_eq!(env["first_failed_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(env["failed_at"], "1970-01-01T00:00:02.000Z");
    }

    #[test]
    fn large_raw_bytes_are_cut_at_a_character_and_their_size_kept() {
        let mut dl = DeadLetter::new(
            "é".repeat(100).into_bytes(),
            Origin::default(),
            "sink out".into(),
            ErrorClass::Permanent,
            "too large".into(),
        );
        dl.truncate_raw(51);
        assert_eq!(dl.raw.len(), 50, "not in the middle of a character");
        let env = dl.to_envelope(&names());
        assert_eq!(env["raw"], "é".repeat(25));
        assert_eq!(env["raw_size"], 200);
        let mut small = DeadLetter::new(
            b"{}".to_vec(),
            Origin::default(),
            "x".into(),
            ErrorClass::Permanent,
            "e".into(),
        );
        small.truncate_raw(KEPT_RAW_BYTES);
        assert!(small.to_envelope(&names()).get("raw_size").is_none());
    }

    #[test]
    fn non_utf8_bytes_are_base64_encoded() {
        let dl = DeadLetter::new(
            vec![0xff, 0x00],
            Origin::default(),
            "decode".into(),
            ErrorClass::Permanent,
            "x".into(),
        );
        let env = dl.to_envelope(&names());
        assert_eq!(env["raw_base64"], "/wA=");
        assert!(env.get("raw").is_none());
    }

    #[test]
    fn writer_writes_one_line_per_dead_letter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dlq.jsonl");
        let mut w = DlqWriter::open(&path).expect("open");
        let dl = DeadLetter::new(
            b"x".to_vec(),
            Origin::default(),
            "decode".into(),
            ErrorClass::Transient,
            "e".into(),
        );
        w.write(&dl, &names()).expect("write");
        w.write(&dl, &names()).expect("write");
        w.flush().expect("flush");
        assert_eq!(w.count(), 2);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains(r#""error_class":"transient""#));
    }
}
