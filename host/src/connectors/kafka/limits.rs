//! How large a Kafka sink's message may be: the producer's `message.max.bytes` and the
//! topic's `max.message.bytes`, whichever is smaller, less [`FRAMING`] bytes for Kafka's own
//! headers. A larger message is refused by librdkafka or rejected by the broker (which also
//! dooms the transaction it is in), so the sink's [`MessageLimit`] turns such results into dead
//! letters before they reach it.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::config::spec::KafkaSinkSpec;
use crate::sinks::limit::MessageLimit;

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_PRODUCER_MAX: usize = 1_000_000;
/// Room left for a message's framing: record batch header, lengths, timestamps, attributes.
pub const FRAMING: usize = 256;
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The limit of sink `name`: the producer's `message.max.bytes` (its properties, or
/// librdkafka's default) and the topic's `max.message.bytes`, whichever is smaller. A topic
/// whose settings cannot be read (an old broker, no describe rights) counts as unlimited.
/// A compacted topic (`cleanup.policy` with `compact`) refuses messages without a key, which
/// would fail the sink: there, records without a key are dead-lettered too.
///
/// Reading the topic's settings can take a while (a topic that does not exist yet, a slow
/// broker), so the sink does not wait for it: it starts with the producer's limit, and the
/// topic's applies from when it arrives (a record above a topic's lower limit sent in that
/// first moment is refused by the broker, as before the check existed). Records without a
/// key are the exception: they wait for the topic's settings, which say whether they may be
/// sent at all.
pub fn resolve(name: &str, spec: &KafkaSinkSpec) -> Arc<MessageLimit> {
    let producer = spec
        .properties
        .iter()
        .rev()
        .find(|(k, _)| k == "message.max.bytes")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_PRODUCER_MAX);
    let limit = Arc::new(
        MessageLimit::new(
            name,
            "Kafka sink",
            producer.saturating_sub(FRAMING),
            format!(
                "the producer's message.max.bytes ({producer}) less {FRAMING} for Kafka's framing"
            ),
            spec.key.clone(),
        )
        .unsettled(),
    );
    let (late, spec_owned, sink) = (limit.clone(), spec.clone(), name.to_string());
    let spawned = std::thread::Builder::new()
        .name(format!("kafka-limit-{name}"))
        .spawn(move || {
            let topic = topic_settings(&spec_owned);
            if let Ok(TopicSettings {
                cleanup_policy: Some(policy),
                ..
            }) = &topic
            {
                if policy.split(',').any(|p| p.trim() == "compact") {
                    late.require_key(format!(
                        "topic `{}` is compacted (cleanup.policy={policy})",
                        spec_owned.topic
                    ));
                }
            }
            match topic.map(|t| t.max_message_bytes) {
                Ok(Some(t)) if t < producer => late.lower_to(
                    t.saturating_sub(FRAMING),
                    format!(
                        "the max.message.bytes of topic `{}` ({t}) less {FRAMING} for Kafka's framing",
                        spec_owned.topic
                    ),
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    sink = %sink,
                    topic = %spec_owned.topic,
                    "cannot read the topic's max.message.bytes ({e}); only the producer's message.max.bytes ({producer}) is checked"
                ),
            }
            late.settle();
        });
    if let Err(e) = spawned {
        limit.settle();
        tracing::warn!(sink = name, error = %e, "cannot start reading the topic's max.message.bytes; only the producer's message.max.bytes is checked");
    }
    limit
}

/// The batch size the producer must keep to when the topic's limit is below librdkafka's
/// default `batch.size`: `spec` with `batch.size` set (unless the user set it).
pub fn fit_batches(limit: &MessageLimit, spec: &KafkaSinkSpec) -> KafkaSinkSpec {
    let mut spec = spec.clone();
    // librdkafka's batch.size counts the framing too, and defaults to 1000000 bytes.
    let batch = limit.max_bytes() + FRAMING;
    if batch < DEFAULT_PRODUCER_MAX && !spec.properties.iter().any(|(k, _)| k == "batch.size") {
        spec.properties
            .push(("batch.size".to_string(), batch.to_string()));
    }
    spec
}

/// What the sink needs to know of its topic's settings.
struct TopicSettings {
    /// `max.message.bytes` (None: the topic does not say).
    max_message_bytes: Option<usize>,
    /// `cleanup.policy` (e.g. `delete`, `compact`, `compact,delete`).
    cleanup_policy: Option<String>,
}

/// Reads the topic's settings with the admin API.
fn topic_settings(spec: &KafkaSinkSpec) -> Result<TopicSettings, String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &spec.brokers);
    for (k, v) in &spec.properties {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let topic = [ResourceSpecifier::Topic(&spec.topic)];
    let results = futures::executor::block_on(admin.describe_configs(
        &topic,
        &AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT)),
    ))
    .map_err(|e| e.to_string())?;
    let mut settings = TopicSettings {
        max_message_bytes: None,
        cleanup_policy: None,
    };
    for r in results {
        let resource = r.map_err(|code| format!("{code:?}"))?;
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        settings.max_message_bytes = value("max.message.bytes").and_then(|v| v.trim().parse().ok());
        settings.cleanup_policy = value("cleanup.policy");
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_limit_below_the_default_bounds_the_batches() {
        let spec = KafkaSinkSpec {
            topic: "t".into(),
            brokers: "b".into(),
            key: None,
            delivery: crate::config::spec::Delivery::ExactlyOnce,
            transactional_id: None,
            commit_topic: "c".into(),
            properties: vec![],
        };
        let small = MessageLimit::new("out", "Kafka sink", 200_000 - FRAMING, String::new(), None);
        let fitted = fit_batches(&small, &spec);
        assert_eq!(
            fitted.properties,
            vec![("batch.size".to_string(), "200000".to_string())]
        );
        let default = MessageLimit::new(
            "out",
            "Kafka sink",
            DEFAULT_PRODUCER_MAX - FRAMING,
            String::new(),
            None,
        );
        assert!(fit_batches(&default, &spec).properties.is_empty());
    }
}
