//! The exactly-once sink instance: an epoch's records into a pool producer's transaction and a
//! local records file, a marker on the commit topic at the barrier, recovery of the restored
//! checkpoint's commits when it opens (see the `sink` module for the whole protocol).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::producer::*;
use super::records::{read_records, write_record_line, KeyedPayload};
use super::sink::{instance_prefix, Checkpointed};
use super::transactions::*;
use crate::checkpoint::manifest::SinkCommit;
use crate::checkpoint::CheckpointId;
use crate::config::spec::KafkaSinkSpec;
use crate::sinks::limit::{message_key, MessageLimit};
use crate::sinks::{Sink, SinkError};
use crate::value::{Str, Value};

/// Syncs records files to disk in the background while an epoch is written, so the sync at
/// the barrier has little left to do (it would otherwise stall the sink for the whole epoch's
/// bytes).
pub(super) struct SyncAhead {
    pub(super) tx: Option<std::sync::mpsc::Sender<File>>,
    pub(super) handle: Option<std::thread::JoinHandle<()>>,
}

impl SyncAhead {
    pub(super) fn start() -> SyncAhead {
        let (tx, rx) = std::sync::mpsc::channel::<File>();
        let handle = std::thread::Builder::new()
            .name("kafka-sync-ahead".into())
            .spawn(move || {
                for file in rx {
                    // Best effort: the barrier's own sync reports errors.
                    let _ = file.sync_data();
                }
            })
            .ok();
        SyncAhead {
            tx: Some(tx),
            handle,
        }
    }

    /// Asks for `file`'s written pages to go to disk now.
    pub(super) fn request(&self, file: &File) {
        if let (Some(tx), Ok(clone)) = (&self.tx, file.try_clone()) {
            let _ = tx.send(clone);
        }
    }
}

impl Drop for SyncAhead {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Bytes of records written between two background syncs.
pub(super) const SYNC_AHEAD_BYTES: u64 = 2 << 20;

/// The marker a transaction carries: this sink's epoch `epoch` is in it.
pub(super) fn marker(pipeline: &str, sink: &str, epoch: CheckpointId) -> Vec<u8> {
    serde_json::json!({ "pipeline": pipeline, "sink": sink, "epoch": epoch })
        .to_string()
        .into_bytes()
}

pub struct ExactlyOnce {
    pub(super) name: String,
    pub(super) pipeline: String,
    pub(super) topic: String,
    pub(super) commit_topic: String,
    /// Which instance of the sink this is (one per task).
    pub(super) instance: usize,
    /// The marker key: the instance's transactional id prefix (unique per pipeline, sink and
    /// instance).
    pub(super) marker_key: String,
    pub(super) key: Option<Vec<Str>>,
    pub(super) pool: Arc<TxnPool>,
    /// The producer taking the current epoch's records.
    pub(super) current: Option<usize>,
    pub(super) epoch: CheckpointId,
    pub(super) records: Option<BufWriter<File>>,
    /// Bytes written to the records file since the last background sync request.
    pub(super) unsynced: u64,
    pub(super) sync_ahead: SyncAhead,
    pub(super) buf: Vec<u8>,
    pub(super) limit: Option<Arc<MessageLimit>>,
}

impl ExactlyOnce {
    /// Starts instance `instance`'s producers (which fences older producers with their ids);
    /// [`ExactlyOnce::recover`] comes next.
    pub(super) fn start(
        name: &str,
        spec: &KafkaSinkSpec,
        pipeline: &str,
        prefix: &str,
        instance: usize,
        work_dir: &Path,
        checkpointed: &Checkpointed<'_>,
    ) -> Result<ExactlyOnce, SinkError> {
        let interval = checkpointed.interval;
        let prefix = instance_prefix(prefix, instance);
        let work_dir = work_dir.join(instance.to_string());
        let work_dir = work_dir.as_path();
        std::fs::create_dir_all(work_dir).map_err(|source| SinkError::Create {
            sink: name.to_string(),
            path: work_dir.to_path_buf(),
            source,
        })?;
        // A transaction stays open for an interval plus the checkpoint's duration, and longer
        // for each declined checkpoint (each may spend up to 2 minutes retrying its storage).
        let declines = checkpointed.tolerable_failures.min(6);
        let txn_timeout = (interval * 6 + (interval + Duration::from_secs(120)) * declines)
            .clamp(Duration::from_secs(60), Duration::from_secs(900));
        let pool = pool_size(checkpointed.tolerable_failures);
        // The producers start in parallel: each `init_transactions` is a round trip to the
        // transaction coordinator (and waits for a fenced instance's transaction to abort).
        let started = Instant::now();
        let slots: Vec<Result<Slot, SinkError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..pool)
                .map(|i| {
                    let transactional_id = format!("{prefix}-{i}");
                    scope.spawn(move || start_producer(name, spec, transactional_id, txn_timeout))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(kafka_err(
                            name,
                            "starting a producer",
                            "the thread panicked",
                        ))
                    })
                })
                .collect()
        });
        let slots = slots
            .into_iter()
            .collect::<Result<Vec<Slot>, SinkError>>()?;
        let pool = Arc::new(TxnPool {
            sink: name.to_string(),
            slots,
            states: Mutex::new(vec![SlotState::Free; pool]),
            freed: Condvar::new(),
            work_dir: work_dir.to_path_buf(),
        });
        let sink = ExactlyOnce {
            name: name.to_string(),
            pipeline: pipeline.to_string(),
            topic: spec.topic.clone(),
            commit_topic: spec.commit_topic.clone(),
            marker_key: prefix,
            instance,
            key: spec.key.clone(),
            pool,
            current: None,
            epoch: checkpointed.first_epoch,
            records: None,
            unsynced: 0,
            sync_ahead: SyncAhead::start(),
            buf: Vec::with_capacity(256),
            limit: None,
        };
        tracing::debug!(
            sink = name,
            instance,
            ms = started.elapsed().as_millis() as u64,
            "kafka: sink instance's producers ready"
        );
        Ok(sink)
    }

    /// Finishes the commits the restored checkpoint made but the crash interrupted; on a fresh
    /// start, records that no epoch is committed yet.
    pub(super) fn recover(
        &mut self,
        restored: Option<&[SinkCommit]>,
        markers: &std::collections::HashMap<String, CheckpointId>,
    ) -> Result<(), SinkError> {
        let mut mine: Vec<&SinkCommit> = restored
            .unwrap_or_default()
            .iter()
            .filter(|c| {
                c.sink == self.name && c.instance == self.instance && c.transaction.is_some()
            })
            .collect();
        mine.sort_by_key(|c| c.epoch);
        if restored.is_none() {
            // A fresh lineage: epoch numbers start over, so older markers must not count.
            self.produce_epoch(0, &[])?;
        } else if !mine.is_empty() {
            let last = markers.get(&self.marker_key).copied();
            for c in mine {
                if last.is_some_and(|l| l >= c.epoch) {
                    continue;
                }
                let path = records_path(&self.pool.work_dir, c.epoch);
                let lines = read_records(&path).map_err(|e| SinkError::Kafka {
                    sink: self.name.clone(),
                    message: format!(
                        "cannot finish the commit of checkpoint {}: its records file {} is unreadable ({e}); start over with `headwater run --fresh`",
                        c.epoch,
                        path.display()
                    ),
                })?;
                tracing::info!(
                    sink = %self.name,
                    instance = self.instance,
                    epoch = c.epoch,
                    records = lines.len(),
                    "kafka: redoing the interrupted commit of checkpoint {}",
                    c.epoch
                );
                self.produce_epoch(c.epoch, &lines)?;
            }
        }
        // Every records file is now committed or belonged to an aborted epoch.
        if let Ok(entries) = std::fs::read_dir(&self.pool.work_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Produces a whole epoch with its marker in one transaction and commits it.
    pub(super) fn produce_epoch(
        &mut self,
        epoch: CheckpointId,
        lines: &[KeyedPayload],
    ) -> Result<(), SinkError> {
        let slot = &self.pool.slots[0];
        let fail = |what: &str, e: KafkaError| kafka_err(&self.name, what, e);
        slot.producer
            .begin_transaction()
            .map_err(|e| fail("cannot begin a transaction", e))?;
        for (key, payload) in lines {
            send(
                &slot.producer,
                &self.name,
                &self.topic,
                key.as_deref(),
                payload,
            )?;
        }
        send(
            &slot.producer,
            &self.name,
            &self.commit_topic,
            Some(self.marker_key.as_bytes()),
            &marker(&self.pipeline, &self.name, epoch),
        )?;
        slot.producer
            .commit_transaction(REQUEST_TIMEOUT)
            .map_err(|e| fail("cannot commit a transaction", e))?;
        slot.producer.context().check(&self.name)
    }

    pub(super) fn begin_epoch(&mut self) -> Result<usize, SinkError> {
        if let Some(slot) = self.current {
            return Ok(slot);
        }
        let slot = self.pool.take_free(self.epoch)?;
        self.pool.slots[slot]
            .producer
            .begin_transaction()
            .map_err(|e| kafka_err(&self.name, "cannot begin a transaction", e))?;
        let path = records_path(&self.pool.work_dir, self.epoch);
        let file = File::create(&path).map_err(|source| SinkError::Create {
            sink: self.name.clone(),
            path: path.clone(),
            source,
        })?;
        self.records = Some(BufWriter::with_capacity(1 << 20, file));
        self.unsynced = 0;
        self.current = Some(slot);
        Ok(slot)
    }

    pub(super) fn records_err(&self, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            path: records_path(&self.pool.work_dir, self.epoch),
            source,
        }
    }
}

/// The newest committed marker epoch of every instance of the sink (marker keys starting with
/// `<prefix>-`), read from the commit topic.
pub(super) fn committed_markers(
    spec: &KafkaSinkSpec,
    name: &str,
    prefix: &str,
) -> Result<std::collections::HashMap<String, CheckpointId>, SinkError> {
    let mut c = base_config(spec);
    c.set("group.id", format!("{prefix}-recovery"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The end of the topic is reached after one empty fetch: do not let the broker hold
        // it for the default half second.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed");
    let consumer: super::Reader = with_properties(c, spec)
        .create_with_context(super::QuietEof)
        .map_err(|e| kafka_err(name, "cannot create a Kafka consumer", e))?;
    let fail = |e: KafkaError| kafka_err(name, "reading the commit topic failed", e);
    let topic = &spec.commit_topic;
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(fail)?;
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                .map_err(fail)?;
            if high > 0 {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .map_err(fail)?;
                open += 1;
            }
        }
    }
    let mut last = std::collections::HashMap::new();
    if open == 0 {
        return Ok(last);
    }
    consumer.assign(&tpl).map_err(fail)?;
    let head = format!("{prefix}-");
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while open > 0 {
        if Instant::now() > deadline {
            return Err(kafka_err(
                name,
                "reading the commit topic",
                "timed out before its end",
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let Some(key) = m
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .filter(|k| k.starts_with(&head))
                else {
                    continue;
                };
                let epoch = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    .and_then(|v| v.get("epoch").and_then(|e| e.as_u64()));
                if let Some(e) = epoch {
                    last.insert(key.to_string(), e);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => tracing::warn!(sink = name, "kafka: {e}"),
        }
    }
    Ok(last)
}

impl Sink for ExactlyOnce {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let slot = self.begin_epoch()?;
        for r in records {
            self.buf.clear();
            r.write_json(&mut self.buf);
            let key = self.key.as_deref().and_then(|f| message_key(r, f));
            send(
                &self.pool.slots[slot].producer,
                &self.name,
                &self.topic,
                key.as_deref(),
                &self.buf,
            )?;
            if let Some(out) = self.records.as_mut() {
                if let Err(e) = write_record_line(out, key.as_deref(), &self.buf) {
                    return Err(self.records_err(e));
                }
                self.unsynced += self.buf.len() as u64 + 8;
            }
        }
        if self.unsynced >= SYNC_AHEAD_BYTES {
            if let Some(out) = self.records.as_mut() {
                if let Err(e) = out.flush() {
                    return Err(self.records_err(e));
                }
                self.sync_ahead.request(out.get_ref());
            }
            self.unsynced = 0;
        }
        // A fenced producer (a newer instance took over) fails fast.
        let producer = &self.pool.slots[slot].producer;
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(SinkError::Kafka {
                sink: self.name.clone(),
                message: format!("the producer failed for good ({code:?}: {reason}); another instance with transactional id `{}` may have fenced this one", self.pool.slots[slot].transactional_id),
            });
        }
        producer.context().check(&self.name)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(slot) = self.current {
            wait_delivered(&self.pool.slots[slot].producer, &self.name)?;
        }
        Ok(())
    }

    fn message_limit(&self) -> Option<Arc<MessageLimit>> {
        self.limit.clone()
    }

    fn pre_commit(&mut self, epoch: CheckpointId) -> Result<Option<SinkCommit>, SinkError> {
        let Some(slot) = self.current.take() else {
            self.epoch = epoch + 1;
            return Ok(None);
        };
        let producer = &self.pool.slots[slot].producer;
        send(
            producer,
            &self.name,
            &self.commit_topic,
            Some(self.marker_key.as_bytes()),
            &marker(&self.pipeline, &self.name, epoch),
        )?;
        wait_delivered(producer, &self.name)?;
        producer.context().check(&self.name)?;
        if let Some(mut out) = self.records.take() {
            let synced = out.flush().and_then(|()| out.get_ref().sync_all());
            if let Err(e) = synced {
                return Err(self.records_err(e));
            }
        }
        if epoch != self.epoch {
            // The records were written under the epoch the sink expected; keep the file name
            // in step with the checkpoint that closes them.
            let from = records_path(&self.pool.work_dir, self.epoch);
            let to = records_path(&self.pool.work_dir, epoch);
            std::fs::rename(&from, &to).map_err(|e| self.records_err(e))?;
        }
        self.pool.set(slot, SlotState::Prepared(epoch));
        self.epoch = epoch + 1;
        Ok(Some(SinkCommit {
            sink: self.name.clone(),
            epoch,
            pending: records_path(&self.pool.work_dir, epoch),
            committed: PathBuf::from(format!("kafka:{}", self.topic)),
            append: None,
            transaction: Some(self.pool.slots[slot].transactional_id.clone()),
            instance: self.instance,
        }))
    }
}
