//! The Kafka sink: exactly once through transactions committed with the checkpoints, or at
//! least once through the idempotent producer.
//!
//! The sink runs one instance per task; instance `i` has its own producers, marker key and
//! records folder, and everything below holds per instance.
//!
//! Exactly once, step by step:
//! - A small pool of transactional producers (`<transactional_id>-<i>-0..n`: three, plus one per
//!   tolerated checkpoint failure beyond the first) is created when the run starts;
//!   `init_transactions` on each fences any older instance using the same ids (a crashed run,
//!   or a second host started with the same pipeline) and aborts what it left open.
//! - An epoch's records go to one producer's open transaction, and to a local records file.
//! - At the barrier ([`Sink::pre_commit`]) the transaction gets a marker (`epoch n of this sink`)
//!   on the compacted commit topic, everything is flushed (acknowledged by the brokers, still
//!   invisible to read_committed consumers) and the records file is synced. The next epoch uses
//!   another producer of the pool.
//! - When the checkpoint's manifest exists, the coordinator commits that transaction
//!   ([`TransactionCommitter::commit`]); commits happen in epoch order.
//! - Recovery: librdkafka cannot resume another process's prepared transaction, so a
//!   transaction the crash left prepared is aborted by `init_transactions` and redone: the
//!   last committed marker says which epochs made it; every epoch the restored manifest lists as
//!   committed but the marker does not is produced again from its records file, with its marker,
//!   in one new transaction. Each epoch thus becomes visible exactly once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::kafka_limits::MessageLimit;
use super::kafka_records::{read_records, write_record_line, KeyedPayload};
use super::{Sink, SinkError};
use crate::checkpoint::manifest::SinkCommit;
use crate::checkpoint::CheckpointId;
use crate::config::spec::{Delivery, KafkaSinkSpec};
use crate::value::{Str, Value};

/// Producers per exactly-once sink instance: one epoch being written, one waiting for its
/// checkpoint, and one spare for each checkpoint that may be abandoned or declined in a row
/// (whose data the next checkpoint commits): at least one, at most six.
fn pool_size(tolerable_failures: u32) -> usize {
    (tolerable_failures as usize).clamp(1, 6) + 2
}
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the sink waits for a free producer before giving up.
const SLOT_WAIT: Duration = Duration::from_secs(300);

/// Commits pre-committed epochs of a transactional sink; the checkpoint coordinator calls it
/// once the checkpoint's manifest exists.
pub trait TransactionCommitter: Send + Sync {
    fn commit(&self, epoch: CheckpointId) -> Result<(), SinkError>;
}

fn kafka_err(sink: &str, what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Kafka {
        sink: sink.to_string(),
        message: format!("{what}: {e}"),
    }
}

/// Records delivery failures (the producer's background thread reports them).
#[derive(Default)]
pub struct DeliveryReport {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl DeliveryReport {
    fn check(&self, sink: &str) -> Result<(), SinkError> {
        let n = self.failed.load(Ordering::Relaxed);
        if n == 0 {
            return Ok(());
        }
        let first = self
            .first
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        Err(SinkError::Kafka {
            sink: sink.to_string(),
            message: format!("{n} message(s) could not be delivered; the first: {first}"),
        })
    }
}

type Producer_ = ThreadedProducer<DeliveryReport>;

fn base_config(spec: &KafkaSinkSpec) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &spec.brokers);
    c
}

fn producer_config(spec: &KafkaSinkSpec) -> ClientConfig {
    let mut c = base_config(spec);
    c.set("linger.ms", "5").set("compression.type", "lz4");
    c
}

fn with_properties(mut c: ClientConfig, spec: &KafkaSinkSpec) -> ClientConfig {
    for (k, v) in &spec.properties {
        c.set(k, v);
    }
    c
}

/// The key of a record: the field's string, or its JSON text.
pub(super) fn key_of(value: &Value, field: &[Str]) -> Option<Vec<u8>> {
    match value.get_path(field)? {
        Value::Null => None,
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        other => {
            let mut b = Vec::new();
            other.write_json(&mut b);
            Some(b)
        }
    }
}

/// An error, with the producer's fatal error spelled out (e.g. fenced by a newer instance).
fn describe(producer: &Producer_, e: KafkaError) -> String {
    match producer.client().fatal_error() {
        Some((code, reason)) => format!("{e} ({code:?}: {reason})"),
        None => e.to_string(),
    }
}

/// Waits until every message sent so far is acknowledged (or has failed: see
/// [`DeliveryReport::check`]). rust-rdkafka's `flush` on a threaded producer sleeps in 100 ms
/// polls while the background thread takes the delivery reports; watching the queue length
/// sees them at once (a flush per checkpoint would otherwise stall the sink 100 ms).
fn wait_delivered(producer: &Producer_, sink: &str) -> Result<(), SinkError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    while producer.in_flight_count() > 0 {
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(kafka_err(
                sink,
                "flushing failed",
                format!("{code:?}: {reason}"),
            ));
        }
        if Instant::now() > deadline {
            return Err(kafka_err(
                sink,
                "flushing failed",
                format!(
                    "{} message(s) still unacknowledged after {} s; are the brokers reachable?",
                    producer.in_flight_count(),
                    REQUEST_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    Ok(())
}

/// Sends one message, waiting while the producer's queue is full.
fn send(
    producer: &Producer_,
    sink: &str,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), SinkError> {
    let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    let started = Instant::now();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if started.elapsed() > REQUEST_TIMEOUT {
                    return Err(kafka_err(
                        sink,
                        "the producer queue stayed full",
                        "are the brokers reachable?",
                    ));
                }
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(kafka_err(sink, "sending failed", describe(producer, e))),
        }
    }
}

/// Creates `topic` if it does not exist (the output topic with the broker's defaults, the
/// commit topic compacted with one partition).
fn ensure_topic(
    spec: &KafkaSinkSpec,
    sink: &str,
    topic: &str,
    compacted: bool,
) -> Result<(), SinkError> {
    let admin: AdminClient<DefaultClientContext> = with_properties(base_config(spec), spec)
        .create()
        .map_err(|e| kafka_err(sink, "cannot create a Kafka admin client", e))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| {
            kafka_err(
                sink,
                &format!("cannot reach the brokers {}", spec.brokers),
                e,
            )
        })?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let brokers = metadata.brokers().len().clamp(1, 3) as i32;
    let mut new = if compacted {
        NewTopic::new(topic, 1, TopicReplication::Fixed(brokers))
            .set("cleanup.policy", "compact")
            .set("segment.ms", "3600000")
    } else {
        NewTopic::new(topic, -1, TopicReplication::Fixed(-1))
    };
    if compacted && brokers > 1 {
        new = new.set("min.insync.replicas", "2");
    }
    let results = futures::executor::block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
    ))
    .map_err(|e| kafka_err(sink, &format!("cannot create topic `{topic}`"), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(kafka_err(sink, &format!("cannot create topic `{t}`"), code))
            }
        }
    }
    Ok(())
}

/// A checkpointed run's part in opening a Kafka sink.
pub struct Checkpointed<'a> {
    /// The epoch the first records belong to.
    pub first_epoch: CheckpointId,
    /// The restored checkpoint's commits (every sink's); None on a fresh start.
    pub restored: Option<&'a [SinkCommit]>,
    /// The restored checkpoint's parallelism (its sinks had that many instances).
    pub restored_parallelism: Option<usize>,
    pub interval: Duration,
    /// `checkpoint.tolerable_failures`: sizes the producer pool and the transaction timeout.
    pub tolerable_failures: u32,
}

/// Opens the `instances` instances of a Kafka sink (one per task), exactly once when
/// `checkpointed` is given and `delivery` asks for it, else at least once.
///
/// Exactly once, instance `i` uses the transactional ids `<prefix>-<i>-0..2` and its records
/// files live in `work_dir/<i>`. Instances an earlier run had beyond `instances` (it ran with a
/// higher parallelism) are retired: their ids are fenced (which aborts what they left open,
/// so read_committed consumers are not held up) and their interrupted commits redone.
pub fn open(
    name: &str,
    spec: &KafkaSinkSpec,
    pipeline: &str,
    work_dir: &Path,
    instances: usize,
    checkpointed: Option<Checkpointed<'_>>,
) -> Result<Vec<super::OpenedSink>, SinkError> {
    ensure_topic(spec, name, &spec.topic, false)?;
    // Larger records are dead-lettered before they reach the sink; batches fit the topic too.
    let limit = MessageLimit::resolve(name, spec);
    let fitted = limit.fit_batches(spec);
    let spec = &fitted;
    let instances = instances.max(1);
    match (spec.delivery, checkpointed) {
        (Delivery::ExactlyOnce, Some(c)) => {
            let prefix = spec
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("headwater-{pipeline}-{name}"));
            let started = Instant::now();
            ensure_topic(spec, name, &spec.commit_topic, true)?;
            let start_one =
                |i: usize| ExactlyOnce::start(name, spec, pipeline, &prefix, i, work_dir, &c);
            // Every instance's producers start first, in parallel (each a few
            // transaction-coordinator round trips). Retired instances (those an earlier run had
            // beyond `instances`) start too, to finish their commits.
            let known: Vec<usize> = (0..instances)
                .chain(retired_instances(&prefix, instances, None, &c))
                .collect();
            let mut opened = in_parallel(name, known.clone(), &start_one)?;
            // Only then is the commit topic read: `init_transactions` returns once a
            // transaction the crashed run had asked to commit is complete, so its marker is
            // visible now. Read earlier, it could be missed and the epoch redone: a duplicate.
            let markers = committed_markers(spec, name, &prefix)?;
            let markers_read = started.elapsed();
            // Instances only the commit topic knows (an earlier lineage, started over with
            // `--fresh`, had more): fenced so that nothing they left open holds readers up.
            let more: Vec<usize> = retired_instances(&prefix, instances, Some(&markers), &c)
                .into_iter()
                .filter(|i| !known.contains(i))
                .collect();
            opened.extend(in_parallel(name, more, &start_one)?);
            // Then each finishes what the crash interrupted, in parallel.
            std::thread::scope(|scope| {
                let handles: Vec<_> = opened
                    .iter_mut()
                    .map(|sink| {
                        let markers = &markers;
                        scope.spawn(move || sink.recover(c.restored, markers))
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(kafka_err(name, "recovering", "the thread panicked"))
                    })
                })
            })?;
            let retired = opened.split_off(instances);
            tracing::debug!(
                sink = name,
                instances,
                markers_read_at_ms = markers_read.as_millis() as u64,
                ready_ms = started.elapsed().as_millis() as u64,
                "kafka: exactly-once sink ready"
            );
            // Their producers close in parallel too.
            std::thread::scope(|scope| {
                for sink in retired {
                    tracing::info!(
                        sink = name,
                        instance = sink.instance,
                        "kafka: retired a sink instance of an earlier run with a higher parallelism"
                    );
                    scope.spawn(move || drop(sink));
                }
            });
            Ok(opened
                .drain(..)
                .map(|mut sink| {
                    sink.limit = Some(limit.clone());
                    let committer: Arc<dyn TransactionCommitter> = sink.pool.clone();
                    (Box::new(sink) as Box<dyn Sink>, Some(committer))
                })
                .collect())
        }
        (delivery, _) => {
            if delivery == Delivery::ExactlyOnce {
                tracing::warn!(
                    sink = name,
                    "checkpoints are off: the Kafka sink is at-least-once"
                );
            }
            (0..instances)
                .map(|_| {
                    let mut sink = AtLeastOnce::open(name, spec)?;
                    sink.limit = Some(limit.clone());
                    Ok((Box::new(sink) as Box<dyn Sink>, None))
                })
                .collect()
        }
    }
}

/// Runs `f` for every item on its own thread; the results in order, or the first error.
fn in_parallel<T: Send>(
    name: &str,
    items: Vec<usize>,
    f: &(dyn Fn(usize) -> Result<T, SinkError> + Sync),
) -> Result<Vec<T>, SinkError> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|i| scope.spawn(move || f(i)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(kafka_err(name, "starting", "the thread panicked")))
            })
            .collect()
    })
}

/// The marker key of instance `instance`.
fn instance_prefix(prefix: &str, instance: usize) -> String {
    format!("{prefix}-{instance}")
}

/// Instances at or above `instances` that an earlier run used: from its markers on the commit
/// topic and from the restored checkpoint.
fn retired_instances(
    prefix: &str,
    instances: usize,
    markers: Option<&std::collections::HashMap<String, CheckpointId>>,
    c: &Checkpointed<'_>,
) -> Vec<usize> {
    let mut retired = std::collections::BTreeSet::new();
    let head = format!("{prefix}-");
    for key in markers.into_iter().flat_map(|m| m.keys()) {
        if let Some(i) = key
            .strip_prefix(&head)
            .and_then(|n| n.parse::<usize>().ok())
        {
            retired.insert(i);
        }
    }
    retired.extend(c.restored_parallelism.map(|p| 0..p).into_iter().flatten());
    retired.extend(c.restored.unwrap_or_default().iter().map(|c| c.instance));
    retired.into_iter().filter(|&i| i >= instances).collect()
}

/// The idempotent producer: no duplicates from retries; flushed at every checkpoint, so a
/// crash replays (and may repeat) only what came after the last one.
pub struct AtLeastOnce {
    name: String,
    topic: String,
    key: Option<Vec<Str>>,
    producer: Producer_,
    buf: Vec<u8>,
    limit: Option<Arc<MessageLimit>>,
}

impl AtLeastOnce {
    fn open(name: &str, spec: &KafkaSinkSpec) -> Result<AtLeastOnce, SinkError> {
        let mut c = producer_config(spec);
        c.set("enable.idempotence", "true");
        let producer: Producer_ = with_properties(c, spec)
            .create_with_context(DeliveryReport::default())
            .map_err(|e| kafka_err(name, "cannot create a Kafka producer", e))?;
        Ok(AtLeastOnce {
            name: name.to_string(),
            topic: spec.topic.clone(),
            key: spec.key.clone(),
            producer,
            buf: Vec::with_capacity(256),
            limit: None,
        })
    }
}

impl Sink for AtLeastOnce {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        for r in records {
            self.buf.clear();
            r.write_json(&mut self.buf);
            let key = self.key.as_deref().and_then(|f| key_of(r, f));
            send(
                &self.producer,
                &self.name,
                &self.topic,
                key.as_deref(),
                &self.buf,
            )?;
        }
        self.producer.context().check(&self.name)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        wait_delivered(&self.producer, &self.name)?;
        self.producer.context().check(&self.name)
    }

    fn message_limit(&self) -> Option<Arc<MessageLimit>> {
        self.limit.clone()
    }
}

/// What a pool producer is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Its transaction takes the records of this epoch.
    Open(CheckpointId),
    /// Its transaction holds a whole epoch, flushed, waiting for the checkpoint.
    Prepared(CheckpointId),
}

struct Slot {
    producer: Producer_,
    transactional_id: String,
}

/// The transactional producers of one sink, shared by the sink thread (writes) and the
/// checkpoint coordinator (commits).
pub struct TxnPool {
    sink: String,
    slots: Vec<Slot>,
    states: Mutex<Vec<SlotState>>,
    freed: Condvar,
    /// Records files of pre-committed epochs, by epoch.
    work_dir: PathBuf,
}

impl TxnPool {
    fn set(&self, slot: usize, state: SlotState) {
        if let Ok(mut s) = self.states.lock() {
            s[slot] = state;
        }
        self.freed.notify_all();
    }

    /// A free producer, waiting for a commit if all are busy.
    fn take_free(&self, epoch: CheckpointId) -> Result<usize, SinkError> {
        let poisoned = || kafka_err(&self.sink, "internal", "lock poisoned");
        let mut states = self.states.lock().map_err(|_| poisoned())?;
        let deadline = Instant::now() + SLOT_WAIT;
        loop {
            if let Some(i) = states.iter().position(|s| *s == SlotState::Free) {
                states[i] = SlotState::Open(epoch);
                return Ok(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SinkError::Kafka {
                    sink: self.sink.clone(),
                    message: format!(
                        "{} epochs are waiting for their checkpoints to complete; checkpoints are failing or too slow",
                        self.slots.len()
                    ),
                });
            }
            states = self
                .freed
                .wait_timeout(states, left)
                .map_err(|_| poisoned())?
                .0;
        }
    }
}

impl TransactionCommitter for TxnPool {
    fn commit(&self, epoch: CheckpointId) -> Result<(), SinkError> {
        let slot = {
            let states = self
                .states
                .lock()
                .map_err(|_| kafka_err(&self.sink, "internal", "lock poisoned"))?;
            states.iter().position(|s| *s == SlotState::Prepared(epoch))
        };
        // Already committed (e.g. by recovery), or an epoch without records.
        let Some(slot) = slot else { return Ok(()) };
        self.slots[slot]
            .producer
            .commit_transaction(REQUEST_TIMEOUT)
            .map_err(|e| {
                kafka_err(
                    &self.sink,
                    &format!(
                        "committing the transaction of checkpoint {epoch} ({}) failed",
                        self.slots[slot].transactional_id
                    ),
                    describe(&self.slots[slot].producer, e),
                )
            })?;
        self.set(slot, SlotState::Free);
        let _ = std::fs::remove_file(records_path(&self.work_dir, epoch));
        Ok(())
    }
}

fn records_path(dir: &Path, epoch: CheckpointId) -> PathBuf {
    dir.join(format!("epoch-{epoch:010}.jsonl"))
}

/// Creates a transactional producer and initializes it, which fences every older producer with
/// the same id and aborts what it left open.
fn start_producer(
    name: &str,
    spec: &KafkaSinkSpec,
    transactional_id: String,
    txn_timeout: Duration,
) -> Result<Slot, SinkError> {
    let mut c = producer_config(spec);
    c.set("transactional.id", &transactional_id).set(
        "transaction.timeout.ms",
        txn_timeout.as_millis().to_string(),
    );
    let producer: Producer_ = with_properties(c, spec)
        .create_with_context(DeliveryReport::default())
        .map_err(|e| kafka_err(name, "cannot create a Kafka producer", e))?;
    producer.init_transactions(REQUEST_TIMEOUT).map_err(|e| {
        kafka_err(
            name,
            &format!("cannot initialize transactions for `{transactional_id}`"),
            e,
        )
    })?;
    Ok(Slot {
        producer,
        transactional_id,
    })
}

/// Syncs records files to disk in the background while an epoch is written, so the sync at
/// the barrier has little left to do (it would otherwise stall the sink for the whole epoch's
/// bytes).
struct SyncAhead {
    tx: Option<std::sync::mpsc::Sender<File>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl SyncAhead {
    fn start() -> SyncAhead {
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
    fn request(&self, file: &File) {
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
const SYNC_AHEAD_BYTES: u64 = 2 << 20;

/// The marker a transaction carries: this sink's epoch `epoch` is in it.
fn marker(pipeline: &str, sink: &str, epoch: CheckpointId) -> Vec<u8> {
    serde_json::json!({ "pipeline": pipeline, "sink": sink, "epoch": epoch })
        .to_string()
        .into_bytes()
}

pub struct ExactlyOnce {
    name: String,
    pipeline: String,
    topic: String,
    commit_topic: String,
    /// Which instance of the sink this is (one per task).
    instance: usize,
    /// The marker key: the instance's transactional id prefix (unique per pipeline, sink and
    /// instance).
    marker_key: String,
    key: Option<Vec<Str>>,
    pool: Arc<TxnPool>,
    /// The producer taking the current epoch's records.
    current: Option<usize>,
    epoch: CheckpointId,
    records: Option<BufWriter<File>>,
    /// Bytes written to the records file since the last background sync request.
    unsynced: u64,
    sync_ahead: SyncAhead,
    buf: Vec<u8>,
    limit: Option<Arc<MessageLimit>>,
}

impl ExactlyOnce {
    /// Starts instance `instance`'s producers (which fences older producers with their ids);
    /// [`ExactlyOnce::recover`] comes next.
    fn start(
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
    fn recover(
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
    fn produce_epoch(
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

    fn begin_epoch(&mut self) -> Result<usize, SinkError> {
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

    fn records_err(&self, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            path: records_path(&self.pool.work_dir, self.epoch),
            source,
        }
    }
}

/// The newest committed marker epoch of every instance of the sink (marker keys starting with
/// `<prefix>-`), read from the commit topic.
fn committed_markers(
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
    let consumer: crate::sources::kafka::Reader = with_properties(c, spec)
        .create_with_context(crate::sources::kafka::QuietEof)
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
            let key = self.key.as_deref().and_then(|f| key_of(r, f));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strings_or_json_text() {
        let v = Value::from_json(br#"{"g":"u4pru","n":7,"o":{"x":1}}"#).expect("json");
        assert_eq!(key_of(&v, &[Str::from("g")]), Some(b"u4pru".to_vec()));
        assert_eq!(key_of(&v, &[Str::from("n")]), Some(b"7".to_vec()));
        assert_eq!(key_of(&v, &[Str::from("o")]), Some(br#"{"x":1}"#.to_vec()));
        assert_eq!(key_of(&v, &[Str::from("missing")]), None);
    }
}
