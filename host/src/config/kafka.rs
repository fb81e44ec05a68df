//! The options of Kafka sources and sinks.

use super::decode::{byte_size, choice, entries, string, string_list, Errors, MapReader};
use super::spec::*;
use crate::value::split_path;

/// `brokers:` (required) and `properties:` (a map of librdkafka settings), shared by Kafka
/// sources and sinks.
fn kafka_common(
    m: &mut MapReader<'_>,
    ctx: &str,
    errs: &mut Errors,
) -> (Option<String>, Vec<(String, String)>) {
    let brokers = m
        .required(
            "brokers",
            errs,
            "set `brokers:` to the bootstrap servers, e.g. `brokers: 127.0.0.1:9092`",
        )
        .and_then(|n| string(n, &format!("{ctx} brokers"), errs));
    let mut properties = Vec::new();
    if let Some(n) = m.get("properties") {
        for (k, v) in entries(n, &format!("{ctx} properties"), errs) {
            let key = k.scalar().unwrap_or("").to_string();
            if let Some(value) = string(v, &format!("{ctx} properties.{key}"), errs) {
                properties.push((key, value));
            }
        }
    }
    (brokers, properties)
}

pub(super) fn kafka_source(
    m: &mut MapReader<'_>,
    ctx: &str,
    errs: &mut Errors,
) -> Option<KafkaSourceSpec> {
    let topics: Vec<String> = match (m.get("topic"), m.get("topics")) {
        (Some(n), None) | (None, Some(n)) => string_list(n, &format!("{ctx} topic"), errs)
            .into_iter()
            .map(|(t, _)| t)
            .collect(),
        (Some(n), Some(_)) => {
            errs.at(
                n,
                format!("{ctx}: give either `topic` or `topics`, not both"),
                None,
            );
            Vec::new()
        }
        (None, None) => {
            errs.at(
                m.node(),
                format!("{ctx}: missing required key `topic`"),
                Some("name the topic to read: `topic: rides` (or `topics: [a, b]`)".into()),
            );
            Vec::new()
        }
    };
    let (brokers, properties) = kafka_common(m, ctx, errs);
    let group = m
        .get("group")
        .and_then(|n| string(n, &format!("{ctx} group"), errs));
    let format = match m.get("format") {
        Some(n) => match choice(n, &["json", "raw"], &format!("{ctx} format"), errs) {
            Some("raw") => KafkaFormat::Raw,
            _ => KafkaFormat::Json,
        },
        None => KafkaFormat::Json,
    };
    let start = match m.get("start") {
        Some(n) => match choice(n, &["earliest", "latest"], &format!("{ctx} start"), errs) {
            Some("latest") => KafkaStart::Latest,
            _ => KafkaStart::Earliest,
        },
        None => KafkaStart::Earliest,
    };
    let until_end = match m.get("until") {
        Some(n) => choice(n, &["end"], &format!("{ctx} until"), errs).is_some(),
        None => false,
    };
    let max_record_bytes = m
        .get("max_record_bytes")
        .and_then(|n| byte_size(n, &format!("{ctx} max_record_bytes"), errs))
        .unwrap_or(1 << 20);
    if topics.is_empty() {
        return None;
    }
    Some(KafkaSourceSpec {
        topics,
        brokers: brokers?,
        group,
        format,
        start,
        until_end,
        max_record_bytes,
        properties,
    })
}

pub(super) fn kafka_sink(
    m: &mut MapReader<'_>,
    ctx: &str,
    errs: &mut Errors,
) -> Option<KafkaSinkSpec> {
    let topic = m
        .required("topic", errs, "name the topic to write: `topic: surge`")
        .and_then(|n| string(n, &format!("{ctx} topic"), errs));
    let (brokers, properties) = kafka_common(m, ctx, errs);
    let key = m
        .get("key")
        .and_then(|n| string(n, &format!("{ctx} key"), errs))
        .map(|k| split_path(&k));
    let delivery = match m.get("delivery") {
        Some(n) => match choice(
            n,
            &["exactly_once", "at_least_once"],
            &format!("{ctx} delivery"),
            errs,
        ) {
            Some("at_least_once") => Delivery::AtLeastOnce,
            _ => Delivery::ExactlyOnce,
        },
        None => Delivery::ExactlyOnce,
    };
    let transactional_id = m
        .get("transactional_id")
        .and_then(|n| string(n, &format!("{ctx} transactional_id"), errs));
    let commit_topic = m
        .get("commit_topic")
        .and_then(|n| string(n, &format!("{ctx} commit_topic"), errs))
        .unwrap_or_else(|| "headwater.commits".to_string());
    Some(KafkaSinkSpec {
        topic: topic?,
        brokers: brokers?,
        key,
        delivery,
        transactional_id,
        commit_topic,
        properties,
    })
}
