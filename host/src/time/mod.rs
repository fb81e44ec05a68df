//! Event time: watermarks per partition and across inputs, and window assignment.

pub mod rfc3339;
pub mod watermark;
pub mod windows;

pub use watermark::{InputWatermarks, PartitionClock};
pub use windows::{TimeWindow, WindowAssigner};

/// Formats an event time (ms since epoch) for people: RFC 3339, or `-inf` / `+inf`.
pub fn format_time(ms: i64) -> String {
    match ms {
        i64::MIN => "-inf".to_string(),
        i64::MAX => "+inf".to_string(),
        ms if ms >= 0 => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            humantime::format_rfc3339_millis(t).to_string()
        }
        ms => format!("{ms}ms"),
    }
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
