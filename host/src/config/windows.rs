//! A `window` step: its kind and size, lateness, aggregates and late-data policy.

use super::decode::{
    choice, duration, entries, positive_duration, string, suggest, Errors, MapReader,
};
use super::sinks::check_sink_ref;
use super::spec::*;
use super::yaml::{Kind, Node};
use crate::value::split_path;

const AGGREGATES: [&str; 7] = ["count", "sum", "min", "max", "avg", "count_distinct", "udf"];

pub(super) fn window(
    node: &Node,
    ctx: &str,
    sinks: &[&str],
    errs: &mut Errors,
) -> Option<WindowSpec> {
    let ctx = format!("{ctx} window");
    let mut m = MapReader::new(node, &ctx, errs)?;
    let kind = m
        .required(
            "type",
            errs,
            "set `type: tumbling` (with size), `sliding` (size, slide) or `session` (gap)",
        )
        .and_then(|n| {
            choice(
                n,
                &["tumbling", "sliding", "session"],
                &format!("{ctx} type"),
                errs,
            )
        });
    let need = |m: &mut MapReader<'_>, key: &'static str, errs: &mut Errors| {
        m.required(
            key,
            errs,
            &format!(
                "a {} window needs `{key}`, e.g. `{key}: 1m`",
                kind.unwrap_or("")
            ),
        )
        .and_then(|n| positive_duration(n, &format!("{ctx} {key}"), errs))
    };
    let kind = match kind {
        Some("tumbling") => need(&mut m, "size", errs).map(|size| WindowKind::Tumbling { size }),
        Some("sliding") => {
            let size = need(&mut m, "size", errs);
            let slide_node = m.get("slide");
            let slide = need(&mut m, "slide", errs);
            match (size, slide) {
                (Some(size), Some(slide)) => {
                    let node = slide_node.unwrap_or(node);
                    if slide > size {
                        errs.at(
                            node,
                            format!(
                                "{ctx}: slide ({}) is longer than size ({})",
                                humantime::format_duration(slide),
                                humantime::format_duration(size)
                            ),
                            Some("use a tumbling window, or make slide <= size".into()),
                        );
                        None
                    } else if size.as_millis() % slide.as_millis().max(1) != 0 {
                        errs.at(
                            node,
                            format!(
                                "{ctx}: size ({}) must be a multiple of slide ({})",
                                humantime::format_duration(size),
                                humantime::format_duration(slide)
                            ),
                            Some("e.g. size 10s with slide 2s or 5s".into()),
                        );
                        None
                    } else {
                        Some(WindowKind::Sliding { size, slide })
                    }
                }
                _ => None,
            }
        }
        Some("session") => need(&mut m, "gap", errs).map(|gap| WindowKind::Session { gap }),
        _ => None,
    };
    let allowed_lateness = m
        .get("allowed_lateness")
        .and_then(|n| duration(n, &format!("{ctx} allowed_lateness"), errs))
        .unwrap_or_default();
    let aggregates = match m.required(
        "aggregates",
        errs,
        "e.g. `aggregates: { n: count(), total: sum(price) }`",
    ) {
        Some(a) => aggregates(a, &ctx, errs),
        None => Vec::new(),
    };
    let late = match m.get("late") {
        None => LatePolicy::Dlq,
        Some(n) => match &n.kind {
            Kind::Scalar { text, .. } if text == "drop" => LatePolicy::Drop,
            Kind::Scalar { text, .. } if text == "dlq" => LatePolicy::Dlq,
            Kind::Map(_) => {
                let mut lm = MapReader::new(n, &format!("{ctx} late"), errs)?;
                let sink = lm
                    .required("sink", errs, "name a sink: `late: { sink: late_records }`")
                    .and_then(|s| {
                        let name = string(s, &format!("{ctx} late.sink"), errs)?;
                        check_sink_ref(&name, s, sinks, &format!("{ctx} late"), errs);
                        Some(name)
                    });
                lm.finish(errs);
                LatePolicy::Sink(sink.unwrap_or_default())
            }
            _ => {
                errs.at(
                    n,
                    format!(
                        "{ctx} late: expected `drop`, `dlq` or `{{ sink: NAME }}`, found {}",
                        n.describe()
                    ),
                    None,
                );
                LatePolicy::Dlq
            }
        },
    };
    m.finish(errs);
    Some(WindowSpec {
        kind: kind?,
        allowed_lateness,
        aggregates,
        late,
    })
}

fn aggregates(node: &Node, ctx: &str, errs: &mut Errors) -> Vec<AggregateSpec> {
    let ctx = format!("{ctx} aggregates");
    let list = entries(node, &ctx, errs);
    if list.is_empty() && matches!(node.kind, Kind::Map(_)) {
        errs.at(node, format!("{ctx}: declare at least one aggregate"), None);
    }
    let mut out = Vec::new();
    for (k, v) in list {
        let name = k.scalar().unwrap_or("").to_string();
        let Some(text) = string(v, &format!("{ctx}.{name}"), errs) else {
            continue;
        };
        let parsed = text
            .trim()
            .strip_suffix(')')
            .and_then(|t| t.split_once('('));
        let Some((func, arg)) = parsed else {
            errs.at(
                v,
                format!("{ctx}.{name}: `{text}` is not an aggregate call"),
                Some(format!(
                    "write `fn(field)` with fn one of: {}; or `count()`",
                    AGGREGATES.join(", ")
                )),
            );
            continue;
        };
        let (func, arg) = (func.trim(), arg.trim());
        let f = match func {
            "count" => AggregateFn::Count,
            "sum" => AggregateFn::Sum,
            "min" => AggregateFn::Min,
            "max" => AggregateFn::Max,
            "avg" => AggregateFn::Avg,
            "count_distinct" => AggregateFn::CountDistinct,
            "udf" => AggregateFn::Udf,
            other => {
                let hint = match suggest(other, &AGGREGATES) {
                    Some(s) => format!("did you mean `{s}`? aggregates: {}", AGGREGATES.join(", ")),
                    None => format!("aggregates: {}", AGGREGATES.join(", ")),
                };
                errs.at(
                    v,
                    format!("{ctx}.{name}: unknown aggregate `{other}`"),
                    Some(hint),
                );
                continue;
            }
        };
        let field = match (f, arg.is_empty()) {
            (AggregateFn::Udf, false) => None,
            (AggregateFn::Count, true) => None,
            (AggregateFn::Count, false) => {
                errs.at(
                    v,
                    format!("{ctx}.{name}: `count` counts records and takes no field"),
                    Some("write `count()`; use `count_distinct(field)` for distinct values".into()),
                );
                continue;
            }
            (_, true) => {
                errs.at(
                    v,
                    format!("{ctx}.{name}: `{func}` needs a field, e.g. `{func}(price)`"),
                    None,
                );
                continue;
            }
            (_, false) => Some(split_path(arg)),
        };
        out.push(AggregateSpec {
            func: f,
            field,
            name,
            udf: (f == AggregateFn::Udf).then(|| arg.to_string()),
        });
    }
    out
}
