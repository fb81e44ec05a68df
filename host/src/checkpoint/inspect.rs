//! What the CLI shows about checkpoints (`headwater checkpoints list|show`) and how it turns
//! one into a savepoint (`headwater savepoint`).

use std::fmt::Write as _;

use super::manifest::{Manifest, ManifestKind};
use super::storage::{CheckpointStorage, SAVEPOINT_MANIFEST};
use super::{CheckpointError, CheckpointId};
use crate::metrics::bytes;
use crate::time::format_time;

fn when(ms: i64) -> String {
    format_time(ms)
}

/// One line per complete checkpoint, oldest first.
pub fn list(storage: &CheckpointStorage) -> Result<String, CheckpointError> {
    let ids = storage.list_checkpoints()?;
    let mut s = String::new();
    if ids.is_empty() {
        let _ = writeln!(s, "no checkpoints in {}", storage.url());
        return Ok(s);
    }
    let _ = writeln!(
        s,
        "{:>6}  {:<24}  {:>9}  {:>10}  {:>10}  {:>5}  status",
        "id", "started (UTC)", "duration", "state", "uploaded", "files"
    );
    for id in ids {
        match storage.read_manifest(id) {
            Ok(m) => {
                let _ = writeln!(
                    s,
                    "{:>6}  {:<24}  {:>7}ms  {:>10}  {:>10}  {:>5}  {}",
                    m.id,
                    when(m.started_ms),
                    m.duration_ms,
                    bytes(m.state_bytes),
                    bytes(m.uploaded_bytes),
                    m.file_count(),
                    if m.finished {
                        "complete, input finished"
                    } else {
                        "complete"
                    }
                );
            }
            Err(e) => {
                let _ = writeln!(s, "{id:>6}  unreadable: {e}");
            }
        }
    }
    let _ = write!(s, "in {}", storage.url());
    Ok(s)
}

/// Everything one manifest says.
pub fn show(m: &Manifest, location: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{} {} of pipeline `{}`", kind(m), m.id, m.pipeline);
    let _ = writeln!(s, "  manifest      {location}");
    let _ = writeln!(s, "  started       {}", when(m.started_ms));
    let _ = writeln!(s, "  duration      {} ms", m.duration_ms);
    let _ = writeln!(
        s,
        "  parallelism   {} (max_parallelism {})",
        m.parallelism, m.max_parallelism
    );
    let _ = writeln!(
        s,
        "  state         {} in {} file(s), {} uploaded for this checkpoint",
        bytes(m.state_bytes),
        m.file_count(),
        bytes(m.uploaded_bytes)
    );
    let _ = writeln!(
        s,
        "  input         {}",
        if m.finished {
            "all read"
        } else {
            "in progress"
        }
    );
    let _ = writeln!(s, "  sources:");
    for p in &m.sources {
        let _ = writeln!(
            s,
            "    {} {}: {} record(s), byte/offset {}{}{}",
            p.source,
            p.partition,
            p.position.records,
            p.position.offset,
            p.max_event_time
                .map(|t| format!(", newest event {}", when(t)))
                .unwrap_or_default(),
            if p.ended { ", ended" } else { "" }
        );
    }
    let _ = writeln!(s, "  tasks:");
    for t in &m.tasks {
        let size: u64 = t.files.iter().map(|f| f.size).sum();
        let _ = writeln!(
            s,
            "    stage {} task {}: key groups {}..={}, watermark {}, {} file(s), {}{}",
            t.stage,
            t.task,
            t.key_groups.0,
            t.key_groups.1,
            when(t.watermark),
            t.files.len(),
            bytes(size),
            t.channel
                .as_ref()
                .map(|c| format!(", {} of records in flight", bytes(c.size)))
                .unwrap_or_default()
        );
    }
    if !m.sink_channels.is_empty() {
        let _ = writeln!(
            s,
            "  results in flight to sinks (written first on restore):"
        );
        for c in &m.sink_channels {
            let _ = writeln!(s, "    {}[{}]: {}", c.sink, c.instance, bytes(c.file.size));
        }
    }
    if !m.commits.is_empty() {
        let _ = writeln!(s, "  committed output:");
        for c in &m.commits {
            let _ = match &c.transaction {
                // Kafka: one line per sink instance and its transaction.
                Some(id) => writeln!(
                    s,
                    "    {}[{}]: {} (epoch {}, transaction `{id}`)",
                    c.sink,
                    c.instance,
                    c.committed.display(),
                    c.epoch
                ),
                None => writeln!(s, "    {}: {}", c.sink, c.committed.display()),
            };
        }
    }
    s
}

fn kind(m: &Manifest) -> &'static str {
    match m.kind {
        ManifestKind::Checkpoint => "checkpoint",
        ManifestKind::Savepoint => "savepoint",
    }
}

/// What `savepoint` wrote.
#[derive(Debug)]
pub struct SavepointInfo {
    pub from: CheckpointId,
    pub location: String,
    pub files: usize,
    pub bytes: u64,
}

/// Copies checkpoint `id` (default: the newest) and every file it needs into `to`, a folder
/// or URL of its own: `manifest.json` plus `shared/`. The result needs nothing else to be
/// restored (`headwater run --from TO`), on this machine or another.
pub fn savepoint(
    storage: &CheckpointStorage,
    id: Option<CheckpointId>,
    to: &str,
    participants: &[std::sync::Arc<dyn super::participant::CommitParticipant>],
) -> Result<SavepointInfo, CheckpointError> {
    let id = match id {
        Some(id) => id,
        None => *storage.list_checkpoints()?.last().ok_or_else(|| {
            CheckpointError::Incompatible(format!(
                "no checkpoints in {} yet: run the pipeline first (it checkpoints on its interval and when it finishes or is stopped)",
                storage.url()
            ))
        })?,
    };
    let m = storage.read_manifest(id)?;
    // The checkpoint's output is committed before the savepoint stands on its own.
    super::participant::redo_commits(&m, participants)?;
    copy_to_savepoint(storage, m, to)
}

/// Copies a complete checkpoint whose output is committed, and every file it needs, into `to`
/// as a savepoint.
pub fn copy_to_savepoint(
    storage: &CheckpointStorage,
    mut m: Manifest,
    to: &str,
) -> Result<SavepointInfo, CheckpointError> {
    let id = m.id;
    m.commits.clear();
    m.kind = ManifestKind::Savepoint;
    let target = CheckpointStorage::open(to)?;
    if target.get(SAVEPOINT_MANIFEST).is_ok() {
        return Err(CheckpointError::Incompatible(format!(
            "{} already holds a savepoint; pick another folder",
            target.display(SAVEPOINT_MANIFEST)
        )));
    }
    let mut copied = 0u64;
    let mut seen = std::collections::HashSet::new();
    for f in m.files() {
        if seen.insert(f.key.clone()) {
            copied += target.copy_from(storage, &f.key)?;
        }
    }
    // The Wasm modules it runs, so it restores elsewhere with the same code.
    copied += target.copy_udf_modules(storage, &m)?;
    target.write_manifest_at(SAVEPOINT_MANIFEST, &m)?;
    Ok(SavepointInfo {
        from: id,
        location: target.display(SAVEPOINT_MANIFEST),
        files: seen.len(),
        bytes: copied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::manifest::{SinkChannel, SinkCommit, StateFile, FORMAT};

    #[test]
    fn show_names_each_kafka_sink_instance_its_transaction_and_results_in_flight() {
        let commit = |instance: usize| SinkCommit {
            sink: "out".into(),
            epoch: 7,
            pending: "state/kafka-sinks/out/epoch-7.jsonl".into(),
            committed: "kafka:results".into(),
            append: None,
            transaction: Some(format!("headwater-p-out-{instance}-1")),
            instance,
        };
        let m = Manifest {
            format: FORMAT,
            id: 7,
            kind: ManifestKind::Checkpoint,
            pipeline: "p".into(),
            started_ms: 0,
            duration_ms: 3,
            parallelism: 2,
            max_parallelism: 128,
            finished: false,
            operators: vec![],
            sources: vec![],
            tasks: vec![],
            commits: vec![commit(0), commit(1)],
            state_bytes: 0,
            uploaded_bytes: 0,
            dlq_len: None,
            sink_channels: vec![SinkChannel {
                sink: "out".into(),
                instance: 1,
                file: StateFile {
                    name: "channel.jsonl".into(),
                    key: "shared/abc-2048".into(),
                    size: 2048,
                },
            }],
            udf_modules: Default::default(),
        };
        let text = show(&m, "file:///x/manifests/0000000007.json");
        assert!(
            text.contains(
                "results in flight to sinks (written first on restore):\n    out[1]: 2.0 KB"
            ),
            "{text}"
        );
        assert!(
            text.contains("out[0]: kafka:results (epoch 7, transaction `headwater-p-out-0-1`)"),
            "{text}"
        );
        assert!(text.contains("out[1]: kafka:results"), "{text}");
    }
}
