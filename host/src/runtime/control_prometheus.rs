//! `GET /metrics`: the run's counters in Prometheus's text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::metrics::{DeadLetterCause, Metrics};
use crate::record::{WATERMARK_END, WATERMARK_START};

/// A per-cause series: its name, kind, help text and value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&DeadLetterCause) -> f64,
);

pub(super) fn prometheus(pipeline: &str, metrics: &Metrics, started: Instant) -> String {
    let t = metrics.snapshot();
    let p = pipeline.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(s, "# HELP headwater_{name} {help}");
        let _ = writeln!(s, "# TYPE headwater_{name} {kind}");
        let _ = writeln!(s, "headwater_{name}{{pipeline=\"{p}\"}} {value}");
    };
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the run started.",
        started.elapsed().as_secs_f64(),
    );
    metric(
        "records_in_total",
        "counter",
        "Records read by the sources.",
        t.records_in as f64,
    );
    metric(
        "records_out_total",
        "counter",
        "Records written to the main output.",
        t.records_out as f64,
    );
    metric(
        "late_records_total",
        "counter",
        "Records later than their window's allowed lateness.",
        t.late as f64,
    );
    metric(
        "dead_letters_total",
        "counter",
        "Records sent to the dead-letter queue.",
        t.dead_letters as f64,
    );
    metric(
        "remediated_records_total",
        "counter",
        "Failed records a step's remediation repaired and sent through the step again.",
        t.remediated as f64,
    );
    metric(
        "remediation_dropped_records_total",
        "counter",
        "Failed records a step's remediation dropped.",
        t.remediation_dropped as f64,
    );
    let a = t.accounting();
    metric(
        "filtered_records_total",
        "counter",
        "Records a step removed on purpose (a filter, or a function that returned nothing).",
        a.filtered as f64,
    );
    metric(
        "records_into_state_total",
        "counter",
        "Records taken into state: added to windows or to a keyed function's state.",
        a.into_state as f64,
    );
    metric(
        "records_made_total",
        "counter",
        "Records steps made: a flat map's extra outputs, fired windows, keyed functions' outputs.",
        a.made as f64,
    );
    metric(
        "replayed_records_total",
        "counter",
        "Dead letters sent back in by `headwater dlq replay` (counted among the records read).",
        a.replayed as f64,
    );
    metric(
        "records_in_flight",
        "gauge",
        "Records read or made and not yet output, filtered, taken into state, dead, late or dropped.",
        a.in_flight() as f64,
    );
    metric(
        "backpressure_seconds_total",
        "counter",
        "Time tasks spent blocked on full downstream channels.",
        metrics.backpressure_seconds(),
    );
    let c = metrics.checkpoint_stats();
    metric(
        "checkpoints_completed_total",
        "counter",
        "Checkpoints completed (manifest written, output committed).",
        c.completed as f64,
    );
    metric(
        "checkpoints_failed_total",
        "counter",
        "Checkpoints abandoned (timed out) or declined (their storage failed).",
        c.failed as f64,
    );
    if c.last_id.is_some() {
        metric(
            "checkpoint_last_duration_seconds",
            "gauge",
            "Duration of the last completed checkpoint, from trigger to manifest written.",
            c.last_duration_ms as f64 / 1000.0,
        );
        metric(
            "checkpoint_last_state_bytes",
            "gauge",
            "Total size of the state files the last checkpoint needs.",
            c.last_state_bytes as f64,
        );
        metric(
            "checkpoint_last_uploaded_bytes",
            "gauge",
            "Bytes the last checkpoint uploaded (the rest was shared with earlier ones).",
            c.last_uploaded_bytes as f64,
        );
    }
    if t.watermark != WATERMARK_START && t.watermark != WATERMARK_END {
        metric(
            "watermark_ms",
            "gauge",
            "Output watermark, ms since the epoch.",
            t.watermark as f64,
        );
    }
    if let Some(lag) = t.lag() {
        metric(
            "watermark_lag_seconds",
            "gauge",
            "Newest event time read minus the output watermark.",
            lag.as_secs_f64(),
        );
    }
    let _ = writeln!(
        s,
        "# HELP headwater_dead_letters_by_step_total Dead letters per step."
    );
    let _ = writeln!(s, "# TYPE headwater_dead_letters_by_step_total counter");
    if let Ok(by_step) = metrics.dlq_by_step.lock() {
        for (step, n) in by_step.iter() {
            let step = step.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                s,
                "headwater_dead_letters_by_step_total{{pipeline=\"{p}\",step=\"{step}\"}} {n}"
            );
        }
    }
    cause_metrics(&mut s, &p, &metrics.causes());
    breaker_metrics(&mut s, &p, metrics);
    s
}

/// Each UDF's circuit breaker: open or not, how often it opened, records it held.
fn breaker_metrics(s: &mut String, p: &str, metrics: &Metrics) {
    let Ok(breakers) = metrics.breakers.lock() else {
        return;
    };
    type Read = fn(&crate::metrics::BreakerStatus) -> f64;
    let series: [(&str, &str, &str, Read); 3] = [
        (
            "udf_circuit_open",
            "gauge",
            "1 while the UDF's circuit breaker is open (an outage: calls paused, records held).",
            |b| f64::from(u8::from(b.open.load(Ordering::Relaxed))),
        ),
        (
            "udf_circuit_openings_total",
            "counter",
            "Times the UDF's circuit breaker opened.",
            |b| b.openings.load(Ordering::Relaxed) as f64,
        ),
        (
            "udf_circuit_held_records_total",
            "counter",
            "Records held instead of dead-lettered while the breaker was open.",
            |b| b.held.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(s, "# HELP headwater_{name} {help}");
        let _ = writeln!(s, "# TYPE headwater_{name} {kind}");
        for (udf, b) in breakers.iter() {
            let udf = udf.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                s,
                "headwater_{name}{{pipeline=\"{p}\",udf=\"{udf}\"}} {}",
                value(b)
            );
        }
    }
}

/// Dead letters per cause: how many (the group's depth), and when the first and the latest
/// failed (its age: `time() - headwater_dead_letter_cause_first_failure_timestamp_seconds`).
fn cause_metrics(s: &mut String, p: &str, causes: &[DeadLetterCause]) {
    let series: [Series; 3] = [
        (
            "dead_letters_by_cause_total",
            "counter",
            "Dead letters per cause (fingerprint: step, error type, message without its data).",
            |c| c.count as f64,
        ),
        (
            "dead_letter_cause_first_failure_timestamp_seconds",
            "gauge",
            "When the cause's first dead letter failed (Unix seconds).",
            |c| c.first_ms as f64 / 1000.0,
        ),
        (
            "dead_letter_cause_last_failure_timestamp_seconds",
            "gauge",
            "When the cause's latest dead letter failed (Unix seconds).",
            |c| c.last_ms as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(s, "# HELP headwater_{name} {help}");
        let _ = writeln!(s, "# TYPE headwater_{name} {kind}");
        for c in causes {
            let label = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                s,
                "headwater_{name}{{pipeline=\"{p}\",fingerprint=\"{}\",step=\"{}\",error_type=\"{}\"}} {}",
                label(&c.fingerprint),
                label(&c.step),
                label(&c.error_type),
                value(c)
            );
        }
    }
}
