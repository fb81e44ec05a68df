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
//!   ([`CommitParticipant::commit`]); commits happen in epoch order.
//! - Recovery: librdkafka cannot resume another process's prepared transaction, so a
//!   transaction the crash left prepared is aborted by `init_transactions` and redone: the
//!   last committed marker says which epochs made it; every epoch the restored manifest lists as
//!   committed but the marker does not is produced again from its records file, with its marker,
//!   in one new transaction. Each epoch thus becomes visible exactly once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use super::exactly_once::*;
use super::producer::*;
use crate::checkpoint::manifest::SinkCommit;
use crate::checkpoint::participant::CommitParticipant;
use crate::checkpoint::CheckpointId;
use crate::config::spec::{Delivery, KafkaSinkSpec};
use crate::sinks::limit::{message_key, MessageLimit};
use crate::sinks::{OpenedSink, Sink, SinkError};
use crate::value::{Str, Value};

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
) -> Result<Vec<OpenedSink>, SinkError> {
    ensure_topic(spec, name, &spec.topic, false)?;
    // Larger records are dead-lettered before they reach the sink; batches fit the topic too.
    let limit = super::limits::resolve(name, spec);
    let fitted = super::limits::fit_batches(&limit, spec);
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
                    let committer: Arc<dyn CommitParticipant> = sink.pool.clone();
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
pub(super) fn in_parallel<T: Send>(
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
pub(super) fn instance_prefix(prefix: &str, instance: usize) -> String {
    format!("{prefix}-{instance}")
}

/// Instances at or above `instances` that an earlier run used: from its markers on the commit
/// topic and from the restored checkpoint.
pub(super) fn retired_instances(
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
    pub(super) name: String,
    pub(super) topic: String,
    pub(super) key: Option<Vec<Str>>,
    pub(super) producer: Producer_,
    pub(super) buf: Vec<u8>,
    pub(super) limit: Option<Arc<MessageLimit>>,
}

impl AtLeastOnce {
    pub(super) fn open(name: &str, spec: &KafkaSinkSpec) -> Result<AtLeastOnce, SinkError> {
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
            let key = self.key.as_deref().and_then(|f| message_key(r, f));
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
