//! Builds a [`PipelineSpec`] from the YAML tree, section by section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::decode::{
    byte_size, choice, duration, positive_duration, string, string_list, suggest, uint, Errors,
    MapReader,
};
use super::spec::*;
use super::yaml::{Kind, Node};
use crate::expr::Expr;
use crate::value::split_path;

const DEFAULT_BASE_TIME: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

fn loc(node: &Node) -> Location {
    Location {
        line: node.line,
        col: node.col,
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn entries<'a>(node: &'a Node, context: &str, errs: &mut Errors) -> &'a [(Node, Node)] {
    match &node.kind {
        Kind::Map(e) => e,
        _ => {
            errs.expected(node, "a mapping of names to definitions", context);
            &[]
        }
    }
}

pub fn pipeline(root: &Node, base: &Path, errs: &mut Errors) -> Option<PipelineSpec> {
    let mut top = MapReader::new(root, "the pipeline file", errs)?;
    let name = match top.required(
        "name",
        errs,
        "add `name: my-pipeline` (letters, digits, `-`, `_`)",
    ) {
        Some(n) => {
            let s = string(n, "name", errs).unwrap_or_default();
            if !valid_name(&s) {
                errs.at(
                    n,
                    format!("name `{s}` may only use letters, digits, `-` and `_`"),
                    None,
                );
            }
            s
        }
        None => String::new(),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let parallelism = match top.get("parallelism") {
        Some(n) => match uint(n, "parallelism", errs) {
            Some(0) => {
                errs.at(
                    n,
                    "parallelism must be at least 1",
                    Some("omit it to use one task per CPU core".into()),
                );
                1
            }
            Some(p) => p as usize,
            None => 1,
        },
        None => cores,
    };
    let max_parallelism = match top.get("max_parallelism") {
        Some(n) => {
            match uint(n, "max_parallelism", errs) {
                Some(m) if (1..=32768).contains(&m) => {
                    if (m as usize) < parallelism {
                        errs.at(n, format!("max_parallelism ({m}) must be at least parallelism ({parallelism})"), None);
                    }
                    m as u32
                }
                Some(m) => {
                    errs.at(
                        n,
                        format!("max_parallelism must be between 1 and 32768, not {m}"),
                        None,
                    );
                    128
                }
                None => 128,
            }
        }
        None => 128,
    };
    let sources = match top.required("sources", errs, "declare at least one source, e.g. `sources: { input: { type: file, path: in.jsonl, event_time: { field: ts } } }`") {
        Some(n) => sources(n, base, errs),
        None => Vec::new(),
    };
    let sinks = match top.required(
        "sinks",
        errs,
        "declare at least one sink, e.g. `sinks: { out: { type: stdout } }`",
    ) {
        Some(n) => sinks(n, base, errs),
        None => Vec::new(),
    };
    let sink_names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    let udfs = top
        .get("udfs")
        .map(|n| udfs(n, base, errs))
        .unwrap_or_default();
    let steps = top
        .get("steps")
        .map(|n| steps(n, &sink_names, &udfs, errs))
        .unwrap_or_default();
    let output = match top.required(
        "output",
        errs,
        "name the sink(s) that receive the results, e.g. `output: out`",
    ) {
        Some(n) => string_list(n, "output", errs)
            .into_iter()
            .map(|(s, node)| {
                check_sink_ref(&s, node, &sink_names, "output", errs);
                s
            })
            .collect(),
        None => Vec::new(),
    };
    let default_dir = base.join(".headwater").join(&name);
    let state = StateSpec {
        dir: match top.get("state") {
            Some(n) => {
                let mut m = MapReader::new(n, "state", errs);
                let dir = m
                    .as_mut()
                    .and_then(|m| m.get("dir"))
                    .and_then(|d| string(d, "state.dir", errs));
                if let Some(m) = m {
                    m.finish(errs);
                }
                dir.map(|d| resolve(base, &d))
                    .unwrap_or_else(|| default_dir.join("state"))
            }
            None => default_dir.join("state"),
        },
    };
    let mut dlq = DlqSpec {
        path: default_dir.join("dlq.jsonl"),
        sink: None,
    };
    if let Some(n) = top.get("dlq") {
        if let Some(mut m) = MapReader::new(n, "dlq", errs) {
            let path = m.get("path");
            let sink = m.get("sink");
            if let (Some(p), Some(_)) = (path, sink) {
                errs.at(
                    p,
                    "dlq: give either `path` (a file) or `sink` (a declared sink), not both",
                    None,
                );
            }
            if let Some(d) = path.and_then(|d| string(d, "dlq.path", errs)) {
                dlq.path = resolve(base, &d);
            }
            if let Some(s) = sink {
                if let Some(name) = string(s, "dlq.sink", errs) {
                    let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
                    check_sink_ref(&name, s, &names, "dlq", errs);
                    dlq.sink = Some(name);
                }
            }
            m.finish(errs);
        }
    }
    let checkpoint = checkpoint(top.get("checkpoint"), base, &default_dir, errs);
    let tuning = top
        .get("tuning")
        .map(|n| tuning(n, errs))
        .unwrap_or_default();
    top.finish(errs);
    Some(PipelineSpec {
        name,
        parallelism,
        max_parallelism,
        sources,
        steps,
        sinks,
        output,
        udfs,
        state,
        dlq,
        checkpoint,
        tuning,
        base_dir: base.to_path_buf(),
    })
}

fn check_sink_ref(name: &str, node: &Node, sinks: &[&str], context: &str, errs: &mut Errors) {
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

fn sources(node: &Node, base: &Path, errs: &mut Errors) -> Vec<SourceSpec> {
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

/// `brokers:` (required) and `properties:` (a map of librdkafka settings), shared by Kafka
/// sources and sinks.
fn kafka_common(
    m: &mut MapReader<'_>,
    ctx: &str,
    errs: &mut Errors,
) -> (Option<String>, Vec<(String, String)>) {
    let brokers = m
        .required(
            "brokers",
            errs,
            "set `brokers:` to the bootstrap servers, e.g. `brokers: 127.0.0.1:9092`",
        )
        .and_then(|n| string(n, &format!("{ctx} brokers"), errs));
    let mut properties = Vec::new();
    if let Some(n) = m.get("properties") {
        for (k, v) in entries(n, &format!("{ctx} properties"), errs) {
            let key = k.scalar().unwrap_or("").to_string();
            if let Some(value) = string(v, &format!("{ctx} properties.{key}"), errs) {
                properties.push((key, value));
            }
        }
    }
    (brokers, properties)
}

fn kafka_source(m: &mut MapReader<'_>, ctx: &str, errs: &mut Errors) -> Option<KafkaSourceSpec> {
    let topics: Vec<String> = match (m.get("topic"), m.get("topics")) {
        (Some(n), None) | (None, Some(n)) => string_list(n, &format!("{ctx} topic"), errs)
            .into_iter()
            .map(|(t, _)| t)
            .collect(),
        (Some(n), Some(_)) => {
            errs.at(
                n,
                format!("{ctx}: give either `topic` or `topics`, not both"),
                None,
            );
            Vec::new()
        }
        (None, None) => {
            errs.at(
                m.node(),
                format!("{ctx}: missing required key `topic`"),
                Some("name the topic to read: `topic: rides` (or `topics: [a, b]`)".into()),
            );
            Vec::new()
        }
    };
    let (brokers, properties) = kafka_common(m, ctx, errs);
    let group = m
        .get("group")
        .and_then(|n| string(n, &format!("{ctx} group"), errs));
    let format = match m.get("format") {
        Some(n) => match choice(n, &["json", "raw"], &format!("{ctx} format"), errs) {
            Some("raw") => KafkaFormat::Raw,
            _ => KafkaFormat::Json,
        },
        None => KafkaFormat::Json,
    };
    let start = match m.get("start") {
        Some(n) => match choice(n, &["earliest", "latest"], &format!("{ctx} start"), errs) {
            Some("latest") => KafkaStart::Latest,
            _ => KafkaStart::Earliest,
        },
        None => KafkaStart::Earliest,
    };
    let until_end = match m.get("until") {
        Some(n) => choice(n, &["end"], &format!("{ctx} until"), errs).is_some(),
        None => false,
    };
    let max_record_bytes = m
        .get("max_record_bytes")
        .and_then(|n| byte_size(n, &format!("{ctx} max_record_bytes"), errs))
        .unwrap_or(1 << 20);
    if topics.is_empty() {
        return None;
    }
    Some(KafkaSourceSpec {
        topics,
        brokers: brokers?,
        group,
        format,
        start,
        until_end,
        max_record_bytes,
        properties,
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

fn sinks(node: &Node, base: &Path, errs: &mut Errors) -> Vec<SinkSpec> {
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

fn kafka_sink(m: &mut MapReader<'_>, ctx: &str, errs: &mut Errors) -> Option<KafkaSinkSpec> {
    let topic = m
        .required("topic", errs, "name the topic to write: `topic: surge`")
        .and_then(|n| string(n, &format!("{ctx} topic"), errs));
    let (brokers, properties) = kafka_common(m, ctx, errs);
    let key = m
        .get("key")
        .and_then(|n| string(n, &format!("{ctx} key"), errs))
        .map(|k| split_path(&k));
    let delivery = match m.get("delivery") {
        Some(n) => match choice(
            n,
            &["exactly_once", "at_least_once"],
            &format!("{ctx} delivery"),
            errs,
        ) {
            Some("at_least_once") => Delivery::AtLeastOnce,
            _ => Delivery::ExactlyOnce,
        },
        None => Delivery::ExactlyOnce,
    };
    let transactional_id = m
        .get("transactional_id")
        .and_then(|n| string(n, &format!("{ctx} transactional_id"), errs));
    let commit_topic = m
        .get("commit_topic")
        .and_then(|n| string(n, &format!("{ctx} commit_topic"), errs))
        .unwrap_or_else(|| "headwater.commits".to_string());
    Some(KafkaSinkSpec {
        topic: topic?,
        brokers: brokers?,
        key,
        delivery,
        transactional_id,
        commit_topic,
        properties,
    })
}

fn udfs(node: &Node, base: &Path, errs: &mut Errors) -> Vec<UdfSpec> {
    let mut out = Vec::new();
    for (k, v) in entries(node, "udfs", errs) {
        let name = k.scalar().unwrap_or("").to_string();
        let ctx = format!("udf `{name}`");
        let Some(mut m) = MapReader::new(v, &ctx, errs) else {
            continue;
        };
        let runtime = m
            .required(
                "runtime",
                errs,
                "set `runtime: python`, `runtime: go`, `runtime: wasm` or `runtime: native`",
            )
            .and_then(|n| {
                choice(
                    n,
                    &["native", "python", "python-inproc", "go", "wasm"],
                    &format!("{ctx} runtime"),
                    errs,
                )
            });
        let runtime = match runtime {
            Some("python") => python_spec(&mut m, &ctx, base, errs).map(UdfRuntimeKind::Python),
            Some("python-inproc") => {
                python_spec(&mut m, &ctx, base, errs).map(UdfRuntimeKind::PythonInproc)
            }
            Some("go") => go_spec(&mut m, &ctx, base, errs).map(UdfRuntimeKind::Go),
            Some("wasm") => wasm_spec(&mut m, &ctx, base, errs).map(UdfRuntimeKind::Wasm),
            Some(_) => Some(UdfRuntimeKind::Native),
            None => None,
        };
        let function = m
            .required(
                "function",
                errs,
                "name the function to call, e.g. `function: geohash`",
            )
            .and_then(|n| string(n, &format!("{ctx} function"), errs));
        let kind = match m.get("kind") {
            Some(n) => match choice(
                n,
                &[
                    "map",
                    "filter",
                    "flat_map",
                    "keyed_process",
                    "window_aggregate",
                ],
                &format!("{ctx} kind"),
                errs,
            ) {
                Some("filter") => UdfKind::Filter,
                Some("flat_map") => UdfKind::FlatMap,
                Some("keyed_process") => UdfKind::KeyedProcess,
                Some("window_aggregate") => UdfKind::WindowAggregate,
                _ => UdfKind::Map,
            },
            None => UdfKind::Map,
        };
        m.finish(errs);
        if let (Some(runtime), Some(function)) = (runtime, function) {
            out.push(UdfSpec {
                name,
                runtime,
                function,
                kind,
                location: loc(v),
            });
        }
    }
    out
}

fn python_spec(
    m: &mut MapReader<'_>,
    ctx: &str,
    base: &Path,
    errs: &mut Errors,
) -> Option<PythonSpec> {
    let module = m
        .required(
            "module",
            errs,
            "name the Python module defining the function, e.g. `module: my_udfs`",
        )
        .and_then(|n| string(n, &format!("{ctx} module"), errs));
    let interpreter = m
        .get("python")
        .and_then(|n| string(n, &format!("{ctx} python"), errs))
        .map(|p| {
            if p.contains('/') {
                resolve(base, &p)
            } else {
                PathBuf::from(p)
            }
        });
    let path = m
        .get("path")
        .and_then(|n| string(n, &format!("{ctx} path"), errs))
        .map(|p| resolve(base, &p))
        .unwrap_or_else(|| base.to_path_buf());
    let sidecar = sidecar_spec(m, ctx, errs);
    Some(PythonSpec {
        module: module?,
        interpreter,
        path,
        sidecar,
    })
}

/// `runtime: go`: exactly one of `binary`, `package` or `endpoint`.
fn go_spec(m: &mut MapReader<'_>, ctx: &str, base: &Path, errs: &mut Errors) -> Option<GoSpec> {
    let binary = m.get("binary");
    let package = m.get("package");
    let program = match (binary, package) {
        (Some(b), None) => {
            string(b, &format!("{ctx} binary"), errs).map(|p| GoProgram::Binary(resolve(base, &p)))
        }
        (None, Some(p)) => string(p, &format!("{ctx} package"), errs)
            .map(|p| GoProgram::Package(resolve(base, &p))),
        (Some(_), Some(p)) => {
            errs.at(
                p,
                format!("{ctx}: give `binary` or `package`, not both"),
                Some("`binary: bin/worker` runs a built worker; `package: ./udfs` has the host build it".into()),
            );
            None
        }
        (None, None) => None,
    };
    let sidecar = sidecar_spec(m, ctx, errs);
    match (&program, sidecar.endpoint.is_some()) {
        (None, false) if binary.is_none() && package.is_none() => {
            errs.at(
                m.node(),
                format!("{ctx}: a Go UDF needs `package` (a Go main package the host builds), `binary` (a built worker) or `endpoint` (a running worker)"),
                Some("e.g. `package: ./udfs` next to the pipeline file".into()),
            );
            return None;
        }
        (Some(_), true) => {
            errs.at(
                m.node(),
                format!("{ctx}: `endpoint` connects to a running worker; give it or `binary`/`package`, not both"),
                None,
            );
            return None;
        }
        (None, false) => return None,
        _ => {}
    }
    Some(GoSpec { program, sidecar })
}

/// `runtime: wasm`: the module file, and its sandbox's limits and grants.
fn wasm_spec(m: &mut MapReader<'_>, ctx: &str, base: &Path, errs: &mut Errors) -> Option<WasmSpec> {
    let module = m
        .required(
            "module",
            errs,
            "name the compiled module, e.g. `module: ./target/wasm32-wasip1/release/my_udfs.wasm`",
        )
        .and_then(|n| string(n, &format!("{ctx} module"), errs))
        .map(|p| resolve(base, &p));
    let memory = m
        .get("memory")
        .and_then(|n| {
            let size = byte_size(n, &format!("{ctx} memory"), errs)?;
            if size < 1 << 20 {
                errs.at(
                    n,
                    format!("{ctx}: memory must be at least 1MiB"),
                    Some("e.g. `memory: 64MiB`".into()),
                );
                return None;
            }
            Some(size)
        })
        .unwrap_or(64 << 20);
    let timeout = m
        .get("timeout")
        .and_then(|n| positive_duration(n, &format!("{ctx} timeout"), errs))
        .unwrap_or(Duration::from_secs(5));
    let (mut allow_clock, mut allow_random) = (false, false);
    if let Some(n) = m.get("allow") {
        for (_, node) in string_list(n, &format!("{ctx} allow"), errs) {
            match choice(node, &["clock", "random"], &format!("{ctx} allow"), errs) {
                Some("clock") => allow_clock = true,
                Some(_) => allow_random = true,
                None => {}
            }
        }
    }
    Some(WasmSpec {
        module: module?,
        memory,
        timeout,
        allow_clock,
        allow_random,
    })
}

/// The options every worker-process runtime shares.
fn sidecar_spec(m: &mut MapReader<'_>, ctx: &str, errs: &mut Errors) -> SidecarSpec {
    let workers = positive_count(m.get("workers"), &format!("{ctx} workers"), 1, errs);
    let batch_size = positive_count(m.get("batch_size"), &format!("{ctx} batch_size"), 512, errs);
    let timeout = m
        .get("timeout")
        .and_then(|n| positive_duration(n, &format!("{ctx} timeout"), errs))
        .unwrap_or(Duration::from_secs(30));
    let linger = match m.get("linger") {
        Some(n) => duration(n, &format!("{ctx} linger"), errs).unwrap_or(Duration::ZERO),
        None => Duration::ZERO,
    };
    let endpoint = m.get("endpoint").and_then(|n| {
        let text = string(n, &format!("{ctx} endpoint"), errs)?;
        if text.starts_with("unix:") || text.starts_with("http://") {
            Some(text)
        } else {
            errs.at(
                n,
                format!("{ctx}: endpoint `{text}` is neither `unix:/path` nor `http://host:port`"),
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

/// A whole number of at least 1 (workers, batch sizes), `default` when absent.
fn positive_count(node: Option<&Node>, what: &str, default: usize, errs: &mut Errors) -> usize {
    let Some(n) = node else { return default };
    match uint(n, what, errs) {
        Some(0) => {
            errs.at(n, format!("{what} must be at least 1"), None);
            default
        }
        Some(v) => usize::try_from(v).unwrap_or(default),
        None => default,
    }
}

const STEP_KINDS: [&str; 5] = ["filter", "map", "key_by", "window", "udf"];

fn steps(node: &Node, sinks: &[&str], udfs: &[UdfSpec], errs: &mut Errors) -> Vec<StepSpec> {
    let Kind::Seq(items) = &node.kind else {
        errs.expected(
            node,
            "a list of steps (`- filter: ...`, `- key_by: ...`)",
            "steps",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut keyed = false;
    for (i, item) in items.iter().enumerate() {
        let ctx = format!("steps[{i}]");
        let Kind::Map(kv) = &item.kind else {
            errs.expected(item, "a one-key mapping like `- filter: \"x > 1\"`", &ctx);
            continue;
        };
        if kv.len() != 1 {
            errs.at(
                item,
                format!(
                    "{ctx}: each step has exactly one kind, found {} keys",
                    kv.len()
                ),
                Some(format!("step kinds: {}", STEP_KINDS.join(", "))),
            );
            continue;
        }
        let (k, v) = &kv[0];
        let which = k.scalar().unwrap_or("");
        let kind = match which {
            "filter" => string(v, &format!("{ctx} filter"), errs).map(|e| {
                check_expr(&e, v, &format!("{ctx} filter"), errs);
                StepKind::Filter { expr: e }
            }),
            "map" => map_step(v, &ctx, errs).map(StepKind::Map),
            "key_by" => {
                let fields: Vec<_> = string_list(v, &format!("{ctx} key_by"), errs).into_iter().map(|(f, _)| split_path(&f)).collect();
                if fields.is_empty() {
                    errs.at(v, format!("{ctx} key_by: name at least one field"), None);
                    None
                } else {
                    keyed = true;
                    Some(StepKind::KeyBy { fields })
                }
            }
            "window" => {
                if !keyed {
                    errs.at(k, format!("{ctx}: a window needs a `key_by` step before it"), Some("add `- key_by: some_field` before the window".into()));
                }
                window(v, &ctx, sinks, errs).map(StepKind::Window)
            }
            "udf" => string(v, &format!("{ctx} udf"), errs).map(|f| {
                if !udfs.iter().any(|u| u.name == f) {
                    let names: Vec<&str> = udfs.iter().map(|u| u.name.as_str()).collect();
                    let hint = match suggest(&f, &names) {
                        Some(s) => format!("did you mean `{s}`? declare UDFs under `udfs:`"),
                        None => "declare it under `udfs:`, e.g. `udfs: { name: { runtime: native, function: geohash } }`".into(),
                    };
                    errs.at(v, format!("{ctx}: udf `{f}` is not declared in `udfs`"), Some(hint));
                }
                StepKind::Udf { function: f }
            }),
            other => {
                let hint = match suggest(other, &STEP_KINDS) {
                    Some(s) => format!("did you mean `{s}`? step kinds: {}", STEP_KINDS.join(", ")),
                    None => format!("step kinds: {}", STEP_KINDS.join(", ")),
                };
                errs.at(k, format!("unknown step kind `{other}` in {ctx}"), Some(hint));
                None
            }
        };
        if let Some(kind) = kind {
            out.push(StepSpec {
                kind,
                location: loc(k),
            });
        }
    }
    out
}

fn check_expr(text: &str, node: &Node, ctx: &str, errs: &mut Errors) {
    if let Err(e) = Expr::parse(text) {
        // Point inside the scalar when it is written plainly on one line.
        let col = node.col
            + e.column.saturating_sub(1)
            + usize::from(matches!(node.kind, Kind::Scalar { quoted: true, .. }));
        errs.list.push(super::ConfigError {
            line: node.line,
            col,
            message: format!("{ctx}: invalid expression `{text}`: {}", e.message),
            hint: e.hint,
        });
    }
}

fn map_step(node: &Node, ctx: &str, errs: &mut Errors) -> Option<MapSpec> {
    let ctx = format!("{ctx} map");
    let mut m = MapReader::new(node, &ctx, errs)?;
    let mut spec = MapSpec::default();
    if let Some(c) = m.get("compute") {
        for (k, v) in entries(c, &format!("{ctx} compute"), errs) {
            let target = k.scalar().unwrap_or("").to_string();
            if let Some(text) = string(v, &format!("{ctx} compute.{target}"), errs) {
                check_expr(&text, v, &format!("{ctx} compute.{target}"), errs);
                spec.compute.push((split_path(&target), text));
            }
        }
    }
    if let Some(r) = m.get("rename") {
        for (k, v) in entries(r, &format!("{ctx} rename"), errs) {
            if let Some(to) = string(v, &format!("{ctx} rename"), errs) {
                spec.rename.push((k.scalar().unwrap_or("").to_string(), to));
            }
        }
    }
    spec.select = m.get("select").map(|s| {
        string_list(s, &format!("{ctx} select"), errs)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    });
    spec.drop = m
        .get("drop")
        .map(|s| {
            string_list(s, &format!("{ctx} drop"), errs)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        })
        .unwrap_or_default();
    if spec.compute.is_empty()
        && spec.rename.is_empty()
        && spec.select.is_none()
        && spec.drop.is_empty()
    {
        errs.at(
            node,
            format!("{ctx}: does nothing"),
            Some("give it `compute`, `rename`, `select` or `drop`".into()),
        );
    }
    m.finish(errs);
    Some(spec)
}

const AGGREGATES: [&str; 7] = ["count", "sum", "min", "max", "avg", "count_distinct", "udf"];

fn window(node: &Node, ctx: &str, sinks: &[&str], errs: &mut Errors) -> Option<WindowSpec> {
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

fn checkpoint(
    node: Option<&Node>,
    base: &Path,
    default_dir: &Path,
    errs: &mut Errors,
) -> CheckpointSpec {
    let mut c = CheckpointSpec {
        enabled: true,
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(600),
        min_pause: Duration::ZERO,
        retain: 3,
        location: local_url(&default_dir.join("checkpoints")),
        mode: CheckpointMode::Aligned,
        aligned_timeout: Duration::ZERO,
        tolerable_failures: 3,
    };
    let Some(node) = node else {
        return c;
    };
    let Some(mut m) = MapReader::new(node, "checkpoint", errs) else {
        return c;
    };
    if let Some(n) = m.get("enabled") {
        match choice(n, &["true", "false"], "checkpoint enabled", errs) {
            Some("false") => c.enabled = false,
            Some(_) => c.enabled = true,
            None => {}
        }
    }
    if let Some(d) = m
        .get("interval")
        .and_then(|n| positive_duration(n, "checkpoint interval", errs))
    {
        c.interval = d;
    }
    if let Some(d) = m
        .get("timeout")
        .and_then(|n| positive_duration(n, "checkpoint timeout", errs))
    {
        c.timeout = d;
    }
    if let Some(d) = m
        .get("min_pause")
        .and_then(|n| duration(n, "checkpoint min_pause", errs))
    {
        c.min_pause = d;
    }
    if let Some(n) = m.get("retain") {
        match uint(n, "checkpoint retain", errs) {
            Some(0) => errs.at(
                n,
                "checkpoint retain must be at least 1",
                Some("keep at least the newest checkpoint; 3 is a good default".into()),
            ),
            Some(r) => c.retain = r as usize,
            None => {}
        }
    }
    if let Some(n) = m.get("mode") {
        match choice(n, &["aligned", "unaligned"], "checkpoint mode", errs) {
            Some("unaligned") => c.mode = CheckpointMode::Unaligned,
            Some(_) => c.mode = CheckpointMode::Aligned,
            None => {}
        }
    }
    if let Some(n) = m.get("aligned_timeout") {
        if let Some(d) = duration(n, "checkpoint aligned_timeout", errs) {
            if c.mode == CheckpointMode::Unaligned {
                c.aligned_timeout = d;
            } else {
                errs.at(
                    n,
                    "checkpoint aligned_timeout applies to unaligned checkpoints only",
                    Some("add `mode: unaligned`: each checkpoint then starts aligned and switches to unaligned after this long".into()),
                );
            }
        }
    }
    if let Some(n) = m.get("tolerable_failures") {
        if let Some(t) = uint(n, "checkpoint tolerable_failures", errs) {
            c.tolerable_failures = u32::try_from(t).unwrap_or(u32::MAX);
        }
    }
    if let Some(n) = m.get("location") {
        if let Some(text) = string(n, "checkpoint location", errs) {
            if text.contains("://") {
                if !(text.starts_with("file://") || text.starts_with("s3://")) {
                    errs.at(
                        n,
                        format!("checkpoint location `{text}`: only `file://` and `s3://` URLs are supported"),
                        Some("write a folder (`ckpt/`), a `file:///abs/path` URL or `s3://bucket/prefix`".into()),
                    );
                }
                c.location = text;
            } else {
                c.location = local_url(&resolve(base, &text));
            }
        }
    }
    m.finish(errs);
    c
}

/// A `file://` URL for a local folder (made absolute: the URL must not depend on the
/// working directory).
fn local_url(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", abs.display())
}

fn tuning(node: &Node, errs: &mut Errors) -> TuningSpec {
    let mut t = TuningSpec::default();
    let Some(mut m) = MapReader::new(node, "tuning", errs) else {
        return t;
    };
    if let Some(n) = m.get("batch_size") {
        match uint(n, "tuning batch_size", errs) {
            Some(0) => errs.at(n, "tuning batch_size must be at least 1", None),
            Some(b) => t.batch_size = b as usize,
            None => {}
        }
    }
    if let Some(n) = m.get("channel_capacity") {
        match uint(n, "tuning channel_capacity", errs) {
            Some(0) => errs.at(n, "tuning channel_capacity must be at least 1", None),
            Some(c) => t.channel_capacity = c as usize,
            None => {}
        }
    }
    if let Some(n) = m.get("progress_interval") {
        if let Some(d) = duration(n, "tuning progress_interval", errs) {
            t.progress_interval = d;
        }
    }
    m.finish(errs);
    t
}
