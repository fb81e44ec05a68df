//! The source contract: partitions that read and decode records at the edge of the pipeline.
//! The sources themselves (files, stdin, Kafka, Nexmark) are connectors (the `connectors` folder).
//!
//! Decoding happens once, here. A line that is not valid JSON, is not an object, or has no
//! usable event time becomes a [`DeadLetter`] with its raw bytes and position; the partition
//! goes on with the next line.

use std::path::PathBuf;

use crate::config::spec::SourceSpec;
use crate::dlq::DeadLetter;
use crate::record::{EventTime, Record};
use crate::value::{Str, Value};

/// One partition of a source, read by one task.
pub trait SourcePartition: Send {
    /// A name for messages and DLQ envelopes: a file path, `nexmark[2/4]`, `stdin`.
    fn name(&self) -> &str;
    /// Appends up to `max` records to `out` and dead letters for bad input to `dead`.
    fn poll(
        &mut self,
        out: &mut Vec<Record>,
        dead: &mut Vec<DeadLetter>,
        max: usize,
    ) -> Result<Poll, SourceError>;

    /// From now on, records carry the bytes they were decoded from
    /// ([`Record::source_text`](crate::record::Record::source_text)). Sources that generate
    /// values rather than decode them ignore it.
    fn keep_source_text(&mut self) {}

    /// Where the next poll reads from, for checkpoints.
    fn position(&self) -> Position;

    /// Resumes at a position taken from [`SourcePartition::position`] by an earlier run.
    fn seek(&mut self, position: Position) -> Result<(), SourceError>;

    /// False when input cannot be read again (stdin): records read since the last
    /// checkpoint are lost on a crash.
    fn replayable(&self) -> bool {
        true
    }

    /// True for a partition that is not one of the pipeline's sources but feeds it records
    /// from elsewhere (dead letters replayed): it never holds the watermark back (its
    /// records keep the event times they had and may be late), and once its task's other
    /// partitions have ended it ends too, after a poll with nothing to give; it is not
    /// marked exhausted, so the next run reads it again.
    fn is_auxiliary(&self) -> bool {
        false
    }

    /// For sources that report progress elsewhere (Kafka consumer groups): what publishes a
    /// completed checkpoint's positions there. Partitions of one source share it.
    fn position_publisher(
        &self,
    ) -> Option<std::sync::Arc<dyn crate::checkpoint::participant::PositionPublisher>> {
        None
    }
}

pub use crate::checkpoint::manifest::Position;

/// What a poll achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Made progress (records or dead letters).
    Ready,
    /// Nothing now (a rate limit); poll again later.
    Pending,
    /// Exhausted; never poll again.
    End,
}

/// A source that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{source_name}`: no files match `{glob}`; check the path (relative paths are relative to the pipeline file)")]
    NoFilesMatch { source_name: String, glob: String },
    #[error("source `{source_name}`: `{glob}` is not a valid glob pattern: {message}")]
    BadGlob {
        source_name: String,
        glob: String,
        message: String,
    },
    #[error("source `{source_name}`: cannot read `{path}`: {error}")]
    Io {
        source_name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("source `{source_name}`: cannot resume `{partition}` at {position}: {message}")]
    Seek {
        source_name: String,
        partition: String,
        position: String,
        message: String,
    },
    #[error("source `{source_name}`: {message}")]
    Kafka {
        source_name: String,
        message: String,
    },
    #[error("dead-letter replays in `{storage}`: {message}")]
    Replay { storage: String, message: String },
    #[error("source `{source_name}`: needs `event_time.field` to find each record's timestamp")]
    NoTimeField { source_name: String },
}

pub(crate) fn time_field(spec: &SourceSpec) -> Result<Vec<Str>, SourceError> {
    spec.event_time
        .field
        .clone()
        .ok_or_else(|| SourceError::NoTimeField {
            source_name: spec.name.clone(),
        })
}

/// Decodes one JSON object (a record's value); anything else is an error for the DLQ.
pub(crate) fn decode_object(bytes: &[u8]) -> Result<Value, String> {
    let value = Value::from_json(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    if !matches!(value, Value::Object(_)) {
        return Err(format!(
            "expected a JSON object, found a {}",
            value.type_name()
        ));
    }
    Ok(value)
}

/// Reads a record's event time (ms since the epoch) from a number or an RFC 3339 string.
pub fn extract_event_time(value: &Value, field: &[Str]) -> Result<EventTime, String> {
    let name = || field.join(".");
    match value.get_path(field) {
        None | Some(Value::Null) => Err(format!("event-time field `{}` is missing", name())),
        Some(Value::Int(ms)) => Ok(*ms),
        Some(Value::Float(ms)) if ms.is_finite() => Ok(*ms as i64),
        Some(Value::Str(s)) => crate::time::rfc3339::parse_millis(s).map_err(|e| {
            format!(
                "event-time field `{}` is `{s}`, not an RFC 3339 time ({e}); e.g. `2026-01-01T10:00:03Z` or `2026-01-01T12:00:03+02:00`",
                name()
            )
        }),
        Some(other) => Err(format!(
            "event-time field `{}` is a {}; expected milliseconds since the epoch or an RFC 3339 string",
            name(),
            other.type_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::split_path;

    fn t(json: &str) -> Result<i64, String> {
        extract_event_time(
            &Value::from_json(json.as_bytes()).expect("json"),
            &split_path("ts"),
        )
    }

    #[test]
    fn event_time_from_numbers_and_rfc3339() {
        assert_eq!(t(r#"{"ts":1500}"#), Ok(1500));
        assert_eq!(t(r#"{"ts":1500.9}"#), Ok(1500));
        assert_eq!(t(r#"{"ts":"2026-01-01T10:00:03Z"}"#), Ok(1_767_261_603_000));
        assert_eq!(
            t(r#"{"ts":"2026-01-01T10:00:03.250Z"}"#),
            Ok(1_767_261_603_250)
        );
        // An offset (once dead-lettered as "not an RFC 3339 time").
        assert_eq!(
            t(r#"{"ts":"2026-01-01T12:00:03+02:00"}"#),
            Ok(1_767_261_603_000)
        );
    }

    #[test]
    fn bad_event_times_explain_themselves() {
        assert!(t(r#"{"x":1}"#).expect_err("must fail").contains("missing"));
        assert!(t(r#"{"ts":true}"#)
            .expect_err("must fail")
            .contains("is a bool"));
        assert!(t(r#"{"ts":"yesterday"}"#)
            .expect_err("must fail")
            .contains("RFC 3339"));
    }
}
