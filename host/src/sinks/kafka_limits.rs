//! How large a Kafka sink's message may be, and what becomes of a record above it.
//!
//! A message larger than the producer's `message.max.bytes` is refused by librdkafka, and one
//! larger than the topic's `max.message.bytes` is rejected by the broker, which also dooms the
//! transaction it is in: either would stop the run. So the sink's limit — the smaller of the
//! two, less [`FRAMING`] bytes for Kafka's own headers — is checked where a task hands its
//! results to the sink, and a result above it becomes a dead letter *of that task*, instead of
//! a message: it is committed with the checkpoint whose epoch the message would have been in,
//! so it is dead-lettered exactly once. Its envelope names the size and the limit and keeps the
//! first [`KEPT_RAW_BYTES`] of the record's JSON (with `raw_size`, the whole size).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use crate::config::spec::KafkaSinkSpec;
use crate::dlq::{DeadLetter, ErrorClass, KEPT_RAW_BYTES};
use crate::record::{EventTime, Origin};
use crate::value::{Str, Value};

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_PRODUCER_MAX: usize = 1_000_000;
/// Room left for a message's framing: record batch header, lengths, timestamps, attributes.
pub const FRAMING: usize = 256;
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest message a Kafka sink can send.
#[derive(Debug)]
pub struct MessageLimit {
    sink: String,
    /// A record's JSON and its key may take this many bytes together.
    max_bytes: AtomicUsize,
    /// What sets it, for messages: `the producer's message.max.bytes (1000000)`, ...
    source: Mutex<String>,
    key: Option<Vec<Str>>,
}

impl MessageLimit {
    /// The limit of sink `name`: the producer's `message.max.bytes` (its properties, or
    /// librdkafka's default) and the topic's `max.message.bytes`, whichever is smaller. A topic
    /// whose settings cannot be read (an old broker, no describe rights) counts as unlimited.
    ///
    /// Reading the topic's settings can take a while (a topic that does not exist yet, a slow
    /// broker), so the sink does not wait for it: it starts with the producer's limit, and the
    /// topic's applies from when it arrives (a record above a topic's lower limit sent in that
    /// first moment is refused by the broker, as before the check existed).
    pub fn resolve(name: &str, spec: &KafkaSinkSpec) -> Arc<MessageLimit> {
        let producer = spec
            .properties
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_PRODUCER_MAX);
        let limit = Arc::new(MessageLimit {
            sink: name.to_string(),
            max_bytes: AtomicUsize::new(producer.saturating_sub(FRAMING).max(1)),
            source: Mutex::new(format!("the producer's message.max.bytes ({producer})")),
            key: spec.key.clone(),
        });
        let (late, spec_owned, sink) = (limit.clone(), spec.clone(), name.to_string());
        let spawned = std::thread::Builder::new()
            .name(format!("kafka-limit-{name}"))
            .spawn(move || {
                let topic = topic_max_message_bytes(&spec_owned);
                match &topic {
                    Ok(Some(t)) if *t < producer => late.lower_to(*t, &spec_owned.topic),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        sink = %sink,
                        topic = %spec_owned.topic,
                        "cannot read the topic's max.message.bytes ({e}); only the producer's message.max.bytes ({producer}) is checked"
                    ),
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(sink = name, error = %e, "cannot start reading the topic's max.message.bytes; only the producer's message.max.bytes is checked");
        }
        limit
    }

    /// Lowers the limit to the topic's `max.message.bytes` (`t`).
    fn lower_to(&self, t: usize, topic: &str) {
        self.max_bytes
            .store(t.saturating_sub(FRAMING).max(1), Ordering::Relaxed);
        if let Ok(mut source) = self.source.lock() {
            *source = format!("the max.message.bytes of topic `{topic}` ({t})");
        }
    }

    #[cfg(test)]
    fn for_test(max_bytes: usize, key: Option<&str>) -> MessageLimit {
        MessageLimit {
            sink: "out".into(),
            max_bytes: AtomicUsize::new(max_bytes),
            source: Mutex::new("a test".into()),
            key: key.map(|k| vec![Str::from(k)]),
        }
    }

    /// The largest record-plus-key size the sink takes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// The batch size the producer must keep to when the topic's limit is below librdkafka's
    /// default `batch.size`: `spec` with `batch.size` set (unless the user set it).
    pub fn fit_batches(&self, spec: &KafkaSinkSpec) -> KafkaSinkSpec {
        let mut spec = spec.clone();
        // librdkafka's batch.size counts the framing too, and defaults to 1000000 bytes.
        let batch = self.max_bytes() + FRAMING;
        if batch < DEFAULT_PRODUCER_MAX && !spec.properties.iter().any(|(k, _)| k == "batch.size") {
            spec.properties
                .push(("batch.size".to_string(), batch.to_string()));
        }
        spec
    }

    /// The size of `value`'s message (JSON and key) when it is above the limit. `scratch` holds
    /// its JSON afterwards in that case. Cheap for records far below the limit: their size is
    /// bounded without encoding them.
    pub fn oversized(&self, value: &Value, scratch: &mut Vec<u8>) -> Option<usize> {
        let key = self.key.as_deref().and_then(|k| value.get_path(k));
        let bound = json_len_bound(value) + key.map_or(0, json_len_bound);
        let max = self.max_bytes();
        if bound <= max {
            return None;
        }
        scratch.clear();
        value.write_json(scratch);
        let key_len = self
            .key
            .as_deref()
            .and_then(|k| super::kafka::key_of(value, k))
            .map_or(0, |k| k.len());
        let size = scratch.len() + key_len;
        (size > max).then_some(size)
    }

    /// Keeps the values that fit; the others become dead letters (`meta`: each value's origin
    /// and event time, in the same order).
    pub fn retain_fitting(
        &self,
        values: &mut Vec<Value>,
        meta: &[(Origin, EventTime)],
    ) -> Vec<DeadLetter> {
        let mut scratch = Vec::new();
        let mut dead = Vec::new();
        let mut i = 0;
        values.retain(|v| {
            let at = i;
            i += 1;
            match self.oversized(v, &mut scratch) {
                None => true,
                Some(size) => {
                    let (origin, time) = meta.get(at).copied().unwrap_or_default();
                    dead.push(self.dead_letter(std::mem::take(&mut scratch), size, origin, time));
                    false
                }
            }
        });
        dead
    }

    fn dead_letter(
        &self,
        json: Vec<u8>,
        size: usize,
        origin: Origin,
        time: EventTime,
    ) -> DeadLetter {
        let mut dl = DeadLetter::new(
            json,
            origin,
            format!("sink {}", self.sink),
            ErrorClass::Permanent,
            format!(
                "the message of {size} bytes (the record's JSON and its key) is larger than the {} bytes Kafka sink `{}` can send: {} less {FRAMING} for Kafka's framing; the record was not written, and raw holds its first {} KiB",
                self.max_bytes(),
                self.sink,
                self.source.lock().map(|s| s.clone()).unwrap_or_default(),
                KEPT_RAW_BYTES >> 10
            ),
        );
        dl.event_time = Some(time);
        dl.truncate_raw(KEPT_RAW_BYTES);
        dl
    }
}

impl MessageLimit {
    /// A dead letter's envelope as a record for a DLQ sink: shortened (`raw` cut to its first
    /// [`KEPT_RAW_BYTES`], `detail` to 16 KiB) when it is too large for the sink.
    pub fn envelope(&self, dl: &DeadLetter, names: &crate::dlq::Names) -> Option<Value> {
        let v = Value::from_json(dl.to_envelope(names).to_string().as_bytes()).ok()?;
        if self.oversized(&v, &mut Vec::new()).is_none() {
            return Some(v);
        }
        let mut short = dl.clone();
        short.truncate_raw(KEPT_RAW_BYTES);
        if let Some(detail) = short.detail.as_mut() {
            let mut cut = detail.len().min(16 << 10);
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        Value::from_json(short.to_envelope(names).to_string().as_bytes()).ok()
    }
}

/// An upper bound of the length of `value`'s JSON text (every string byte escaped as `\u00XX`).
pub fn json_len_bound(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Int(_) => 20,
        Value::Float(_) => 24,
        Value::Str(s) => 2 + 6 * s.len(),
        Value::Array(items) => 2 + items.iter().map(|v| json_len_bound(v) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| 2 + 6 * k.len() + 1 + json_len_bound(v) + 1)
                .sum::<usize>()
        }
    }
}

/// The topic's `max.message.bytes` (None: the topic does not say).
fn topic_max_message_bytes(spec: &KafkaSinkSpec) -> Result<Option<usize>, String> {
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
    for r in results {
        let resource = r.map_err(|code| format!("{code:?}"))?;
        if let Some(value) = resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
        {
            return Ok(value.trim().parse().ok());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pad: usize) -> Value {
        Value::from_json(format!(r#"{{"user":"u1","pad":"{}"}}"#, "é".repeat(pad)).as_bytes())
            .expect("json")
    }

    #[test]
    fn the_bound_is_never_below_the_json_length() {
        for v in [
            record(0),
            record(50),
            Value::from_json(br#"{"a":[1,-2.5e-300,null,true,"\u0001\"",{"b":{}}],"c":"x"}"#)
                .expect("json"),
        ] {
            let mut out = Vec::new();
            v.write_json(&mut out);
            assert!(json_len_bound(&v) >= out.len(), "{v:?}");
        }
    }

    #[test]
    fn records_above_the_limit_become_dead_letters_with_their_size_and_first_bytes() {
        let limit = MessageLimit::for_test(100_000, Some("user"));
        let mut values = vec![record(10), record(200_000), record(20)];
        let origin = Origin {
            source: 0,
            partition: 1,
            offset: 7,
        };
        let meta = vec![(origin, 1), (origin, 2), (origin, 3)];
        let dead = limit.retain_fitting(&mut values, &meta);
        assert_eq!(values, vec![record(10), record(20)]);
        assert_eq!(dead.len(), 1);
        let dl = &dead[0];
        let mut json = Vec::new();
        record(200_000).write_json(&mut json);
        let size = json.len() + 2; // and the key, `u1`
        assert!(
            dl.error.contains(&format!("the message of {size} bytes"))
                && dl
                    .error
                    .contains("larger than the 100000 bytes Kafka sink `out` can send"),
            "{}",
            dl.error
        );
        assert_eq!(dl.step, "sink out");
        assert_eq!(dl.raw_size, Some(json.len() as u64));
        assert!(dl.raw.len() <= KEPT_RAW_BYTES && dl.raw.len() > KEPT_RAW_BYTES - 4);
        assert_eq!((dl.origin, dl.event_time), (origin, Some(2)));
    }

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
        let small = MessageLimit::for_test(200_000 - FRAMING, None);
        let fitted = small.fit_batches(&spec);
        assert_eq!(
            fitted.properties,
            vec![("batch.size".to_string(), "200000".to_string())]
        );
        let default = MessageLimit::for_test(DEFAULT_PRODUCER_MAX - FRAMING, None);
        assert!(default.fit_batches(&spec).properties.is_empty());
    }
}
