//! Kafka partitions. Each topic partition is one source partition with its own consumer,
//! assigned by hand (no group rebalancing: the host decides which task reads what). The
//! checkpoint holds each partition's next offset; after a checkpoint completes the same offsets
//! are committed to the consumer group (`group`) so lag tools see progress, but a restart always
//! resumes from the checkpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{QuietEof, Reader};
use crate::checkpoint::manifest::PartitionState;
use crate::checkpoint::participant::PositionPublisher;
use crate::config::spec::{KafkaFormat, KafkaSourceSpec, KafkaStart};
use crate::dlq::{DeadLetter, ErrorClass};
use crate::record::{Origin, Record};
use crate::sources::{
    decode_object, extract_event_time, Poll, Position, SourceError, SourcePartition,
};
use crate::value::{Object, Str, Value};

/// How long metadata and watermark requests may take before the source gives up.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// The position of a partition that has not read anything yet: a restore starts it by the
/// source's `start` setting.
const NOT_STARTED: u64 = u64::MAX;

/// A partition's name in messages and checkpoints: `kafka:<topic>[<partition>]`.
pub fn partition_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}[{partition}]")
}

fn err(source_name: &str, message: String) -> SourceError {
    SourceError::Kafka {
        source_name: source_name.to_string(),
        message,
    }
}

/// librdkafka settings for the source's consumers: ours first, the user's `properties` last
/// (they win).
fn client_config(spec: &KafkaSourceSpec, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &spec.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set(
            "auto.offset.reset",
            match spec.start {
                KafkaStart::Earliest => "earliest",
                KafkaStart::Latest => "latest",
            },
        );
    for (k, v) in &spec.properties {
        c.set(k, v);
    }
    c
}

/// Opens one partition per topic partition, in topic then partition order.
pub fn partitions(
    source_name: &str,
    source_index: u16,
    spec: &KafkaSourceSpec,
    pipeline: &str,
    time_field: Option<Vec<Str>>,
) -> Result<Vec<KafkaPartition>, SourceError> {
    let group = spec
        .group
        .clone()
        .unwrap_or_else(|| format!("headwater-{pipeline}"));
    let config = client_config(spec, &group);
    let probe: Reader = config
        .create_with_context(QuietEof)
        .map_err(|e| err(source_name, format!("cannot create a Kafka consumer: {e}")))?;
    let mut found: Vec<(String, i32)> = Vec::new();
    for topic in &spec.topics {
        let metadata = probe
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| {
                err(
                    source_name,
                    format!(
                        "cannot read the metadata of topic `{topic}` from {}: {e}; check `brokers` and that the brokers are up",
                        spec.brokers
                    ),
                )
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(err(source_name, format!("topic `{topic}` not found")));
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(err(
                source_name,
                format!(
                    "topic `{topic}` does not exist on {} (create it first, e.g. with kafka-topics --create)",
                    spec.brokers
                ),
            ));
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        found.extend(ids.into_iter().map(|p| (topic.clone(), p)));
    }
    let committer = Arc::new(GroupOffsets {
        partitions: found
            .iter()
            .map(|(t, p)| (partition_name(t, *p), (t.clone(), *p)))
            .collect(),
        consumer: probe,
    });
    let mut out = Vec::with_capacity(found.len());
    for (i, (topic, partition)) in found.into_iter().enumerate() {
        let end = if spec.until_end {
            let (_, high) = committer
                .consumer
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map_err(|e| {
                    err(
                        source_name,
                        format!(
                            "cannot read the end offset of `{topic}` partition {partition}: {e}"
                        ),
                    )
                })?;
            Some(high)
        } else {
            None
        };
        let consumer: Reader = config
            .create_with_context(QuietEof)
            .map_err(|e| err(source_name, format!("cannot create a Kafka consumer: {e}")))?;
        out.push(KafkaPartition {
            name: partition_name(&topic, partition),
            source_name: source_name.to_string(),
            consumer,
            topic,
            partition,
            origin: Origin {
                source: source_index,
                partition: i as u32,
                offset: 0,
                entry: 0,
            },
            next_offset: None,
            records: 0,
            assigned: false,
            end,
            start: spec.start,
            format: spec.format,
            max_record_bytes: spec.max_record_bytes,
            time_field: time_field.clone(),
            committer: committer.clone(),
            keep_text: false,
        });
    }
    Ok(out)
}

/// Commits checkpointed offsets to the source's consumer group.
pub struct GroupOffsets {
    consumer: Reader,
    /// Partition name -> (topic, partition).
    partitions: HashMap<String, (String, i32)>,
}

impl PositionPublisher for GroupOffsets {
    /// Commits the positions a completed checkpoint holds to the consumer group:
    /// asynchronously (the group's offsets are for monitoring, the checkpoint is what a
    /// restart uses), or waiting for the broker's answer when `wait` (a run's last checkpoint).
    fn publish(&self, states: &[PartitionState], wait: bool) {
        let mut tpl = TopicPartitionList::new();
        for s in states {
            if s.position.offset == NOT_STARTED {
                continue;
            }
            if let Some((topic, partition)) = self.partitions.get(&s.partition) {
                if tpl
                    .add_partition_offset(
                        topic,
                        *partition,
                        Offset::Offset(s.position.offset as i64),
                    )
                    .is_err()
                {
                    continue;
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let mode = if wait {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::warn!("committing offsets to the consumer group failed: {e}");
        }
        // Serve the commit's callback queue.
        let _ = self.consumer.poll(Duration::ZERO);
    }
}

/// One Kafka topic partition.
pub struct KafkaPartition {
    name: String,
    source_name: String,
    consumer: Reader,
    topic: String,
    partition: i32,
    origin: Origin,
    /// The next offset to read; None until the first message or a restore.
    next_offset: Option<i64>,
    records: u64,
    assigned: bool,
    /// Bounded runs: the end offset when the run started.
    end: Option<i64>,
    start: KafkaStart,
    format: KafkaFormat,
    max_record_bytes: usize,
    /// None: the message timestamp is the event time.
    time_field: Option<Vec<Str>>,
    committer: Arc<GroupOffsets>,
    /// JSON records carry their message's payload ([`SourcePartition::keep_source_text`]).
    keep_text: bool,
}

impl KafkaPartition {
    fn assign(&mut self) -> Result<(), SourceError> {
        let offset = match (self.next_offset, self.start) {
            (Some(o), _) => Offset::Offset(o),
            (None, KafkaStart::Earliest) => Offset::Beginning,
            (None, KafkaStart::Latest) => Offset::End,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, offset)
            .map_err(|e| err(&self.source_name, e.to_string()))?;
        self.consumer.assign(&tpl).map_err(|e| {
            err(
                &self.source_name,
                format!("cannot read `{}`: {e}", self.name),
            )
        })?;
        self.assigned = true;
        Ok(())
    }

    /// The consumer's position (skips transaction markers, which are never delivered).
    fn consumer_position(&self) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        let elem = tpl.find_partition(&self.topic, self.partition)?;
        match elem.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    fn decode(&self, m: &BorrowedMessage<'_>) -> Result<Record, (String, &'static str)> {
        let payload = m.payload().unwrap_or_default();
        if payload.len() > self.max_record_bytes {
            return Err((
                format!(
                    "message is {} bytes, above the source's max_record_bytes ({})",
                    payload.len(),
                    self.max_record_bytes
                ),
                "decode",
            ));
        }
        let kafka_time = m.timestamp().to_millis();
        let value = match self.format {
            KafkaFormat::Json => decode_object(payload).map_err(|e| (e, "decode"))?,
            KafkaFormat::Raw => {
                let mut o = Object::new();
                let text = |b: Option<&[u8]>| match b {
                    Some(b) => Value::from(String::from_utf8_lossy(b).as_ref()),
                    None => Value::Null,
                };
                o.insert("key", text(m.key()));
                o.insert("value", text(m.payload()));
                o.insert("topic", Value::from(self.topic.as_str()));
                o.insert("partition", Value::Int(i64::from(self.partition)));
                o.insert("offset", Value::Int(m.offset()));
                o.insert("timestamp", kafka_time.map_or(Value::Null, Value::Int));
                Value::Object(o)
            }
        };
        let time = match &self.time_field {
            Some(field) => extract_event_time(&value, field).map_err(|e| (e, "event_time"))?,
            None => kafka_time.ok_or_else(|| {
                (
                    "the message has no timestamp; set `event_time.field`".to_string(),
                    "event_time",
                )
            })?,
        };
        let origin = Origin {
            offset: m.offset() as u64,
            ..self.origin
        };
        let record = Record::new(value, time, origin);
        Ok(match (self.keep_text, self.format) {
            (true, KafkaFormat::Json) => record.with_source_text(payload.into()),
            _ => record,
        })
    }

    fn reached_end(&self) -> bool {
        match (self.end, self.next_offset) {
            (Some(end), Some(next)) => next >= end,
            (Some(end), None) => end == 0,
            (None, _) => false,
        }
    }
}

impl SourcePartition for KafkaPartition {
    fn name(&self) -> &str {
        &self.name
    }

    fn keep_source_text(&mut self) {
        self.keep_text = true;
    }

    fn poll(
        &mut self,
        out: &mut Vec<Record>,
        dead: &mut Vec<DeadLetter>,
        max: usize,
    ) -> Result<Poll, SourceError> {
        if !self.assigned {
            self.assign()?;
        }
        if self.reached_end() {
            return Ok(Poll::End);
        }
        let mut produced = 0;
        let mut at_eof = false;
        while produced < max {
            let Some(result) = self.consumer.poll(Duration::ZERO) else {
                break;
            };
            match result {
                Ok(m) => {
                    self.next_offset = Some(m.offset() + 1);
                    self.records += 1;
                    produced += 1;
                    match self.decode(&m) {
                        Ok(r) => out.push(r),
                        Err((error, step)) => {
                            let raw = m.payload().unwrap_or_default();
                            let keep = raw.len().min(64 << 10);
                            dead.push(DeadLetter::new(
                                raw[..keep].to_vec(),
                                Origin {
                                    offset: m.offset() as u64,
                                    ..self.origin
                                },
                                step.to_string(),
                                ErrorClass::Permanent,
                                error,
                            ))
                        }
                    }
                }
                Err(KafkaError::PartitionEOF(_)) => {
                    at_eof = true;
                    break;
                }
                Err(e) => {
                    if e.rdkafka_error_code()
                        .is_some_and(|c| c == RDKafkaErrorCode::Fatal)
                    {
                        return Err(err(&self.source_name, format!("`{}`: {e}", self.name)));
                    }
                    // Broker restarts and the like: librdkafka retries by itself.
                    tracing::warn!(partition = %self.name, "kafka: {e}");
                    break;
                }
            }
        }
        if at_eof {
            // Transaction markers occupy offsets no message has: the consumer's position
            // moves past them.
            if let Some(p) = self.consumer_position() {
                if self.next_offset.is_none_or(|n| p > n) {
                    self.next_offset = Some(p);
                }
            }
            if self.reached_end() && produced == 0 {
                return Ok(Poll::End);
            }
        }
        Ok(if produced > 0 {
            Poll::Ready
        } else {
            Poll::Pending
        })
    }

    fn position(&self) -> Position {
        Position {
            offset: self.next_offset.map_or(NOT_STARTED, |o| o.max(0) as u64),
            records: self.records,
        }
    }

    fn seek(&mut self, position: Position) -> Result<(), SourceError> {
        if self.assigned {
            return Err(SourceError::Seek {
                source_name: self.source_name.clone(),
                partition: self.name.clone(),
                position: format!("offset {}", position.offset),
                message: "the partition is already being read".into(),
            });
        }
        self.next_offset = (position.offset != NOT_STARTED).then_some(position.offset as i64);
        self.records = position.records;
        Ok(())
    }

    fn position_publisher(&self) -> Option<Arc<dyn PositionPublisher>> {
        Some(self.committer.clone())
    }
}
