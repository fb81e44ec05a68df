//! Apache Kafka: a source reading topic partitions (positions in checkpoints, the consumer
//! group's offsets published after each one) and a sink writing a topic, exactly once with
//! transactions committed at checkpoints or at least once. The client pieces both use live
//! here.

mod exactly_once;
pub mod limits;
mod producer;
pub mod read_topic;
mod records;
pub mod sink;
pub mod source;
mod transactions;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// Routes librdkafka's client errors to the log, minus the end-of-partition notices a bounded
/// read expects (they are how `until: end` knows it is done).
#[derive(Clone, Copy, Default)]
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            e => tracing::warn!("kafka: {e}: {reason}"),
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A consumer that logs through [`QuietEof`].
pub type Reader = BaseConsumer<QuietEof>;
