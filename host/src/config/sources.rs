//! The `sources` section: files, stdin, Kafka (`kafka.rs`) and the Nexmark generator, and each
//! source's event time.

use std::path::Path;
use std::time::Duration;

use super::decode::{
    byte_size, choice, duration, entries, loc, positive_duration, resolve, string, uint,
    valid_name, Errors, MapReader,
};
use super::kafka::kafka_source;
use super::spec::*;
use super::yaml::{Kind, Node};
use crate::value::split_path;

const DEFAULT_BASE_TIME: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

pub(super) fn sources(node: &Node, base: &Path, errs: &mut Errors) -> Vec<SourceSpec> {
    let list = entries(node, "sources", errs);
    if list.is_empty() && matches!(node.kind, Kind::Map(_)) {
        errs.at(node, "sources: declare at least one source", None);
    }
    let mut out = Vec::new();
    for (k, v) in list {
        let name = k.scalar().unwrap_or("").to_string();
        if !valid_name(&name) {
            errs.at(
                k,
                format!("source name `{name}` may only use letters, digits, `-` and `_`"),
                None,
            );
        }
        if let Some(s) = source(&name, v, base, errs) {
            out.push(s);
        }
    }
    out
}

fn source(name: &str, node: &Node, base: &Path, errs: &mut Errors) -> Option<SourceSpec> {
    let ctx = format!("source `{name}`");
    let mut m = MapReader::new(node, &ctx, errs)?;
    let kind_node = m.required(
        "type",
        errs,
        "set `type: file`, `type: kafka`, `type: nexmark` or `type: stdin`",
    );
    let kind = kind_node.and_then(|n| {
        choice(
            n,
            &["file", "kafka", "nexmark", "stdin"],
            &format!("{ctx} type"),
            errs,
        )
    });
    let kind = match kind {
        Some("file") => {
            let path = m.required(
                "path",
                errs,
                "set `path:` to a file or a glob like `input/*.jsonl`",
            );
            let max_line_bytes = max_line_bytes(&mut m, &ctx, errs);
            path.and_then(|p| string(p, &format!("{ctx} path"), errs))
                .map(|p| SourceKind::Files {
                    glob: resolve(base, &p).display().to_string(),
                    max_line_bytes,
                })
        }
        Some("stdin") => Some(SourceKind::Stdin {
            max_line_bytes: max_line_bytes(&mut m, &ctx, errs),
        }),
        Some("nexmark") => Some(SourceKind::Nexmark(nexmark(&mut m, &ctx, errs))),
        Some("kafka") => kafka_source(&mut m, &ctx, errs).map(SourceKind::Kafka),
        _ => None,
    };
    let needs_time = !matches!(
        kind,
        Some(SourceKind::Nexmark(_)) | Some(SourceKind::Kafka(_))
    );
    let event_time = match m.get("event_time") {
        Some(n) => event_time(n, &ctx, needs_time, errs),
        None => {
            if needs_time && kind.is_some() {
                errs.at(
                    node,
                    format!("{ctx}: missing required key `event_time`"),
                    Some("name the timestamp field: `event_time: { field: ts, max_out_of_orderness: 5s }`".into()),
                );
            }
            EventTimeSpec {
                field: None,
                max_out_of_orderness: Duration::ZERO,
                idle_timeout: None,
            }
        }
    };
    m.finish(errs);
    Some(SourceSpec {
        name: name.to_string(),
        kind: kind?,
        event_time,
        location: loc(node),
    })
}

/// `max_line_bytes` of a file or stdin source: longer lines are dead letters.
fn max_line_bytes(m: &mut MapReader<'_>, ctx: &str, errs: &mut Errors) -> usize {
    m.get("max_line_bytes")
        .and_then(|n| byte_size(n, &format!("{ctx} max_line_bytes"), errs))
        .unwrap_or(DEFAULT_MAX_LINE_BYTES)
}

fn nexmark(m: &mut MapReader<'_>, ctx: &str, errs: &mut Errors) -> NexmarkSpec {
    let events = m
        .get("events")
        .and_then(|n| uint(n, &format!("{ctx} events"), errs));
    let rate = m.get("rate").and_then(|n| {
        let r = uint(n, &format!("{ctx} rate"), errs)?;
        if r == 0 {
            errs.at(
                n,
                format!("{ctx}: rate must be at least 1 event/s"),
                Some("omit `rate` to generate as fast as possible".into()),
            );
        }
        Some(r)
    });
    let partitions = match m.get("partitions") {
        Some(n) => match uint(n, &format!("{ctx} partitions"), errs) {
            Some(0) => {
                errs.at(n, format!("{ctx}: partitions must be at least 1"), None);
                1
            }
            Some(p) => p.min(u64::from(u32::MAX)) as u32,
            None => 1,
        },
        None => 1,
    };
    let only = m.get("only").and_then(|n| {
        Some(
            match choice(
                n,
                &["person", "auction", "bid"],
                &format!("{ctx} only"),
                errs,
            )? {
                "person" => NexmarkEventKind::Person,
                "auction" => NexmarkEventKind::Auction,
                _ => NexmarkEventKind::Bid,
            },
        )
    });
    let base_time = match m.get("base_time") {
        Some(n) => match n.scalar() {
            Some(s) if s.parse::<i64>().is_ok() => s.parse::<i64>().unwrap_or(DEFAULT_BASE_TIME),
            Some(s) => match humantime::parse_rfc3339_weak(s) {
                Ok(t) => t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                Err(_) => {
                    errs.at(n, format!("{ctx}: base_time `{s}` is neither ms since the epoch nor an RFC 3339 time"), Some("e.g. `2024-01-01T00:00:00Z`".into()));
                    DEFAULT_BASE_TIME
                }
            },
            None => {
                errs.expected(n, "a time", &format!("{ctx} base_time"));
                DEFAULT_BASE_TIME
            }
        },
        None => DEFAULT_BASE_TIME,
    };
    NexmarkSpec {
        events,
        rate,
        partitions,
        only,
        base_time,
    }
}

fn event_time(node: &Node, ctx: &str, needs_field: bool, errs: &mut Errors) -> EventTimeSpec {
    let ctx = format!("{ctx} event_time");
    let mut spec = EventTimeSpec {
        field: None,
        max_out_of_orderness: Duration::ZERO,
        idle_timeout: None,
    };
    let Some(mut m) = MapReader::new(node, &ctx, errs) else {
        return spec;
    };
    let field = if needs_field {
        m.required(
            "field",
            errs,
            "name the field holding the timestamp, e.g. `field: ts`",
        )
    } else {
        m.get("field")
    };
    spec.field = field
        .and_then(|f| string(f, &format!("{ctx} field"), errs))
        .map(|f| split_path(&f));
    if let Some(n) = m.get("max_out_of_orderness") {
        spec.max_out_of_orderness =
            duration(n, &format!("{ctx} max_out_of_orderness"), errs).unwrap_or_default();
    }
    spec.idle_timeout = m
        .get("idle_timeout")
        .and_then(|n| positive_duration(n, &format!("{ctx} idle_timeout"), errs));
    m.finish(errs);
    spec
}
