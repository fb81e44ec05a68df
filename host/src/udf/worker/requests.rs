//! A batch's records sent to the workers: cut into requests by records and bytes, sent
//! concurrently, and their results put back in order; and a call in flight on the runtime's
//! threads ([`InFlight`], what `submit` returns).

use super::*;

/// A call of [`WorkerRuntime::submit`] in flight on the runtime's threads.
pub(super) struct InFlight {
    pub(super) task: tokio::task::JoinHandle<Result<Vec<RecordOutcome>, RuntimeError>>,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) noun: &'static str,
    pub(super) udf: String,
}

impl PendingCall for InFlight {
    fn is_ready(&self) -> bool {
        self.task.is_finished()
    }

    fn wait(self: Box<Self>) -> Result<Vec<RecordOutcome>, RuntimeError> {
        let InFlight {
            task,
            rt,
            noun,
            udf,
        } = *self;
        rt.block_on(task).unwrap_or_else(|e| {
            Err(start_error(
                noun,
                &udf,
                format!("internal error: a call in flight ended abnormally: {e}"),
            ))
        })
    }
}

/// Sends `records` in requests of at most `batch_size` records and [`MAX_REQUEST_BYTES`],
/// concurrently over the workers, and returns the results in input order. A record too big
/// for a request on its own fails by itself.
pub(super) async fn send_requests<X: Send>(
    shared: &Shared,
    function: &str,
    op: i32,
    records: Vec<proto::Record>,
    decode: fn(proto::RecordResult) -> Outcome<X>,
) -> Result<Vec<Outcome<X>>, RuntimeError> {
    let count = records.len();
    let mut records: Vec<Option<proto::Record>> = records.into_iter().map(Some).collect();
    let sizes: Vec<usize> = records
        .iter()
        .map(|r| r.as_ref().map_or(0, prost::Message::encoded_len))
        .collect();
    let plan = plan_requests(
        &sizes,
        shared.spec.batch_size.max(1),
        MAX_REQUEST_BYTES,
        MAX_RECORD_BYTES,
    );
    let requests: Vec<Vec<proto::Record>> = plan
        .requests
        .iter()
        .map(|r| {
            records[r.clone()]
                .iter_mut()
                .filter_map(Option::take)
                .collect()
        })
        .collect();
    let results = futures_util::future::join_all(
        requests
            .into_iter()
            .map(|batch| shared.call(function, op, batch, decode)),
    )
    .await;
    let mut out: Vec<Option<Outcome<X>>> = (0..count).map(|_| None).collect();
    for &i in &plan.too_large {
        out[i] = Some(Err(FunctionError::permanent(format!(
            "the record is {} bytes encoded, more than the {} MiB a worker request may hold; it was not sent",
            sizes[i],
            MAX_RECORD_BYTES >> 20
        ))));
    }
    for (range, result) in plan.requests.iter().zip(results) {
        for (slot, outcome) in out[range.clone()].iter_mut().zip(result?) {
            *slot = Some(outcome);
        }
    }
    out.into_iter()
        .map(|o| {
            o.ok_or_else(|| {
                start_error(
                    shared.launcher.noun(),
                    &shared.udf,
                    "internal error: a record got no result".into(),
                )
            })
        })
        .collect()
}

/// How a task's batch is cut into requests.
#[derive(Debug, PartialEq)]
pub(super) struct RequestPlan {
    /// Consecutive records per request (records too large for any request left out).
    pub(super) requests: Vec<std::ops::Range<usize>>,
    /// Records that are too large to send at all.
    pub(super) too_large: Vec<usize>,
}

/// Cuts records of the given encoded sizes into requests of at most `max_records` records and
/// `max_bytes` bytes (a single record above `max_bytes` but within `max_record` goes alone);
/// records above `max_record` are not sent.
pub(super) fn plan_requests(
    sizes: &[usize],
    max_records: usize,
    max_bytes: usize,
    max_record: usize,
) -> RequestPlan {
    let mut requests = Vec::new();
    let mut too_large = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max_record {
            if start < i {
                requests.push(start..i);
            }
            too_large.push(i);
            start = i + 1;
            bytes = 0;
            continue;
        }
        if i > start && (i - start >= max_records || bytes + size > max_bytes) {
            requests.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        requests.push(start..sizes.len());
    }
    RequestPlan {
        requests,
        too_large,
    }
}
