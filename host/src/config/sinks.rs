//! The `sinks` section, and references to declared sinks from elsewhere in the file.

use std::path::Path;

use super::decode::{
    choice, entries, loc, resolve, string, suggest, valid_name, Errors, MapReader,
};
use super::kafka::kafka_sink;
use super::spec::*;
use super::yaml::{Kind, Node};

pub(super) fn check_sink_ref(
    name: &str,
    node: &Node,
    sinks: &[&str],
    context: &str,
    errs: &mut Errors,
) {
    if !sinks.contains(&name) {
        let hint = match suggest(name, sinks) {
            Some(s) => format!("did you mean `{s}`? declared sinks: {}", sinks.join(", ")),
            None => format!("declared sinks: {}", sinks.join(", ")),
        };
        errs.at(
            node,
            format!("{context}: sink `{name}` is not declared in `sinks`"),
            Some(hint),
        );
    }
}

pub(super) fn sinks(node: &Node, base: &Path, errs: &mut Errors) -> Vec<SinkSpec> {
    let list = entries(node, "sinks", errs);
    if list.is_empty() && matches!(node.kind, Kind::Map(_)) {
        errs.at(node, "sinks: declare at least one sink", None);
    }
    let mut out = Vec::new();
    for (k, v) in list {
        let name = k.scalar().unwrap_or("").to_string();
        if !valid_name(&name) {
            errs.at(
                k,
                format!("sink name `{name}` may only use letters, digits, `-` and `_`"),
                None,
            );
        }
        let ctx = format!("sink `{name}`");
        let Some(mut m) = MapReader::new(v, &ctx, errs) else {
            continue;
        };
        let kind = m
            .required(
                "type",
                errs,
                "set `type: file`, `type: kafka`, `type: stdout` or `type: blackhole`",
            )
            .and_then(|n| {
                choice(
                    n,
                    &["file", "kafka", "stdout", "blackhole"],
                    &format!("{ctx} type"),
                    errs,
                )
            });
        let kind = match kind {
            Some("file") => m
                .required(
                    "path",
                    errs,
                    "set `path:` to the output file, e.g. `out/results.jsonl`",
                )
                .and_then(|p| string(p, &format!("{ctx} path"), errs))
                .map(|p| SinkKind::File {
                    path: resolve(base, &p),
                }),
            Some("stdout") => Some(SinkKind::Stdout),
            Some("blackhole") => Some(SinkKind::Blackhole),
            Some("kafka") => kafka_sink(&mut m, &ctx, errs).map(SinkKind::Kafka),
            _ => None,
        };
        m.finish(errs);
        if let Some(kind) = kind {
            out.push(SinkSpec {
                name,
                kind,
                location: loc(v),
            });
        }
    }
    out
}
