//! The producer pieces both delivery modes share: client configuration, delivery reports,
//! sending with back-pressure, waiting for acknowledgements, creating topics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::spec::KafkaSinkSpec;
use crate::sinks::SinkError;

pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn kafka_err(sink: &str, what: &str, e: impl std::fmt::Display) -> SinkError {
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
    pub(super) fn check(&self, sink: &str) -> Result<(), SinkError> {
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

pub(super) type Producer_ = ThreadedProducer<DeliveryReport>;

pub(super) fn base_config(spec: &KafkaSinkSpec) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &spec.brokers);
    c
}

pub(super) fn producer_config(spec: &KafkaSinkSpec) -> ClientConfig {
    let mut c = base_config(spec);
    c.set("linger.ms", "5").set("compression.type", "lz4");
    c
}

pub(super) fn with_properties(mut c: ClientConfig, spec: &KafkaSinkSpec) -> ClientConfig {
    for (k, v) in &spec.properties {
        c.set(k, v);
    }
    c
}

/// An error, with the producer's fatal error spelled out (e.g. fenced by a newer instance).
pub(super) fn describe(producer: &Producer_, e: KafkaError) -> String {
    match producer.client().fatal_error() {
        Some((code, reason)) => format!("{e} ({code:?}: {reason})"),
        None => e.to_string(),
    }
}

/// Waits until every message sent so far is acknowledged (or has failed: see
/// [`DeliveryReport::check`]). rust-rdkafka's `flush` on a threaded producer sleeps in 100 ms
/// polls while the background thread takes the delivery reports; watching the queue length
/// sees them at once (a flush per checkpoint would otherwise stall the sink 100 ms).
pub(super) fn wait_delivered(producer: &Producer_, sink: &str) -> Result<(), SinkError> {
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
pub(super) fn send(
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
pub(super) fn ensure_topic(
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
