//! The options every worker-process runtime (Python, Go, ...) shares.

use std::time::Duration;

use crate::config::spec::{RuntimeOptions, UdfSpec};
use crate::config::OptionsReader;
use crate::udf::registry::{options, CallBatching};

/// The options of a worker-process runtime, which include the shared worker options.
pub trait WorkerOptions: RuntimeOptions {
    fn sidecar(&self) -> &SidecarSpec;
}

/// How the UDF step of `udf`, a UDF of a worker runtime whose options are `T`, batches
/// records: requests of at most `batch_size`, waiting up to `linger` to fill one.
pub fn batching<T: WorkerOptions>(udf: &UdfSpec) -> CallBatching {
    options::<T>(udf)
        .map(|o| o.sidecar().batching())
        .unwrap_or_default()
}

/// How many workers, how records are batched into requests, how long a request may take, or
/// where a running worker is.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarSpec {
    /// Worker processes for this UDF (default 1).
    pub workers: usize,
    /// How long one batch may take before the worker is restarted and the batch resent.
    pub timeout: Duration,
    /// Most records sent in one request; larger batches are split and sent concurrently.
    pub batch_size: usize,
    /// Longest a record waits for more to fill a request (zero: send what the task has).
    pub linger: Duration,
    /// Connect to an already-running worker (`unix:/path.sock` or `http://host:port`, e.g. a
    /// sidecar container) instead of starting processes.
    pub endpoint: Option<String>,
}

impl SidecarSpec {
    /// Reads `workers`, `batch_size`, `timeout`, `linger` and `endpoint`.
    pub fn read(r: &mut OptionsReader<'_, '_>) -> SidecarSpec {
        let workers = r.count("workers", 1);
        let batch_size = r.count("batch_size", 512);
        let timeout = r
            .positive_duration("timeout")
            .unwrap_or(Duration::from_secs(30));
        let linger = r.duration("linger").unwrap_or(Duration::ZERO);
        let endpoint = r.string("endpoint").and_then(|text| {
            if text.starts_with("unix:") || text.starts_with("http://") {
                Some(text)
            } else {
                let ctx = r.context().to_string();
                r.error_at(
                    "endpoint",
                    format!(
                        "{ctx}: endpoint `{text}` is neither `unix:/path` nor `http://host:port`"
                    ),
                    Some("e.g. `endpoint: http://127.0.0.1:50051` for a sidecar container".into()),
                );
                None
            }
        });
        SidecarSpec {
            workers,
            timeout,
            batch_size,
            linger,
            endpoint,
        }
    }

    fn batching(&self) -> CallBatching {
        CallBatching {
            max_records: self.batch_size,
            linger: self.linger,
        }
    }
}
