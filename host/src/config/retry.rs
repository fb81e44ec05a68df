//! `retry:` — how transient UDF failures are retried. Written at the top level for every UDF,
//! and under a UDF for that one: a UDF's keys replace the pipeline's one by one.

use std::time::Duration;

use super::decode::{duration, positive_duration, uint, Errors, MapReader};
use super::spec::{BreakerSpec, RetrySpec};
use super::yaml::Node;

/// More attempts than this are a mistake (a record would hold its task for minutes).
const MAX_ATTEMPTS: u64 = 100;

/// Reads a `retry:` mapping over `base`: the keys it has replace `base`'s.
pub(super) fn retry(node: &Node, context: &str, base: RetrySpec, errs: &mut Errors) -> RetrySpec {
    let mut out = base;
    let Some(mut m) = MapReader::new(node, context, errs) else {
        return out;
    };
    if let Some(n) = m.get("max_attempts") {
        match uint(n, &format!("{context} max_attempts"), errs) {
            Some(a) if (1..=MAX_ATTEMPTS).contains(&a) => out.max_attempts = a as u32,
            Some(a) => errs.at(
                n,
                format!("{context} max_attempts must be between 1 and {MAX_ATTEMPTS}, not {a}"),
                Some("it counts the first attempt: `1` turns retries off".into()),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("initial_backoff") {
        if let Some(d) = duration(n, &format!("{context} initial_backoff"), errs) {
            out.initial_backoff = d;
        }
    }
    if let Some(n) = m.get("max_backoff") {
        if let Some(d) = duration(n, &format!("{context} max_backoff"), errs) {
            out.max_backoff = d;
        }
    }
    if let Some(n) = m.get("breaker") {
        out.breaker = breaker(n, &format!("{context} breaker"), out.breaker, errs);
    }
    m.finish(errs);
    if out.max_backoff < out.initial_backoff {
        errs.at(
            node,
            format!(
                "{context}: max_backoff ({}) is shorter than initial_backoff ({})",
                show(out.max_backoff),
                show(out.initial_backoff)
            ),
            Some("raise max_backoff, or lower initial_backoff, so waits can grow".into()),
        );
        out.max_backoff = out.initial_backoff;
    }
    out
}

/// `breaker: off`, or a mapping of the keys to change.
fn breaker(node: &Node, context: &str, base: BreakerSpec, errs: &mut Errors) -> BreakerSpec {
    let mut out = base;
    match node.scalar() {
        Some("off") => {
            out.enabled = false;
            return out;
        }
        Some("on") => {
            out.enabled = true;
            return out;
        }
        _ => {}
    }
    let Some(mut m) = MapReader::new(node, context, errs) else {
        return out;
    };
    out.enabled = true;
    if let Some(n) = m.get("failure_percent") {
        match uint(n, &format!("{context} failure_percent"), errs) {
            Some(p) if (1..=100).contains(&p) => out.failure_percent = p as u32,
            Some(p) => errs.at(
                n,
                format!("{context} failure_percent must be between 1 and 100, not {p}"),
                None,
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("min_records") {
        match uint(n, &format!("{context} min_records"), errs) {
            Some(r) if (1..=100).contains(&r) => out.min_records = r as u32,
            Some(r) => errs.at(
                n,
                format!("{context} min_records must be between 1 and 100 (the breaker looks at the last 100 records), not {r}"),
                None,
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("cool_down") {
        if let Some(d) = positive_duration(n, &format!("{context} cool_down"), errs) {
            out.cool_down = d;
        }
    }
    if let Some(n) = m.get("max_pause") {
        if let Some(d) = duration(n, &format!("{context} max_pause"), errs) {
            out.max_pause = d;
        }
    }
    m.finish(errs);
    out
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
