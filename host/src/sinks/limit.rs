//! The largest message a sink can send, and what becomes of a record above it.
//!
//! A sink with a size limit per message (Kafka: the producer's and the topic's) would fail
//! on a larger one, and a failed message can doom the transaction it is in: either would stop
//! the run. So the limit is checked where a task hands its results to the sink, and a result
//! above it becomes a dead letter *of that task* instead of a message: it is committed with
//! the checkpoint whose epoch the message would have been in, so it is dead-lettered exactly
//! once. Its envelope names the size and the limit and keeps the first [`KEPT_RAW_BYTES`] of
//! the record's JSON (with `raw_size`, the whole size).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::dlq::{DeadLetter, ErrorClass, KEPT_RAW_BYTES};
use crate::record::{EventTime, Origin};
use crate::value::{Str, Value};

/// The largest message a sink can send: a record's JSON and its key together.
#[derive(Debug)]
pub struct MessageLimit {
    sink: String,
    /// What kind of sink, for messages: `Kafka sink`.
    label: String,
    /// A record's JSON and its key may take this many bytes together.
    max_bytes: AtomicUsize,
    /// What sets it, for messages: `the producer's message.max.bytes (1000000) less ...`.
    source: Mutex<String>,
    key: Option<Vec<Str>>,
    /// Set when every message must have a key (a compacted Kafka topic refuses a message
    /// without one, which would fail the run): why, for messages.
    key_required: Mutex<Option<String>>,
    /// Whether everything the limit depends on is known (a Kafka topic's settings arrive
    /// from the broker after the sink starts). Until then a record without a key waits, so
    /// that it is never sent to a topic that refuses it.
    settled: (Mutex<bool>, Condvar),
}

/// How long a record without a key waits for the sink's settings to arrive.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

impl MessageLimit {
    /// The limit of sink `sink` (a `label`, e.g. `Kafka sink`): `max_bytes` for a record's
    /// JSON and its key (the field at `key`), set by what `source` says.
    pub fn new(
        sink: &str,
        label: &str,
        max_bytes: usize,
        source: String,
        key: Option<Vec<Str>>,
    ) -> MessageLimit {
        MessageLimit {
            sink: sink.to_string(),
            label: label.to_string(),
            max_bytes: AtomicUsize::new(max_bytes.max(1)),
            source: Mutex::new(source),
            key,
            key_required: Mutex::new(None),
            settled: (Mutex::new(true), Condvar::new()),
        }
    }

    /// The same limit, still waiting for settings that arrive later: call [`Self::settle`]
    /// once they did (or could not be read).
    pub fn unsettled(self) -> MessageLimit {
        if let Ok(mut s) = self.settled.0.lock() {
            *s = false;
        }
        self
    }

    /// Everything the limit depends on is known: records without a key stop waiting.
    pub fn settle(&self) {
        if let Ok(mut s) = self.settled.0.lock() {
            *s = true;
        }
        self.settled.1.notify_all();
    }

    /// Waits (at most [`SETTLE_WAIT`]) until the limit is settled.
    fn wait_settled(&self) {
        let Ok(mut settled) = self.settled.0.lock() else {
            return;
        };
        let deadline = std::time::Instant::now() + SETTLE_WAIT;
        while !*settled {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.settled.1.wait_timeout(settled, left) {
                Ok((s, _)) => settled = s,
                Err(_) => return,
            }
        }
    }

    /// From now on a record without a key (no `key` field configured, or the field missing or
    /// null) is dead-lettered instead of sent; `why` says what requires keys.
    pub fn require_key(&self, why: String) {
        if let Ok(mut k) = self.key_required.lock() {
            *k = Some(why);
        }
    }

    /// Why `value` cannot be sent without a key, if keys are required and it has none.
    fn missing_key(&self, value: &Value) -> Option<String> {
        let has_key = self
            .key
            .as_deref()
            .is_some_and(|k| message_key(value, k).is_some());
        if has_key {
            return None;
        }
        self.wait_settled();
        let why = self.key_required.lock().ok()?.clone()?;
        match self.key.as_deref() {
            None => Some(format!(
                "{why}: every message needs a key, and {} `{}` has no `key:` field configured; set `key:` on the sink",
                self.label, self.sink
            )),
            Some(k) => Some(format!(
                "{why}: every message needs a key, and this record's `{}` is missing or null; the record was not written",
                k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(".")
            )),
        }
    }

    /// Lowers the limit to `max_bytes` (something learned later, e.g. the topic's setting),
    /// now set by what `source` says.
    pub fn lower_to(&self, max_bytes: usize, source: String) {
        self.max_bytes.store(max_bytes.max(1), Ordering::Relaxed);
        if let Ok(mut s) = self.source.lock() {
            *s = source;
        }
    }

    /// The largest record-plus-key size the sink takes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes.load(Ordering::Relaxed)
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
            .and_then(|k| message_key(value, k))
            .map_or(0, |k| k.len());
        let size = scratch.len() + key_len;
        (size > max).then_some(size)
    }

    /// Keeps the values that fit (and have a key where keys are required); the others become
    /// dead letters (`meta`: each value's origin and event time, in the same order).
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
            let (origin, time) = meta.get(at).copied().unwrap_or_default();
            if let Some(size) = self.oversized(v, &mut scratch) {
                dead.push(self.dead_letter(std::mem::take(&mut scratch), size, origin, time));
                return false;
            }
            if let Some(why) = self.missing_key(v) {
                let mut json = Vec::new();
                v.write_json(&mut json);
                let mut dl = DeadLetter::new(
                    json,
                    origin,
                    format!("sink {}", self.sink),
                    ErrorClass::Permanent,
                    why,
                );
                dl.event_time = Some(time);
                dead.push(dl);
                return false;
            }
            true
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
                "the message of {size} bytes (the record's JSON and its key) is larger than the {} bytes {} `{}` can send: {}; the record was not written, and raw holds its first {} KiB",
                self.max_bytes(),
                self.label,
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

/// A record's message key: the field's string, or its JSON text (None: no such field, or null).
pub fn message_key(value: &Value, field: &[Str]) -> Option<Vec<u8>> {
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
        let limit = MessageLimit::new(
            "out",
            "Kafka sink",
            100_000,
            "a test".into(),
            Some(vec![Str::from("user")]),
        );
        let mut values = vec![record(10), record(200_000), record(20)];
        let origin = Origin {
            source: 0,
            partition: 1,
            offset: 7,
            entry: 0,
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
    fn records_without_a_key_become_dead_letters_once_keys_are_required() {
        let limit = MessageLimit::new(
            "out",
            "Kafka sink",
            100_000,
            "a test".into(),
            Some(vec![Str::from("user")]),
        );
        let origin = Origin::default();
        let no_user = Value::from_json(br#"{"pad":"x"}"#).expect("json");
        let null_user = Value::from_json(br#"{"user":null}"#).expect("json");
        let mut values = vec![record(1), no_user.clone(), null_user.clone()];
        let meta = vec![(origin, 1), (origin, 2), (origin, 3)];
        assert!(
            limit.retain_fitting(&mut values, &meta).is_empty(),
            "not required yet"
        );
        assert_eq!(values.len(), 3);
        limit.require_key("topic `t` is compacted".into());
        let dead = limit.retain_fitting(&mut values, &meta);
        assert_eq!(values, vec![record(1)]);
        assert_eq!(dead.len(), 2);
        assert!(
            dead[0]
                .error
                .starts_with("topic `t` is compacted: every message needs a key")
                && dead[0].error.contains("`user` is missing or null"),
            "{}",
            dead[0].error
        );
        assert_eq!(dead[1].event_time, Some(3));
        let unkeyed = MessageLimit::new("out", "Kafka sink", 100_000, "a test".into(), None);
        unkeyed.require_key("topic `t` is compacted".into());
        let mut values = vec![record(1)];
        let dead = unkeyed.retain_fitting(&mut values, &meta);
        assert!(
            dead[0].error.contains("set `key:` on the sink"),
            "{}",
            dead[0].error
        );
    }

    #[test]
    fn a_record_without_a_key_waits_until_the_settings_arrive() {
        let limit = std::sync::Arc::new(
            MessageLimit::new("out", "Kafka sink", 100_000, "a test".into(), None).unsettled(),
        );
        let late = limit.clone();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            late.require_key("topic `t` is compacted".into());
            late.settle();
        });
        let mut values = vec![record(1)];
        let dead = limit.retain_fitting(&mut values, &[(Origin::default(), 1)]);
        setter.join().expect("setter");
        assert_eq!(dead.len(), 1, "the requirement that arrived later applies");
        assert!(values.is_empty());
    }

    #[test]
    fn keys_are_strings_or_json_text() {
        let v = Value::from_json(br#"{"g":"u4pru","n":7,"o":{"x":1}}"#).expect("json");
        assert_eq!(message_key(&v, &[Str::from("g")]), Some(b"u4pru".to_vec()));
        assert_eq!(message_key(&v, &[Str::from("n")]), Some(b"7".to_vec()));
        assert_eq!(
            message_key(&v, &[Str::from("o")]),
            Some(br#"{"x":1}"#.to_vec())
        );
        assert_eq!(message_key(&v, &[Str::from("missing")]), None);
    }
}
